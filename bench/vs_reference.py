"""Our training and inference speed beside the reference's, in the same run, as ratios.

    SG2ADA_DIR=<work tree of NVlabs/stylegan2-ada-pytorch> \
        python bench/vs_reference.py [--repeats 3] [--configs anchor,embedded] [--device cpu]

For each config and repeat, the reference (`../shared/bench/anchor_sg2ada.py`, which imports the
reference from SG2ADA_DIR; none of its code is in this repository) and ours (`phenexplain bench
train` and `bench generate`) run one after the other, alternating, so drifts of the machine's
speed reach both. Ours is also timed with `bench generate --compile` (torch.compile, after its
first call): the `generate_compiled` ratio, against the reference's eager inference. Each figure
is the median over the repeats; the ratio is ours / reference.
Configs: `anchor` (32 px, channel base 4096, max 128, batch 16, mapping 2, 4 conditions, 3
channels) and `embedded` (the cpu-small profile's network widths: channel base 1024, max 32; z
and w stay 512, the anchor's fixed width). One JSON line per figure on stdout, also appended to
`--out` (default bench/results.jsonl). Run it on a quiet machine: nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "bench" / "anchor_sg2ada.py"
CONFIGS = {
    "anchor": {"resolution": 32, "channel_base": 4096, "channel_max": 128, "batch": 16},
    "embedded": {"resolution": 32, "channel_base": 1024, "channel_max": 32, "batch": 16},
}


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in:\n{text[-2000:]}")


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def reference(config: dict, device: str, threads: int) -> dict[str, float]:
    out = _run([
        sys.executable, str(ANCHOR), "--res", str(config["resolution"]), "--channels", "3",
        "--c-dim", "4", "--channel-base", str(config["channel_base"]),
        "--channel-max", str(config["channel_max"]), "--batch", str(config["batch"]),
        "--train-steps", "16", "--warmup-steps", "2", "--infer-batches", "4", "--repeats", "1",
        "--skip", "mapping,conv", "--threads", str(threads), "--device", device,
    ])  # fmt: skip
    results = _last_json(out)["results"]
    return {
        "train": results["train_img_s_wall"]["median"],
        "generate": results["infer_img_s"]["median"],
    }


def ours(config: dict, device: str, threads: int) -> dict[str, float]:
    exe = str(Path(sys.executable).with_name("phenexplain"))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in config.items() if k != "batch"]
    common = [*flags, "--repeats", "1", "--threads", str(threads), "--device", device]
    figures = {}
    runs = (("train", "train", config["batch"], []), ("generate", "generate", 64, []),
            ("generate_compiled", "generate", 64, ["--compile"]))  # fmt: skip
    for kind, command, batch, extra in runs:
        out = _run([exe, "bench", command, *common, "--batch", str(batch), *extra])
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        figures[kind] = next(f["value"] for f in lines if f["name"].endswith("img_per_s"))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="anchor,embedded")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.jsonl")
    args = parser.parse_args(argv)
    if not os.environ.get("SG2ADA_DIR"):
        parser.error("set SG2ADA_DIR to a work tree of NVlabs/stylegan2-ada-pytorch")
    from phenexplain.bench import machine_info

    machine = {**machine_info(), "date": time.strftime("%Y-%m-%d")}
    lines = []
    for name in args.configs.split(","):
        config = CONFIGS[name]
        runs: dict[str, dict[str, list[float]]] = {"ours": {}, "reference": {}}
        for _ in range(args.repeats):
            for who, fn in (("reference", reference), ("ours", ours)):
                for kind, value in fn(config, args.device, args.threads).items():
                    runs[who].setdefault(kind, []).append(value)
        for kind in ("train", "generate", "generate_compiled"):
            a, b = runs["ours"][kind], runs["reference"][kind.removesuffix("_compiled")]
            ratio = statistics.median(a) / statistics.median(b)
            detail = {"config": name, **config, "device": args.device, "threads": args.threads,
                      "ours_img_per_s": a, "reference_img_per_s": b,
                      "ours_median": statistics.median(a), "reference_median": statistics.median(b),
                      **machine}  # fmt: skip
            lines.append({"name": f"{kind}_speed_vs_reference", "value": round(ratio, 3),
                          "unit": "x", "config": detail})  # fmt: skip
    with args.out.open("a") as fh:
        for line in lines:
            print(json.dumps(line))
            fh.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
