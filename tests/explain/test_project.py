"""Projection of crops into W (MSE + MS-SSIM, no downloaded network) and translation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from phenexplain.cli import app
from phenexplain.errors import PhenexplainError
from phenexplain.explain.project import ms_ssim, project, psnr, ssim, translate
from phenexplain.explain.traversal import centroids, synthesize
from phenexplain.nets.ops import to_uint8


def test_similarity_measures():
    g = torch.Generator().manual_seed(0)
    x = torch.rand([2, 3, 32, 32], generator=g) * 2 - 1
    y = torch.rand([2, 3, 32, 32], generator=g) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2)) and torch.allclose(
        ms_ssim(x, x), torch.ones(2)
    )
    assert (ms_ssim(x, y) < 0.6).all() and (ssim(x, y) < 0.1).all()  # ms_ssim maps [-1,1]->[0,1]
    assert (ssim(x, (x + 0.1 * y).clamp(-1, 1)) > ssim(x, (x + 0.5 * y).clamp(-1, 1))).all()
    a = np.zeros((4, 4), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))


def test_projection_recovers_a_generated_crop(tiny_checkpoint):
    _, G = tiny_checkpoint(channels=2, conditions=("ctrl", "drug"), resolution=16)
    centroid = centroids(G, 2000)
    w_true = centroid[0] + 0.5 * torch.randn(G.w_dim, generator=torch.Generator().manual_seed(1))
    crop = to_uint8(synthesize(G, w_true[None]))[0].numpy()
    start = to_uint8(synthesize(G, centroid[0][None]))[0].numpy()
    result = project(G, crop, centroid[0], steps=150)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.psnr > psnr(start, crop) + 3  # far closer than where it started
    assert result.psnr > 24 and result.ssim > 0.8
    frames = translate(G, result, centroid[1] - centroid[0], 4)
    assert frames.shape == (5, 2, 16, 16)
    assert np.array_equal(frames[0], result.image)  # t = 0 is the reconstruction itself


def test_projection_checks_the_crop_shape(tiny_checkpoint):
    _, G = tiny_checkpoint(channels=2, resolution=16)
    with pytest.raises(PhenexplainError, match="does not match"):
        project(G, np.zeros((3, 16, 16), np.uint8), torch.zeros(G.w_dim), steps=1)


def test_cli_project_a_crop_file(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(channels=2, conditions=("ctrl", "drug"), resolution=8)
    crop = np.random.default_rng(0).integers(0, 255, (2, 16, 16), dtype=np.uint8)  # 2x the model
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    result = CliRunner().invoke(app, ["project", str(ckpt), str(tmp_path / "crop.tif"),
                                      "--condition", "ctrl", "--to", "drug", "--steps", "20",
                                      "--frames", "3", "--centroid-samples", "200",
                                      "--out", str(tmp_path / "p")])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "projection.json").read_text())
    assert len(summary["crops"]) == 1 and np.isfinite(summary["mean_psnr_db"])
    assert (tmp_path / "p" / "crop000.gif").is_file()
    tifffile.imwrite(tmp_path / "float.tif", crop.astype(np.float32))
    bad = CliRunner().invoke(app, ["project", str(ckpt), str(tmp_path / "float.tif"),
                                   "--condition", "ctrl", "--to", "drug",
                                   "--out", str(tmp_path / "q")])  # fmt: skip
    assert bad.exit_code != 0 and "uint8" in str(bad.exception)
