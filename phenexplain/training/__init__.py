"""Training of the conditional StyleGAN2: checkpoints (safetensors + JSON) and, to come, losses,
augmentation, EMA, the loop and DDP."""
