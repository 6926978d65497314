"""Regenerate (or check) `golden_sg2ada.json` from a work tree of NVlabs/stylegan2-ada-pytorch.

    SG2ADA_DIR=<work tree> python -m tests.nets.regenerate_golden [--check]

Builds the reference G and D with the kwargs of `test_networks` (GOLDEN_G, GOLDEN_D), fills their
weights with `fill_deterministic`, runs them on `golden_inputs`, and writes what the test
compares: a 4 x 4 corner of every generated image, the image mean and std, and D's scores.
`--check` compares instead of writing and exits 1 when a number differs by more than the
test's tolerance. The reference is imported from SG2ADA_DIR at run time; none of its code is
in this repository. Torch's CPU kernels may change the last digits between versions: re-run
it after a torch upgrade and commit the file only if `--check` fails beyond rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from phenexplain.fsutil import git_commit
from tests.nets.test_networks import GOLDEN, GOLDEN_D, GOLDEN_G, golden_outputs


def reference_networks(tree: Path):
    """The reference's `training.networks` module, imported from the work tree `tree`."""
    if not (tree / "training" / "networks.py").is_file():
        sys.exit(f"{tree} is not a stylegan2-ada-pytorch work tree (no training/networks.py)")
    sys.path.insert(0, str(tree))
    from training import networks  # the reference's module, from SG2ADA_DIR

    return networks


def reference_numbers(networks) -> dict:
    image, scores = golden_outputs(
        networks.Generator(**GOLDEN_G), networks.Discriminator(**GOLDEN_D)
    )
    return {
        "G_image_corner": image[:, :, :4, :4].flatten().tolist(),
        "G_image_mean": image.mean().item(),
        "G_image_std": image.std().item(),
        "D_scores": scores.flatten().tolist(),
    }


def differences(stored: dict, fresh: dict) -> list[str]:
    """Numbers of `fresh` that `test_networks` would not accept as `stored`."""
    problems = []
    for key, atol, rtol in (("G_image_corner", 1e-4, 0), ("D_scores", 1e-9, 1e-4)):
        a, b = torch.tensor(stored[key]), torch.tensor(fresh[key])
        if a.shape != b.shape or not torch.allclose(b, a, atol=atol, rtol=rtol):
            problems.append(f"{key}: largest difference {float((a - b).abs().max()):.3g}")
    if abs(stored["G_image_std"] - fresh["G_image_std"]) >= 1e-4:
        problems.append(f"G_image_std: {stored['G_image_std']} vs {fresh['G_image_std']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference",
        default=os.environ.get("SG2ADA_DIR"),
        help="work tree of NVlabs/stylegan2-ada-pytorch (default: $SG2ADA_DIR)",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the stored file instead of writing it"
    )
    parser.add_argument("--commit", help="the reference's commit, when the tree has no .git")
    parser.add_argument("--out", type=Path, default=GOLDEN)  # fmt: skip
    args = parser.parse_args(argv)
    if not args.reference:
        parser.error("set SG2ADA_DIR or pass --reference (a work tree made with `git archive`)")
    tree = Path(args.reference).resolve()
    torch.set_num_threads(1)  # one summation order
    fresh = reference_numbers(reference_networks(tree))
    if args.check:
        problems = differences(json.loads(args.out.read_text()), fresh)
        for line in problems:
            print(line)
        print("the reference reproduces the stored numbers" if not problems else "differs")
        return 1 if problems else 0
    commit = (args.commit or git_commit(tree) or "unknown commit")[:7]
    record = {
        "source": f"NVlabs/stylegan2-ada-pytorch {commit}, training/networks.py, CPU fp32",
        **fresh,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
