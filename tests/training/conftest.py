"""A tiny crop set and a tiny training profile shared by the training tests."""

from __future__ import annotations

from phenexplain.config import TrainProfile

TINY = TrainProfile(
    resolution=16, batch=8, z_dim=16, w_dim=16, map_layers=2, channel_base=256, channel_max=32,
    mbstd_group=4, r1_gamma=0.1, pl_weight=2.0, style_mixing=0.5, ema_kimg=0.05, augment=True,
    ada_kimg=1.0, num_fp16_res=0, conv_clamp=None,
)  # fmt: skip
