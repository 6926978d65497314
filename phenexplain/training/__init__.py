"""Training of the conditional StyleGAN2: the loop (`loop`: phases, EMA, ADA, ticks, resume, DDP),
its losses (`loss`) and augmentation (`augment`), the data it draws (`data`), what it reports
(`callbacks`), what it does on NaN/inf (`divergence`), checkpoints (`checkpoint`: safetensors +
JSON) and the entry point that ties them to a run folder (`run.run_training`)."""
