"""Training of the conditional StyleGAN2: the trainer (`trainer`: phases, EMA, ADA, its state and
DDP gradients), the loop that drives it (`loop`: ticks, snapshots, divergence), process-group
set-up under torchrun (`distributed`), its losses (`loss`) and augmentation (`augment`), the data
it draws (`data`), what it reports (`callbacks`), what it does on NaN/inf (`divergence`),
checkpoints (`checkpoint`: safetensors + JSON) and the entry point that ties them to a run folder
(`run.run_training`)."""
