"""The explorer page: the control as the default source, start and end beside the scrubbed frame,
a channel split, real crops at the generated frames' magnification, distinct real crops, and
condition names shown as text (headless Chromium)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from phenexplain.report import explorer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (make browser)"
)
HOSTILE = '<img src=x onerror="window.pwned=1">'


def _page(tiny_checkpoint, tmp_path, conditions, channels=("DNA", "NFkB")):
    """An explorer page of a tiny random model, real crops drawn at random."""
    _, G = tiny_checkpoint(list(channels), conditions, 16)
    rng = np.random.default_rng(0)
    real = {c: rng.integers(0, 255, (5, len(channels), 16, 16), dtype=np.uint8) for c in conditions}
    data = explorer.explorer_data(G, list(conditions), "control", ["blue", "green"], [0, 1], 2,
                                  real, list(channels))  # fmt: skip
    return explorer.write_explorer(data, tmp_path / "explorer.html", "explorer"), data


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_distinct_crops_come_from_different_fields_and_never_overlap():
    manifest = pd.DataFrame({
        "condition": ["a"] * 8 + ["b"] * 2,
        "field_id": ["f1"] * 4 + ["f2"] * 4 + ["f3"] * 2,
        "x": [10.0, 12.0, 100.0, 200.0, 10.0, 11.0, 13.0, 300.0, 0.0, 0.0],
        "y": [10.0] * 10,
        "checksum": ["c1", "c2", "c3", "c4", "c5", "c5", "c6", "c7", "c8", "c9"],
    })  # fmt: skip

    class Crops:  # what `distinct_crops` reads of a CropSet
        resolution = 32

    Crops.manifest = manifest
    picked = explorer.distinct_crops(Crops(), "a", 8, seed=0)  # type: ignore[arg-type]
    fields = manifest["field_id"].to_numpy()[picked]
    assert set(fields[:2]) == {"f1", "f2"}  # one from each field before a second from either
    assert len(set(manifest["checksum"].to_numpy()[picked])) == len(picked)
    for field in ("f1", "f2"):
        x = np.sort(manifest["x"].to_numpy()[picked][fields == field])
        assert (np.diff(x) >= 32).all()  # no two overlapping crops of one field
    assert len(picked) == 5  # f1: 10|12, 100, 200; f2: 10|11|13, 300
    assert set(manifest["condition"].to_numpy()[picked]) == {"a"}
    Crops.manifest = manifest[["condition", "checksum"]]  # an imported set: no fields, no xy
    picked = explorer.distinct_crops(Crops(), "a", 8, seed=0)  # type: ignore[arg-type]
    assert len(picked) == 7  # all but the duplicated checksum


def test_explorer_data_defaults_and_shapes(tiny_checkpoint, tmp_path):
    path, data = _page(tiny_checkpoint, tmp_path, ("TNF", "control"))
    assert data["control"] == "control" and data["channels"] == ["DNA", "NFkB"]
    assert data["zoom"] == explorer.zoom_for(16) == 8
    frames = data["channel_frames"]["control\u2192TNF"]
    assert len(frames) == 2 and len(frames[0]) == 3 and len(frames[0][0]) == 2  # seeds, t, channels
    html = path.read_text()
    assert "innerHTML" not in html and "http" not in html.split("<body>")[1]


@needs_chromium
def test_explorer_in_headless_chromium(tiny_checkpoint, tmp_path, browser):
    path, data = _page(tiny_checkpoint, tmp_path, ("TNF", "control", "zeta"))
    page = browser.new_page()
    page.goto(path.as_uri())
    assert page.input_value("#source") == "control"  # not TNF, the first name in sort order
    assert page.input_value("#target") == "TNF"
    start, end = page.get_attribute("#start", "src"), page.get_attribute("#end", "src")
    assert start == data["frames"]["control\u2192TNF"][0][0] != end
    assert page.get_attribute("#frame", "src") == start
    page.fill("#slider", "2")
    assert page.get_attribute("#frame", "src") == end == data["frames"]["control\u2192TNF"][0][2]
    frame = page.evaluate("document.getElementById('frame').clientWidth")
    crop = page.evaluate("document.querySelector('#source-real img').clientWidth")
    assert frame == crop == 16 * 8  # one screen pixel size for generated and real pixels
    assert page.locator("#source-real img").count() == 5
    assert page.locator("#channels img").count() == 0
    page.check("#split")
    assert page.locator("#channels img").count() == 2
    assert page.locator("#channels figcaption").all_inner_texts() == ["DNA (t = 1.00)",
                                                                      "NFkB (t = 1.00)"]  # fmt: skip
    page.select_option("#source", "TNF")
    assert page.input_value("#target") == "control"  # back to the control by default


@needs_chromium
def test_condition_names_are_shown_as_text_never_markup(tiny_checkpoint, tmp_path, browser):
    path, _ = _page(tiny_checkpoint, tmp_path, (HOSTILE, "control"))
    page = browser.new_page()
    page.goto(path.as_uri())
    page.select_option("#target", HOSTILE)
    assert page.inner_text("#target-name") == HOSTILE
    assert page.evaluate("window.pwned") is None
    assert page.locator("img[src='x']").count() == 0
    options = page.locator("#source option").all_inner_texts()
    assert HOSTILE in options
