"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 and path-length regularisation.

Phases, as in the reference: ``Gmain`` (G fools D), ``Greg`` (path-length penalty on a half
batch), ``Dmain`` (D separates real from fake), ``Dreg`` (R1 penalty on reals). Lazy phases are
run every `interval` minibatches with their loss multiplied by the interval (`gain`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from phenexplain.nets import Discriminator, Generator
from phenexplain.training.augment import AugmentPipe


class StyleGAN2Loss:
    """Accumulates the gradients of one phase on one minibatch; returns numbers to report."""

    def __init__(
        self,
        G: Generator,
        D: Discriminator,
        augment_pipe: AugmentPipe | None,
        generator: torch.Generator,
        r1_gamma: float = 10.0,
        style_mixing_prob: float = 0.9,
        pl_weight: float = 2.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        force_fp32: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.G, self.D, self.augment_pipe, self.generator = G, D, augment_pipe, generator
        self.r1_gamma, self.style_mixing_prob = r1_gamma, style_mixing_prob
        self.pl_weight, self.pl_batch_shrink, self.pl_decay = pl_weight, pl_batch_shrink, pl_decay
        self.force_fp32 = force_fp32
        self.pl_mean = torch.zeros([], device=device)

    def _randn_like(self, x: torch.Tensor) -> torch.Tensor:
        g = self.generator
        return torch.randn(x.shape, generator=g, device=g.device).to(x)

    def run_G(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G(z, c) with style mixing decided on the device, as the reference does: the mixing
        draw, the cutoff and the second z are drawn every time and the second mapping always
        runs, so the step never asks the host whether to mix."""
        ws = self.G.mapping(z, c)
        if self.style_mixing_prob > 0 and ws.shape[1] > 1:
            g = self.generator
            mix = torch.rand([], generator=g, device=g.device) < self.style_mixing_prob
            cutoff = torch.randint(1, ws.shape[1], [], generator=g, device=g.device)
            mixed = self.G.mapping(self._randn_like(z), c, update_w_avg=False)
            layers = torch.arange(ws.shape[1], device=ws.device)
            take = (layers >= cutoff.to(ws.device)) & mix.to(ws.device)
            ws = torch.where(take[None, :, None], mixed, ws)
        img = self.G.synthesis(ws, force_fp32=self.force_fp32, generator=self.generator)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.augment_pipe is not None:
            img = self.augment_pipe(img, generator=self.generator)
        return self.D(img, c, force_fp32=self.force_fp32)

    def accumulate_gradients(
        self,
        phase: str,
        real_img: torch.Tensor,
        real_c: torch.Tensor,
        gen_z: torch.Tensor,
        gen_c: torch.Tensor,
        gain: float,
    ) -> dict[str, torch.Tensor | float]:
        """Backpropagate one phase; returns its numbers as detached 0-d tensors (no transfer
        to the host) and the count of real logits as a float."""
        stats: dict[str, torch.Tensor | float] = {}
        if phase == "Gmain":
            gen_img, _ = self.run_G(gen_z, gen_c)
            logits = self.run_D(gen_img, gen_c)
            loss = F.softplus(-logits)  # -log(sigmoid(D(G(z))))
            loss.mean().mul(gain).backward()
            stats["Loss/G/loss"] = loss.mean().detach()
        elif phase == "Greg":
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])
            noise = self._randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
            (grads,) = torch.autograd.grad((gen_img * noise).sum(), gen_ws, create_graph=True)
            lengths = grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(lengths.mean().detach().to(self.pl_mean), self.pl_decay)
            self.pl_mean.copy_(pl_mean)
            penalty = (lengths - pl_mean.to(lengths)).square()
            (gen_img[:, 0, 0, 0] * 0 + penalty * self.pl_weight).mean().mul(gain).backward()
            stats["Loss/pl_penalty"] = penalty.mean().detach()
        elif phase == "Dmain":
            gen_img, _ = self.run_G(gen_z, gen_c)
            fake_logits = self.run_D(gen_img.detach(), gen_c)
            loss_fake = F.softplus(fake_logits)  # -log(1 - sigmoid(D(G(z))))
            loss_fake.mean().mul(gain).backward()
            real_logits = self.run_D(real_img, real_c)
            loss_real = F.softplus(-real_logits)  # -log(sigmoid(D(x)))
            loss_real.mean().mul(gain).backward()
            stats["Loss/D/loss"] = (loss_fake.mean() + loss_real.mean()).detach()
            stats["Loss/scores/real"] = real_logits.mean().detach()
            stats["Loss/scores/fake"] = fake_logits.mean().detach()
            stats["Loss/signs/real_sum"] = real_logits.sign().sum().detach()
            stats["Loss/signs/real_count"] = float(real_logits.numel())
        elif phase == "Dreg":
            real = real_img.detach().requires_grad_(True)
            logits = self.run_D(real, real_c)
            (grads,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
            penalty = grads.square().sum([1, 2, 3])
            (logits * 0 + penalty * (self.r1_gamma / 2)).mean().mul(gain).backward()
            stats["Loss/r1_penalty"] = penalty.mean().detach()
        else:
            raise ValueError(f"unknown phase {phase!r}")
        return stats
