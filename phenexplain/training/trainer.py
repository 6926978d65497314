"""The Trainer: one global minibatch per `step()`, G EMA, adaptive augmentation, and its state.

One `Trainer.step()` shows one global minibatch: Gmain, Greg (every `g_reg_interval`), Dmain, Dreg
(every `d_reg_interval`), each optimised with Adam whose lr and betas are corrected for lazy
regularisation (lr * k/(k+1), beta ** (k/(k+1))); then G_ema follows G with a half-life of
`ema_kimg` (ramped up over the first images), and every `ada_interval` steps the augmentation
probability moves towards r_t = E[sign(D(real))] = `ada_target`.

All randomness comes from two explicit torch.Generators (data order, shared by all processes; and
this process's latents, noise and augmentation), saved in checkpoints, so a resumed run continues
exactly. With torch.distributed initialised (torchrun), the global batch is split across
processes and gradients are averaged before each optimiser step; rank 0 reports and saves.
`phenexplain.training.loop.train` drives it in ticks.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from pydantic import ValidationError

from phenexplain.config import TrainProfile
from phenexplain.display import composite, default_colours
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import atomic_write_bytes
from phenexplain.nets import Discriminator, Generator
from phenexplain.nets.kwargs import build_network
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import one_hot, z_batches
from phenexplain.training.augment import AugmentPipe
from phenexplain.training.checkpoint import (
    LATEST,
    CheckpointMeta,
    TrainingState,
    first_nonfinite,
    load_optimizer_state,
    load_tensors,
    optimizer_state,
    read_config,
    save_checkpoint,
)
from phenexplain.training.data import TrainingData
from phenexplain.training.loss import StyleGAN2Loss
from phenexplain.training.stats import StepStats

log = logging.getLogger(__name__)

RESIDENT_LIMIT_BYTES = 8 << 30  # crop sets up to this size live on the training device


@dataclass
class Progress:
    """Counters saved with every checkpoint."""

    cur_nimg: int = 0
    batch_idx: int = 0
    tick: int = 0
    ada_sign_sum: float = 0.0
    ada_sign_count: float = 0.0
    rollbacks: int = 0  # divergences rolled back over the whole run


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _derived_seed(*entropy: int) -> int:
    """A 64-bit seed mixed from `entropy` by numpy's SeedSequence."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])


def checkpoint_name(cur_nimg: int) -> str:
    """The folder name of the checkpoint taken after `cur_nimg` images."""
    return f"kimg{cur_nimg / 1000:08.3f}"


def network_kwargs(profile: TrainProfile, data: TrainingData) -> dict[str, dict]:
    """Constructor kwargs of G and D for `profile` on `data`."""
    synthesis = dict(
        channel_base=profile.channel_base,
        channel_max=profile.channel_max,
        num_fp16_res=profile.num_fp16_res,
        conv_clamp=profile.conv_clamp,
    )
    g = dict(
        z_dim=profile.z_dim,
        c_dim=data.num_conditions,
        w_dim=profile.w_dim,
        img_resolution=data.resolution,
        img_channels=data.num_channels,
        mapping_kwargs=dict(num_layers=profile.map_layers, lr_multiplier=profile.map_lr),
        synthesis_kwargs=synthesis,
    )
    d = dict(
        c_dim=data.num_conditions,
        img_resolution=data.resolution,
        img_channels=data.num_channels,
        **synthesis,
        cmap_dim=profile.cmap_dim,
        mapping_kwargs=dict(num_layers=profile.d_map_layers, lr_multiplier=profile.map_lr),
        epilogue_kwargs=dict(mbstd_group_size=profile.mbstd_group),
    )
    return {"G": g, "G_ema": g, "D": d}


class Trainer:
    """Owns the networks, optimisers, augmentation and randomness of one training run."""

    def __init__(
        self,
        data: TrainingData,
        profile: TrainProfile,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        conditions: list[str] | None = None,
    ) -> None:
        self.data, self.profile, self.seed = data, profile, seed
        self.device = torch.device(device)
        self.rank, self.world = _world()
        if profile.batch % self.world:
            raise PhenexplainError(
                f"batch {profile.batch} is not divisible by {self.world} processes"
            )
        self.batch_local = profile.batch // self.world
        if self.batch_local % min(profile.mbstd_group, self.batch_local):
            raise PhenexplainError(
                f"per-process batch {self.batch_local} is not a multiple of mbstd_group"
            )
        self.kwargs = network_kwargs(profile, data)
        index = data.crops.conditions
        self.conditions = conditions or sorted(index, key=lambda name: index[name])
        with torch.random.fork_rng(devices=[]):  # same initial weights in every process
            torch.manual_seed(seed)
            where = "the train profile's {}"
            self.G = build_network(Generator, self.kwargs["G"], where.format("G"))
            self.D = build_network(Discriminator, self.kwargs["D"], where.format("D"))
        for net in (self.G, self.D):
            net.train().requires_grad_(False).to(self.device)
        self.channels_last = self.device.type == "cpu"  # oneDNN convolutions: ~1.2x on CPU
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
            self.D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
        self.G_ema = copy.deepcopy(self.G).eval()
        if self.device.type == "cuda":  # process-wide, as the reference sets them
            torch.backends.cuda.matmul.allow_tf32 = profile.tf32
            torch.backends.cudnn.allow_tf32 = profile.tf32
        self.sync_free = profile.sync_free if profile.sync_free is not None else (
            self.device.type == "cuda"
        )  # fmt: skip
        self.augment_pipe = None
        if profile.augment:
            self.augment_pipe = AugmentPipe(sync_free=self.sync_free).to(self.device)
        # the streams live on the training device: indices, latents, noise and augmentation
        # parameters are drawn where they are used (their states are saved in checkpoints)
        self.data_gen = torch.Generator(self.device).manual_seed(seed)
        self.gen = torch.Generator(self.device).manual_seed(seed * 1000 + 1 + self.rank)
        if data.resident_bytes() <= RESIDENT_LIMIT_BYTES:
            data.to(self.device)
        else:
            log.info("the crop set (%d bytes) is batched from the host", data.resident_bytes())
        self.stats = StepStats(self.device)
        self._ada_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss = StyleGAN2Loss(
            self.G,
            self.D,
            self.augment_pipe,
            self.gen,
            r1_gamma=profile.r1_gamma,
            style_mixing_prob=profile.style_mixing,
            pl_weight=profile.pl_weight,
            force_fp32=self.device.type != "cuda",
            device=self.device,
        )
        self.phases = []
        for name, module, lr, interval in (
            ("G", self.G, profile.glr, profile.g_reg_interval),
            ("D", self.D, profile.dlr, profile.d_reg_interval),
        ):
            ratio = interval / (interval + 1)
            opt = torch.optim.Adam(
                module.parameters(), lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8
            )
            self.phases += [(f"{name}main", module, opt, 1), (f"{name}reg", module, opt, interval)]
        self.opts = {"G": self.phases[0][2], "D": self.phases[2][2]}
        self.progress = Progress()
        self.crop_set_id = data.crops.content_id

    # ---------------------------------------------------------------- one minibatch
    def _allreduce_grads(self, module: torch.nn.Module) -> None:
        if self.world == 1:
            return
        for p in module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world

    def step(self) -> dict[str, torch.Tensor | float]:
        """Show one global minibatch to all phases; returns the numbers of this step (0-d
        tensors on the device, read by the loop once per tick through `self.stats`)."""
        prof, prog = self.profile, self.progress
        indices = torch.randint(
            len(self.data), (prof.batch,), generator=self.data_gen, device=self.device
        )
        local = indices[self.rank * self.batch_local : (self.rank + 1) * self.batch_local]
        real_img, real_c = (t.to(self.device) for t in self.data.batch(local))
        if self.channels_last:
            real_img = real_img.contiguous(memory_format=torch.channels_last)
        stats: dict[str, torch.Tensor | float] = {}
        for name, module, opt, interval in self.phases:
            if prog.batch_idx % interval:
                continue
            gen_z = torch.randn(
                [self.batch_local, self.G.z_dim], generator=self.gen, device=self.device
            )
            gen_c = self.data.sample_conditions(self.batch_local, self.gen).to(self.device)
            if (name == "Greg" and prof.pl_weight == 0) or (name == "Dreg" and prof.r1_gamma == 0):
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            stats.update(
                self.loss.accumulate_gradients(name, real_img, real_c, gen_z, gen_c, gain=interval)
            )
            module.requires_grad_(False)
            self._allreduce_grads(module)
            for p in module.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
        self._update_ema()
        self._update_ada(stats)
        prog.cur_nimg += prof.batch
        prog.batch_idx += 1
        return stats

    def _update_ema(self) -> None:
        prof = self.profile
        ema_nimg = prof.ema_kimg * 1000
        if prof.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.progress.cur_nimg * prof.ema_rampup)
        beta = 0.5 ** (prof.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)

    def _update_ada(self, stats: dict[str, torch.Tensor | float]) -> None:
        """Move p towards the target sign rate every `ada_interval` steps, on the device: the
        sign sum stays a device tensor (the count is known on the host: images seen)."""
        prog, prof = self.progress, self.profile
        if self.augment_pipe is None or "Loss/signs/real_sum" not in stats:
            return
        signs = torch.as_tensor(stats["Loss/signs/real_sum"], device=self.device)
        signs = signs.to(torch.float64).reshape(1)  # NCCL reduces only tensors on the GPU
        if self.world > 1:
            dist.all_reduce(signs)
        self._ada_sum += signs[0]
        prog.ada_sign_count += float(stats["Loss/signs/real_count"]) * self.world
        if (prog.batch_idx + 1) % prof.ada_interval == 0 and prog.ada_sign_count > 0:
            rt = self._ada_sum / prog.ada_sign_count
            adjust = (
                torch.sign(rt - prof.ada_target)
                * (prof.batch * prof.ada_interval)
                / (prof.ada_kimg * 1000)
            )
            self.augment_pipe.p.copy_((self.augment_pipe.p + adjust).clamp(min=0))
            self._ada_sum.zero_()
            prog.ada_sign_count = 0.0

    def check_in_sync(self) -> None:
        """With several processes, check that all hold the same weights (a DDP invariant)."""
        if self.world == 1:
            return
        with torch.no_grad():
            total = torch.stack(
                [p.double().sum() for p in [*self.G.parameters(), *self.D.parameters()]]
            ).sum()
        gathered = [torch.zeros_like(total) for _ in range(self.world)]
        dist.all_gather(gathered, total)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError(
                f"processes diverged: weight checksums {[float(g) for g in gathered]}"
            )

    def first_nonfinite(self) -> str | None:
        """The first parameter or buffer of G, G_ema, D (or pl_mean, the augmentation
        probability) holding a NaN or inf, as ``G.synthesis.b8.conv0.weight``; None if all are
        finite. One reduction per tensor and one device synchronisation."""
        named = [
            (f"{name}.{key}", t)
            for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D))
            for key, t in itertools.chain(module.named_parameters(), module.named_buffers())
        ]
        named.append(("pl_mean", self.loss.pl_mean))
        if self.augment_pipe is not None:
            named.append(("augment_p", self.augment_pipe.p))
        return first_nonfinite(named)

    def reseed(self, salt: int) -> None:
        """Move both generators to fresh streams derived from (seed, `salt`, cur_nimg), so that a
        rollback does not replay the minibatches, latents and noise that diverged. The data-order
        stream stays the same in every process; the latent stream differs per process."""
        base = (self.seed, salt, self.progress.cur_nimg)
        self.data_gen.manual_seed(_derived_seed(*base, 0))
        self.gen.manual_seed(_derived_seed(*base, 1 + self.rank))

    # ---------------------------------------------------------------- samples and checkpoints
    def sample_grid(self, seeds_per_condition: int) -> np.ndarray:
        """uint8 [rows * R, cols * R, 3]: a row per condition, fixed z (seeded), constant noise."""
        n = seeds_per_condition
        z = next(z_batches(n, self.G.z_dim, self.seed + 12345, n, self.device))
        rows = []
        with torch.no_grad():
            for k in range(self.data.num_conditions):
                c = one_hot(k, self.data.num_conditions, n, self.device)
                img = self.G_ema(z, c, noise_mode="const", force_fp32=True)
                rows.append(torch.cat(list(img), dim=2))  # [C, R, cols * R]
        grid = to_uint8(torch.cat(rows, dim=1).cpu()).numpy()
        return composite(grid, default_colours(self.data.crops.channels))

    def state(self) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
        """(tensors, metadata) that resume this run exactly."""
        self.progress.ada_sign_sum = float(self._ada_sum)
        tensors: dict[str, torch.Tensor] = {
            "rng.data": self.data_gen.get_state(),
            "rng.gen": self.gen.get_state(),
            "pl_mean": self.loss.pl_mean.detach().cpu().clone(),
        }
        if self.augment_pipe is not None:
            tensors["augment_p"] = self.augment_pipe.p.detach().cpu().clone()
        opt_tensors, groups = optimizer_state(self.opts)
        tensors.update(opt_tensors)
        meta = CheckpointMeta(
            kwargs=json.loads(json.dumps(self.kwargs)),
            conditions=list(self.conditions),
            channels=list(self.data.crops.channels),
            resolution=self.data.resolution,
            pixel_size_um=self.data.crops.pixel_size_um(self.data.resolution),
            training=TrainingState(
                progress=asdict(self.progress),
                kimg=self.progress.cur_nimg / 1000,
                profile=self.profile.model_dump(),
                seed=self.seed,
                crop_set_id=self.crop_set_id,
                optimizer_param_groups=groups,
                augment_p=float(self.augment_pipe.p) if self.augment_pipe is not None else None,
            ),
        )
        return tensors, meta

    def save(self, out: Path) -> Path:
        tensors, meta = self.state()
        modules = {"G": self.G, "G_ema": self.G_ema, "D": self.D}
        return save_checkpoint(
            out, modules, meta, extra=tensors, overwrite=True, require_finite=True
        )

    def save_snapshot(self, run_dir: Path) -> Path:
        """Save ``RUN/checkpoints/kimgNNNNN.NNN`` and then point ``checkpoints/latest`` at it
        (each step is a rename, so a kill at any moment leaves `latest` naming a whole one)."""
        name = checkpoint_name(self.progress.cur_nimg)
        path = self.save(Path(run_dir) / "checkpoints" / name)
        atomic_write_bytes(Path(run_dir) / "checkpoints" / LATEST, name.encode())
        return path

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by `save`; refuses other data or another configuration."""
        meta = read_config(path)
        training = meta.training
        if training.crop_set_id != self.crop_set_id:
            raise PhenexplainError(
                f"{path} was trained on another crop set (id {training.crop_set_id}, this one "
                f"{self.crop_set_id}); resume with the same crop set or start a new run"
            )
        saved_profile = None  # checkpoints from before a profile setting existed get its default
        with contextlib.suppress(ValidationError, TypeError):
            saved_profile = TrainProfile.model_validate(training.profile).model_dump()
        if (
            json.loads(json.dumps(self.kwargs)) != meta.kwargs
            or saved_profile != self.profile.model_dump()
        ):
            raise PhenexplainError(
                f"{path} was trained with another network or profile configuration"
            )
        for name, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            module.load_state_dict(load_tensors(path, name), strict=True)
        extra = load_tensors(path, "extra")
        self.data_gen.set_state(extra["rng.data"])
        self.gen.set_state(extra["rng.gen"])
        self.loss.pl_mean.copy_(extra["pl_mean"])
        if self.augment_pipe is not None:
            self.augment_pipe.p.copy_(extra["augment_p"])
        if training.progress is None or training.optimizer_param_groups is None:
            raise PhenexplainError(
                f"{path} holds no training state (a converted or serving checkpoint); resume "
                "from a checkpoint that `phenexplain train` wrote"
            )
        load_optimizer_state(self.opts, extra, training.optimizer_param_groups)
        self.progress = Progress(**training.progress)  # type: ignore[arg-type]  # as `state` saved it
        self._ada_sum.fill_(self.progress.ada_sign_sum)
        self.stats.clear()

    def roll_back(self, checkpoint: Path) -> None:
        """After a divergence: reload `checkpoint` (the last good one), count the rollback in
        the run's progress and move the generators to fresh streams (`reseed`)."""
        rollbacks = self.progress.rollbacks + 1
        self.load(checkpoint)
        self.progress.rollbacks = rollbacks
        self.reseed(rollbacks)
