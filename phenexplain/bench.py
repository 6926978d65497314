"""Benchmarks behind `phenexplain bench ...`; each yields dicts of name, value, unit, config."""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from phenexplain.config import IngestParams, SynthParams
from phenexplain.data.synthetic import generate_plates, get_assay
from phenexplain.data.synthetic.plate import simd_level


def figure(name: str, value: float, unit: str, config: dict) -> dict:
    """One benchmark figure, as `make bench` appends it to bench/results.jsonl."""
    return {"name": name, "value": value, "unit": unit, "config": config}


def machine_info() -> dict:
    """The machine a figure ran on: cores, architecture and CPU model, the SIMD level numpy and
    torch use (figures from an AVX2 and an AVX-512 machine differ by 2-3x), Python."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "torch_cpu": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "numpy_simd": simd_level(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_synth(
    fields: int = 14, workers: list[int] | None = None, seed: int = 0
) -> Iterator[dict]:
    """Fields per second of the 3-channel `dose` assay at 1024x1280, for each worker count."""
    conditions = len(get_assay("dose").conditions)
    for n in workers or [1, 2]:
        spec = SynthParams(
            assay="dose",
            seed=seed,
            plates=1,
            wells_per_condition=1,
            sites_per_well=max(1, math.ceil(fields / conditions)),
            height=1024,
            width=1280,
            cells_per_mpx=50.0,
            workers=n,
        )
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = generate_plates(spec, Path(tmp) / "plate")
            elapsed = time.perf_counter() - start
        config = {
            "assay": "dose",
            "field": "1024x1280x3 uint16",
            "fields": summary["fields"],
            "workers": n,
            "seconds": round(elapsed, 2),
            **machine_info(),
        }
        yield figure(
            "synth_fields_per_s", round(summary["fields"] / elapsed, 3), "fields/s", config
        )


def bench_ingest(
    fields: int = 28, workers: list[int] | None = None, seed: int = 0
) -> Iterator[dict]:
    """Fields per second through read + QC + nuclei + crops, on 1024x1280 3-channel 16-bit fields.

    The plate (the `dose` assay) is generated first and not timed; the great-expectations checks
    are not part of the figure (they run once per ingest, not per field).
    """
    from phenexplain.data.ingest import ingest

    conditions = len(get_assay("dose").conditions)
    spec = SynthParams(
        assay="dose",
        seed=seed,
        wells_per_condition=1,
        sites_per_well=max(1, math.ceil(fields / conditions)),
        height=1024,
        width=1280,
        workers=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        plate = Path(tmp) / "plate"
        n_fields = generate_plates(spec, plate)["fields"]
        for n in workers or [1, 2]:
            params = IngestParams(
                layout="manifest",
                channels=["DNA", "Tubulin", "Actin"],
                dna_channel="DNA",
                min_images_per_condition=1,
                workers=n,
            )
            start = time.perf_counter()
            summary = ingest(plate, Path(tmp) / f"crops-{n}", params)
            elapsed = time.perf_counter() - start
            config = {
                "field": "1024x1280x3 uint16",
                "fields": n_fields,
                "crops": summary.crops,
                "crop_size": params.crop_size,
                "workers": n,
                "seconds": round(elapsed, 2),
                **machine_info(),
            }
            yield figure("ingest_fields_per_s", round(n_fields / elapsed, 3), "fields/s", config)


def _random_cropset(
    root: Path, resolution: int, channels: int, conditions: int, n: int = 64
) -> Path:
    """A crop set of random uint8 images (training speed does not depend on their content)."""
    import json

    import numpy as np
    import pandas as pd

    from phenexplain.data import cropset as cs

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (n, channels, resolution, resolution), dtype=np.uint8)
    root.mkdir(parents=True)
    record = cs.write_shard(root, "bench", crops)
    names = [f"c{k}" for k in range(conditions)]
    rows = [
        {"crop_id": str(i), "shard": "bench", "index": i, "condition": names[i % conditions],
         "checksum": cs.crop_checksum(crops[i])}
        for i in range(n)
    ]  # fmt: skip
    cs.write_table(pd.DataFrame(rows), root / cs.MANIFEST)
    (root / cs.CONDITIONS).write_text(json.dumps(cs.condition_index(names)))
    info = {"format_version": cs.FORMAT_VERSION, "channels": [f"ch{i}" for i in range(channels)],
            "shards": {"bench": record.model_dump()}}  # fmt: skip
    (root / cs.INFO).write_text(json.dumps({**info, "crop_size": resolution}))
    return root


def _peak_memory_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
    }


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def conv_ceiling_gflop_s(device: str = "cpu", repeats: int = 5) -> float:
    """GFLOP/s of a plain 3x3 convolution, 128 -> 128 channels at 32x32, batch 16, forward and
    backward (input and weight gradients), median of `repeats`: what this machine's convolutions
    can do, to put the networks' effective GFLOP/s beside."""
    import torch

    layout = torch.channels_last if device == "cpu" else torch.contiguous_format
    x = torch.randn(16, 128, 32, 32, device=device).contiguous(memory_format=layout)
    w = torch.randn(128, 128, 3, 3, device=device).contiguous(memory_format=layout)
    x.requires_grad_(True)
    w.requires_grad_(True)
    flop = 3 * 2 * 16 * 128 * 128 * 9 * 32 * 32  # forward + the two backward convolutions
    times = []
    for i in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        y = torch.nn.functional.conv2d(x, w, padding=1)
        y.backward(torch.ones_like(y))
        _sync(device)
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return flop / statistics.median(times) / 1e9


def _flop(fn) -> float:
    """Floating-point operations of `fn()`: convolutions and matmuls, forward and backward, with
    torch's own formulas (`torch.utils.flop_counter`), counted by a dispatch mode that works
    under `torch.autograd.grad` too (FlopCounterMode's module hooks do not, as R1 needs)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count() as counter:
        fn()
    return float(counter.total)


def bench_train(
    resolution: int = 32,
    channel_base: int = 4096,
    channel_max: int = 128,
    batch: int = 16,
    map_layers: int = 2,
    conditions: int = 4,
    channels: int = 3,
    z_dim: int = 512,
    steps: int = 32,
    repeats: int = 3,
    threads: int = 2,
    device: str = "cpu",
    fp16: bool = False,
) -> Iterator[dict]:
    """Training images/s with the reference's schedule (Gmain, Greg/4, Dmain, Dreg/16), no
    augmentation, on random data, median of `repeats` runs of `steps` steps (whole lazy
    regularisation cycles); the same config as shared/bench/anchor_sg2ada.py. Also the
    effective GFLOP/s (convolution and matmul FLOPs of a cycle, counted, times img/s) beside the
    plain-convolution ceiling measured in the same run. `fp16`: the reference's GPU default (fp16
    in the 4 highest resolutions, conv_clamp 256)."""
    import torch

    from phenexplain.config import TrainProfile
    from phenexplain.data.cropset import CropSet
    from phenexplain.training.data import TrainingData
    from phenexplain.training.trainer import Trainer

    torch.set_num_threads(threads)
    profile = TrainProfile(
        batch=batch, z_dim=z_dim, w_dim=z_dim, map_layers=map_layers, channel_base=channel_base,
        channel_max=channel_max, r1_gamma=0.0002 * resolution**2 / batch, augment=False,
        xflip=False, num_fp16_res=4 if fp16 else 0, conv_clamp=256 if fp16 else None,
        mbstd_group=min(batch, 4),
    )  # fmt: skip
    config = {
        "resolution": resolution, "channel_base": channel_base, "channel_max": channel_max,
        "batch": batch, "map_layers": map_layers, "conditions": conditions, "channels": channels,
        "z_dim": z_dim, "steps": steps, "threads": threads, "device": device,
        "precision": "fp16 (4 highest resolutions)" if fp16 else "fp32", **machine_info(),
    }  # fmt: skip
    cycle = max(profile.g_reg_interval, profile.d_reg_interval)
    with tempfile.TemporaryDirectory() as tmp:
        crops = CropSet(_random_cropset(Path(tmp) / "crops", resolution, channels, conditions))
        trainer = Trainer(TrainingData(crops), profile, seed=0, device=device)
        for _ in range(2):
            trainer.step()
        trainer.progress.batch_idx = 0

        def run(n: int) -> None:
            for _ in range(n):
                trainer.step()

        flop_per_image = _flop(lambda: run(cycle)) / (cycle * batch)
        rates = []
        for _ in range(repeats):
            trainer.progress.batch_idx = 0  # time whole lazy-regularisation cycles
            _sync(device)
            start = time.perf_counter()
            run(steps)
            _sync(device)
            rates.append(steps * batch / (time.perf_counter() - start))
    ceiling = conv_ceiling_gflop_s(device)
    spread = {**config, "img_per_s": _median_spread(rates)}
    rate = statistics.median(rates)
    yield figure("train_img_per_s", round(rate, 3), "img/s", spread)
    # from the figures as written (GFLOP per image and img/s rounded), so they agree
    effective = round(flop_per_image / 1e9, 4) * round(rate, 3)
    yield figure("train_effective_gflop_s", round(effective, 2), "GFLOP/s",
                 {**config, "gflop_per_image": round(flop_per_image / 1e9, 4)})  # fmt: skip
    conv = {"conv": "3x3 128->128 32x32 batch 16, fwd+bwd", "device": device, **machine_info()}
    yield figure("conv_ceiling_gflop_s", round(ceiling, 2), "GFLOP/s", conv)
    yield figure("train_fraction_of_conv_ceiling", round(effective / ceiling, 3), "",
                 config)  # fmt: skip
    if device == "cpu":
        yield figure("train_peak_rss", round(_peak_memory_mb(), 1), "MiB", config)


def bench_generate(
    resolution: int = 32,
    channel_base: int = 4096,
    channel_max: int = 128,
    batch: int = 64,
    map_layers: int = 2,
    conditions: int = 4,
    channels: int = 3,
    z_dim: int = 512,
    batches: int = 4,
    repeats: int = 3,
    map_n: int = 100_000,
    threads: int = 2,
    device: str = "cpu",
    compile: bool = False,
) -> Iterator[dict]:
    """G_ema inference images/s (constant noise; median of `repeats` runs of `batches` batches),
    its effective GFLOP/s, and the time to map `map_n` latents. `compile`: G through
    `torch.compile` (inductor), timed after its first call, with that call's seconds as a figure:
    the steady-state speed of a long generation job, which pays the compile time once."""
    import torch

    from phenexplain.nets import Generator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    G = Generator(
        z_dim, conditions, z_dim, resolution, channels, {"num_layers": map_layers},
        {"channel_base": channel_base, "channel_max": channel_max},
    ).eval().to(device)  # fmt: skip
    if device == "cpu":  # as `load_network` serves it
        G = G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
    config = {
        "resolution": resolution, "channel_base": channel_base, "channel_max": channel_max,
        "batch": batch, "map_layers": map_layers, "conditions": conditions, "channels": channels,
        "z_dim": z_dim, "threads": threads, "device": device, "precision": "fp32",
        "compiled": compile, **machine_info(),
    }  # fmt: skip
    z = torch.randn(batch, z_dim, device=device)
    c = torch.nn.functional.one_hot(torch.arange(batch) % conditions, conditions).float()
    c = c.to(device)
    rates = []
    run = torch.compile(G) if compile else G
    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        run(z, c, noise_mode="const")
        _sync(device)
        first_call = time.perf_counter() - start
        flop_per_image = _flop(lambda: G(z, c, noise_mode="const")) / batch
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            for _ in range(batches):
                run(z, c, noise_mode="const")
            _sync(device)
            rates.append(batches * batch / (time.perf_counter() - start))
        zs = torch.randn(map_n, z_dim, device=device)
        cs = torch.nn.functional.one_hot(torch.arange(map_n) % conditions, conditions).float()
        cs = cs.to(device)
        _sync(device)
        start = time.perf_counter()
        for chunk in range(0, map_n, 10_000):
            G.mapping(zs[chunk : chunk + 10_000], cs[chunk : chunk + 10_000])
        _sync(device)
        mapping = time.perf_counter() - start
    rate = statistics.median(rates)
    yield figure("generate_img_per_s", round(rate, 3), "img/s",
                 {**config, "img_per_s": _median_spread(rates)})  # fmt: skip
    yield figure("generate_effective_gflop_s", round(flop_per_image * rate / 1e9, 2), "GFLOP/s",
                 {**config, "gflop_per_image": round(flop_per_image / 1e9, 4)})  # fmt: skip
    yield figure("mapping_seconds", round(mapping, 3), "s", {**config, "map_n": map_n})
    if compile:
        yield figure("generate_compile_seconds", round(first_call, 2), "s", config)
    if device == "cpu":
        yield figure("generate_peak_rss", round(_peak_memory_mb(), 1), "MiB", config)


def bench_explain(
    resolution: int = 64,
    rows: int = 5,
    targets: int = 3,
    steps: int = 16,
    conditions: int = 4,
    channels: int = 3,
    centroid_samples: int = 100_000,
    threads: int = 2,
) -> Iterator[dict]:
    """Traversal frames/s of a `rows` x (1 + `targets`) grid (5 x 4 by default) rendered to RGB
    frames, and the time of the centroids (eq. 4) of every condition for K samples; the network is
    the cpu-small profile's at `resolution` with random weights."""
    import torch

    from phenexplain.config import load_params
    from phenexplain.display import IntensityMapping, default_colours
    from phenexplain.explain.render import render_frames, traversal_grid
    from phenexplain.explain.traversal import centroids
    from phenexplain.nets import Generator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train.profiles["cpu-small"]
    G = Generator(
        p.z_dim, conditions, p.w_dim, resolution, channels, {"num_layers": p.map_layers},
        {"channel_base": p.channel_base, "channel_max": p.channel_max},
    ).eval()  # fmt: skip
    names = [f"c{k}" for k in range(conditions)]
    config = {
        "resolution": resolution, "grid": f"{rows}x{targets + 1}", "steps": steps,
        "conditions": conditions, "channels": channels, "network": "cpu-small profile",
        "threads": threads, **machine_info(),
    }  # fmt: skip
    start = time.perf_counter()
    grid = traversal_grid(G, names, list(range(rows)), names[0], names[1 : targets + 1],
                          method=3, steps=steps)  # fmt: skip
    frames = render_frames(grid, default_colours(["DNA", *names[1:channels]]),
                           mapping=IntensityMapping.fit(grid.images))  # fmt: skip
    elapsed = time.perf_counter() - start
    yield figure("traverse_frames_per_s", round(len(frames) / elapsed, 3), "frames/s", config)
    start = time.perf_counter()
    centroids(G, centroid_samples)
    elapsed = time.perf_counter() - start
    yield figure("centroids_seconds", round(elapsed, 3), "s", {**config, "K": centroid_samples})


def bench_translate(
    crops: int = 256,
    crop_size: int = 128,
    refine_crops: int = 16,
    refine_steps: int = 20,
    repeats: int = 3,
    threads: int = 2,
) -> Iterator[dict]:
    """`phenexplain translate` crops/s end to end (read, downsample, encode, render the
    reconstruction and the one target, write the crop set) of `crops` crops of `crop_size` px, 2
    channels, A -> B, with the embedded generator (the cpu-small profile at its 32 px) and the
    default encoder, both with random weights (speed does not depend on them); median of
    `repeats`. Then with `refine_steps` optimisation steps from the encoder's guess, on
    `refine_crops` crops."""
    import torch

    from phenexplain.config import EncoderParams, load_params
    from phenexplain.explain.encoder import Encoder, EncoderInfo, save_encoder
    from phenexplain.explain.translate import translate_cropset
    from phenexplain.fsutil import file_sha256
    from phenexplain.nets import Generator
    from phenexplain.training.checkpoint import WEIGHTS, CheckpointMeta, save_checkpoint

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train.profiles["cpu-small"]
    resolution = p.resolution or 32
    kw: dict = dict(
        z_dim=p.z_dim, c_dim=2, w_dim=p.w_dim, img_resolution=resolution, img_channels=2,
        mapping_kwargs={"num_layers": p.map_layers},
        synthesis_kwargs={"channel_base": p.channel_base, "channel_max": p.channel_max},
    )  # fmt: skip
    G = Generator(**kw).eval()
    E = Encoder(resolution, 2, 2, G.num_ws, G.w_dim, EncoderParams().channels)
    config = {
        "crops": crops, "crop_size": crop_size, "resolution": resolution, "channels": 2,
        "targets": 1, "network": "cpu-small profile", "encoder_channels": EncoderParams().channels,
        "threads": threads, **machine_info(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cropset = _random_cropset(root / "crops", crop_size, 2, 2, n=2 * crops)
        names = ["c0", "c1"]
        meta = CheckpointMeta(kwargs={"G_ema": kw}, conditions=names, channels=["ch0", "ch1"],
                              resolution=resolution)  # fmt: skip
        ckpt = save_checkpoint(root / "ckpt", {"G_ema": G}, meta)
        digest = file_sha256(Path(ckpt) / WEIGHTS)[:16]
        info = EncoderInfo(E.kwargs, {"checkpoint": str(ckpt), "weights_sha256": digest}, names,
                           [], {}, EncoderParams().model_dump())  # fmt: skip
        encoder = save_encoder(E, info, root / "encoder")

        def rate(k: int, **kwargs) -> float:
            start = time.perf_counter()  # end to end: loading the model and writing included
            summary = translate_cropset(ckpt, cropset, root / f"out-{k}", source="c0",
                                        encoder=encoder, **kwargs)  # fmt: skip
            return summary.crops / (time.perf_counter() - start)

        rates = [rate(k) for k in range(repeats)]
        yield figure("translate_crops_per_s", round(statistics.median(rates), 2), "crops/s",
                     {**config, "crops_per_s": _median_spread(rates)})  # fmt: skip
        select = list(range(refine_crops))
        refined = rate(repeats, select=select, refine_steps=refine_steps)
        yield figure("translate_refined_crops_per_s", round(refined, 3), "crops/s",
                     {**config, "crops": refine_crops, "refine_steps": refine_steps})  # fmt: skip


def bench_measure(
    crops: int = 64, workers: list[int] | None = None, seed: int = 0
) -> Iterator[dict]:
    """Crops/s through segmentation + the full CellProfiler-style panel (and the assays alone) on
    128 px 3-channel crops of the `dose` assay, for each worker count."""
    from phenexplain.data.cropset import CropSet
    from phenexplain.data.ingest import ingest
    from phenexplain.measure.crops import measure_assays
    from phenexplain.measure.features import PANEL, measure_crops

    with tempfile.TemporaryDirectory() as tmp:
        spec = SynthParams(assay="dose", seed=seed, plates=1, wells_per_condition=1,
                           sites_per_well=2, height=1024, width=1280, workers=2)  # fmt: skip
        generate_plates(spec, Path(tmp) / "plate")
        params = IngestParams(layout="manifest", channels=["DNA", "Tubulin", "Actin"],
                              crop_size=128, min_images_per_condition=1)  # fmt: skip
        ingest(Path(tmp) / "plate", Path(tmp) / "crops", params)
        cs = CropSet(Path(tmp) / "crops")
        import numpy as np

        images = np.stack([cs[i % len(cs)][0] for i in range(crops)])
    for n in workers or [1, 2]:
        config = {"crops": crops, "crop": "128x128x3 uint8", "panel": list(PANEL), "workers": n,
                  **machine_info()}  # fmt: skip
        start = time.perf_counter()
        measure_crops(images, cs.channels, workers=n)
        elapsed = time.perf_counter() - start
        yield figure("measure_panel_crops_per_s", round(crops / elapsed, 3), "crops/s", config)
        start = time.perf_counter()
        measure_assays(images, cs.channels, workers=n)
        elapsed = time.perf_counter() - start
        yield figure("measure_assays_crops_per_s", round(crops / elapsed, 3), "crops/s",
                     {**config, "panel": "assays"})  # fmt: skip
