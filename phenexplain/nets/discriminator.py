"""The conditional StyleGAN2 discriminator: residual blocks, minibatch standard deviation and
projection conditioning.

D(x, c): x [N, img_channels, R, R] passes through residual blocks halving the resolution down to
4x4; the epilogue appends the minibatch standard deviation, then a 3x3 convolution and two fully
connected layers give a `cmap_dim` vector, whose dot product with the mapped condition (a mapping
network of its own, without z) divided by sqrt(cmap_dim) is the score [N, 1].
"""

from __future__ import annotations

import functools
import math

import torch

from phenexplain.nets.generator import channels_per_resolution
from phenexplain.nets.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from phenexplain.nets.ops import make_filter


class DiscriminatorBlock(torch.nn.Module):
    """fromRGB (first block only), conv 3x3, conv 3x3 down, plus a 1x1 down skip (resnet)."""

    resample_filter: torch.Tensor  # a buffer

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        activation: str = "lrelu",
        resample_filter: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        if in_channels not in (0, tmp_channels):
            raise ValueError("in_channels must be 0 (first block) or tmp_channels")
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.use_fp16 = first_layer_idx, use_fp16
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:
            idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        conv = functools.partial(Conv2dLayer, activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.fromrgb = conv(img_channels, tmp_channels, kernel_size=1, trainable=trainable())
        self.conv0 = conv(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable())
        self.conv1 = conv(
            tmp_channels,
            out_channels,
            kernel_size=3,
            down=2,
            trainable=trainable(),
            resample_filter=resample_filter,
        )
        self.skip = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            down=2,
            trainable=trainable(),
            resample_filter=resample_filter,
        )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor, force_fp32: bool = False
    ) -> torch.Tensor:
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype=dtype))
        else:
            assert x is not None, "only the first block starts without features"
            x = x.to(dtype=dtype)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(torch.nn.Module):
    """Appends the standard deviation over groups of `group_size` samples as extra feature maps."""

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise ValueError(
                f"batch size {n} is not a multiple of the minibatch-std group size {g}"
            )
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n, F, c, H, W]
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch std, conv, fc, output projected on the condition map."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
            if mbstd_num_channels > 0
            else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(
            in_channels * resolution**2, in_channels, activation=activation
        )
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.to(dtype=torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            assert cmap is not None, "a conditional discriminator needs cmap"
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """Conditional residual discriminator: (images [N, C, R, R], c [N, c_dim]) -> scores [N, 1]."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = channels_per_resolution([*self.block_resolutions, 4], channel_base, channel_max)
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        cmap_dim = channels[4] if cmap_dim is None else cmap_dim
        cmap_dim = 0 if c_dim == 0 else cmap_dim
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                img_channels=img_channels,
                first_layer_idx=layer_idx,
                use_fp16=(res >= fp16_resolution),
                conv_clamp=conv_clamp,
                **(block_kwargs or {}),
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0,
                c_dim=c_dim,
                w_dim=cmap_dim,
                num_ws=None,
                w_avg_beta=None,
                **(mapping_kwargs or {}),
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4],
            cmap_dim=cmap_dim,
            resolution=4,
            img_channels=img_channels,
            conv_clamp=conv_clamp,
            **(epilogue_kwargs or {}),
        )

    def forward(self, img: torch.Tensor, c: torch.Tensor, **block_kwargs) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1:] != (
            self.img_channels,
            self.img_resolution,
            self.img_resolution,
        ):
            raise ValueError(
                f"images must be [N, {self.img_channels}, {self.img_resolution}, "
                f"{self.img_resolution}], "
                f"got {list(img.shape)}"
            )
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)
