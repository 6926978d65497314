"""LDA maps, dose response and projections onto the traversal, on a tiny G."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from phenexplain.cli import app
from phenexplain.errors import PhenexplainError
from phenexplain.explain import latent
from phenexplain.explain.traversal import centroids

DOSES = ("DMSO", "cpd_0.1uM", "cpd_1uM", "cpd_10uM")


def test_dose_order_reads_the_numbers():
    assert latent.dose_order(["c_10uM", "c_0.3uM", "c_3uM", "c_1e-2uM"]) == [
        "c_1e-2uM", "c_0.3uM", "c_3uM", "c_10uM"]  # fmt: skip
    with pytest.raises(PhenexplainError, match="--doses"):
        latent.dose_order(["low", "high"])


def test_lda_separates_fitted_conditions_and_projects_others(tiny_checkpoint):
    _, G = tiny_checkpoint(channels=1, conditions=DOSES)
    points = latent.lda_map(G, list(DOSES), ["DMSO", "cpd_10uM"], ["cpd_1uM"], n_fit=400,
                            n_project=50)  # fmt: skip
    assert len(points) == 850 and set(points.columns) == {"condition", "role", "ld1", "ld2"}
    means = points.groupby("condition")["ld1"].mean()
    spread = points.groupby("condition")["ld1"].std().max()
    assert abs(means["DMSO"] - means["cpd_10uM"]) > 2 * spread  # LD1 separates what it was fit on
    three = latent.lda_map(G, list(DOSES), ["DMSO", "cpd_1uM", "cpd_10uM"], n_fit=200)
    assert three["ld2"].std() > 0


def test_dose_distances_and_summary(tiny_checkpoint):
    _, G = tiny_checkpoint(channels=1, conditions=DOSES)
    centroid = centroids(G, 2000)
    rows, summary = latent.dose_distances(G, list(DOSES), "DMSO", list(DOSES[1:]),
                                          centroid=centroid, n=300)  # fmt: skip
    assert len(rows) == 4 * 300
    # the distances are what they claim to be: recompute one from the W samples
    w = latent.sample_w(G, DOSES.index("cpd_1uM"), 300)
    expected = np.linalg.norm(w - centroid[0].double().numpy(), axis=1)
    got = rows.loc[rows["condition"] == "cpd_1uM", "distance"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    medians = pd.Series(summary["median_distance"])
    assert summary["spearman_rho_median_vs_dose"] == pytest.approx(
        pd.Series(range(4)).corr(medians.rank().reset_index(drop=True), method="spearman"))  # fmt: skip


def test_projection_onto_the_traversal(tiny_checkpoint):
    _, G = tiny_checkpoint(channels=2, conditions=DOSES)
    table, images = latent.dose_projection(G, list(DOSES), "DMSO", list(DOSES[1:]), [0, 5])
    assert images.shape == (2, 4, 2, 2, 8, 8)
    for _, sel in table.groupby("seed"):
        t = sel.sort_values("dose_rank")["t"].to_numpy()
        res = sel.sort_values("dose_rank")["residual"].to_numpy()
        assert t[0] == pytest.approx(0, abs=1e-6) and t[-1] == pytest.approx(1, abs=1e-6)
        assert res[0] == pytest.approx(0, abs=1e-5) and res[-1] == pytest.approx(0, abs=1e-5)
    # the end points' projections are the points themselves: identical images
    assert np.array_equal(images[:, 0, 0], images[:, 0, 1])


def test_cli_latent_lda_and_dose(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(channels=3, conditions=DOSES)
    runner = CliRunner()
    r = runner.invoke(app, ["latent", "lda", str(ckpt), "--fit", "DMSO,cpd_10uM", "--project",
                            "cpd_0.1uM,cpd_1uM", "--n-fit", "200", "--n-project", "20",
                            "--out", str(tmp_path / "lda")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "lda" / "lda.csv")) == 440
    assert (tmp_path / "lda" / "lda.png").stat().st_size > 1000
    r = runner.invoke(app, ["latent", "dose", str(ckpt), "--control", "DMSO", "--n", "50",
                            "--centroid-samples", "500", "--out", str(tmp_path / "dose")])  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "dose" / "dose_summary.json").read_text())
    assert summary["doses"] == ["cpd_0.1uM", "cpd_1uM", "cpd_10uM"]  # ordered by the numbers
    for name in ("dose_response.png", "dose_projection.png", "dose_distances.csv",
                 "dose_projection.csv"):  # fmt: skip
        assert (tmp_path / "dose" / name).is_file()
