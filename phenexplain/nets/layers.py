"""Equalised learning-rate layers and the mapping network.

Notation (as in the paper and the reference implementation): z is the input latent, c the one-hot
condition, w the intermediate latent. Weights are stored at unit variance and scaled at run time
(equalised learning rate); `lr_multiplier` slows a layer down (0.01 for the mapping network).
Attribute names follow NVlabs stylegan2-ada-pytorch, so state dicts map one to one.
"""

from __future__ import annotations

import math

import torch

from phenexplain.nets.ops import (
    ACTIVATION_GAIN,
    bias_act,
    conv2d_resample,
    make_filter,
    normalize_2nd_moment,
)


class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalised learning rate: y = act(x W^T * gain + b * lr_multiplier)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = (
            torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        )
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b: torch.Tensor | None = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/down-sampling and output clamp."""

    resample_filter: torch.Tensor  # a buffer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.up, self.down = up, down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATION_GAIN[activation]
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", b)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(torch.nn.Module):
    """z [N, z_dim] and c [N, c_dim] -> w [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

    The condition is embedded by a linear layer; z and the embedding are each normalised to unit
    second moment and concatenated, then `num_layers` leaky-ReLU layers map them to W. `w_avg`
    tracks the mean of W during training (decay `w_avg_beta`) and is the centre of truncation.
    """

    w_avg: torch.Tensor  # a buffer (when w_avg_beta is set)

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws, self.num_layers, self.w_avg_beta = num_ws, num_layers, w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def embed_condition(self, c: torch.Tensor) -> torch.Tensor:
        """The raw label embedding E(c) [N, embed_features], before its normalisation (eq. 3
        interpolates it, as the authors' code does; the mapping normalises what it is given)."""
        return self.embed(c.to(torch.float32))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = True,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Map (z, c) to W; `embedding` replaces the raw E(c) (`embed_condition`, for
        interpolating between conditions) and is normalised like it."""
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(
                    f"z must be [N, {self.z_dim}], got {None if z is None else list(z.shape)}"
                )
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if embedding is None:
                if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                    raise ValueError(
                        f"c must be [N, {self.c_dim}], got {None if c is None else list(c.shape)}"
                    )
                embedding = self.embed_condition(c)
            y = normalize_2nd_moment(embedding)
            x = torch.cat([x, y], dim=1) if x is not None else y
        if x is None:
            raise ValueError("a mapping network needs z_dim > 0 or c_dim > 0")
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.w_avg_beta is not None and self.training and update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x
