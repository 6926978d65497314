"""The GPU hot loop without a GPU: device-side step statistics, the deferred divergence flag, the
resident crop set, and a sync-free step that never turns a tensor into a Python number."""

from __future__ import annotations

import contextlib
import math
import sys

import pytest
import torch

from phenexplain.data.cropset import CropSet
from phenexplain.training.data import TrainingData
from phenexplain.training.stats import NonFinite, StepStats
from phenexplain.training.trainer import Trainer
from tests.training.conftest import TINY


def test_step_stats_average_on_the_device_and_remember_the_first_non_finite_step():
    stats = StepStats(torch.device("cpu"))
    stats.add({"a": torch.tensor(1.0), "b": 2.0}, nimg=8)
    stats.add({"a": torch.tensor(3.0)}, nimg=16)
    assert stats.read() == ({"a": 2.0, "b": 2.0}, None)
    stats.add({"b": math.inf, "a": torch.tensor(math.nan)}, nimg=24)
    stats.add({"a": torch.tensor(math.nan)}, nimg=32)  # later ones do not replace the first
    means, bad = stats.read()
    assert bad == NonFinite("b", 24) and math.isnan(means["a"])
    stats.clear()
    assert stats.read() == ({}, None)


def test_the_resident_crop_set_gives_the_host_batches(tiny_crops):
    host = TrainingData(CropSet(tiny_crops), resolution=16, xflip=True)
    resident = TrainingData(CropSet(tiny_crops), resolution=16, xflip=True).to("cpu")
    indices = torch.tensor([0, 3, len(host) - 1, len(host) // 2, 1])  # mirrors included
    for a, b in zip(host.batch(indices), resident.batch(indices), strict=True):
        assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(host.sample_conditions(7, g1), resident.sample_conditions(7, g2))


@contextlib.contextmanager
def _no_host_reads():
    """Make every tensor-to-Python conversion raise: what a GPU would wait for."""
    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name):
        def method(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("torch.optim"):  # Adam's step count: a CPU tensor on GPUs too
                return saved[name](self, *args, **kwargs)
            raise AssertionError(f"the step read a tensor on the host (Tensor.{name})")

        return method

    try:
        for n in names:
            setattr(torch.Tensor, n, refuse(n))
        yield
    finally:
        for n, m in saved.items():
            setattr(torch.Tensor, n, m)


@pytest.mark.parametrize("augment", [True, False])
def test_a_sync_free_step_never_reads_a_tensor_on_the_host(tiny_crops, augment):
    torch.set_num_threads(1)
    profile = TINY.model_copy(update={"sync_free": True, "augment": augment, "ada_interval": 1})
    tr = Trainer(TrainingData(CropSet(tiny_crops), resolution=16, xflip=True), profile, seed=3)
    if tr.augment_pipe is not None:
        tr.augment_pipe.p.fill_(0.5)  # every augmentation path runs
    for _ in range(17):  # every phase, lazy regularisation and the ADA update included
        with _no_host_reads():
            stats = tr.step()
            tr.stats.add(stats, tr.progress.cur_nimg)
    means, bad = tr.stats.read()
    assert bad is None and all(math.isfinite(v) for v in means.values())
    assert {"Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty"} <= set(means)


def test_the_host_step_does_read_tensors(tiny_crops):
    """The refusal above is not vacuous: the CPU default reads p on the host."""
    torch.set_num_threads(1)
    tr = Trainer(TrainingData(CropSet(tiny_crops), resolution=16, xflip=True), TINY, seed=3)
    with pytest.raises(AssertionError, match="read a tensor on the host"), _no_host_reads():
        tr.step()
