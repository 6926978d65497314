"""Screenshots of the validation report and the explorer (docs/report.png, docs/explorer.png),
rendered by headless Chromium through Playwright.

    python docs/screenshots.py                       # a tiny run: random 16 px model, small plate
    python docs/screenshots.py --report runs/demo/report   # the pages of a report folder

The tiny run takes about a minute on two cores: a small synthetic nfkb plate, ingested at 64 px,
and a random 16 px generator (its cells are noise: the screenshots show the pages, not a model).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
VIEWPORT = {"width": 1180, "height": 1300}


def tiny_report(work: Path) -> Path:
    """A report of a random 16 px model on a small synthetic nfkb crop set, in `work`."""
    import torch

    from phenexplain.config import IngestParams, ReportParams, SynthParams
    from phenexplain.data.ingest import ingest
    from phenexplain.data.synthetic import generate_plates
    from phenexplain.nets import Generator
    from phenexplain.report.build import build_report
    from phenexplain.training.checkpoint import CheckpointMeta, save_checkpoint

    synth = SynthParams(assay="nfkb", seed=7, plates=1, wells_per_condition=3, sites_per_well=3,
                        height=512, width=640, cells_per_mpx=60.0, workers=2)  # fmt: skip
    generate_plates(synth, work / "plate")
    ingest(work / "plate", work / "cropsets" / "nfkb",
           IngestParams(layout="manifest", channels=["DNA", "NFkB"], crop_size=64,
                        min_images_per_condition=2))  # fmt: skip
    kw = dict(z_dim=8, c_dim=2, w_dim=8, img_resolution=16, img_channels=2,
              mapping_kwargs={"num_layers": 2},
              synthesis_kwargs={"channel_base": 64, "channel_max": 8})  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the same random weights every time
        torch.manual_seed(0)
        G = Generator(**kw).eval()
    meta = CheckpointMeta(kwargs={"G_ema": kw}, conditions=["TNF", "control"],
                          channels=["DNA", "NFkB"], resolution=16)  # fmt: skip
    save_checkpoint(work / "model", {"G_ema": G}, meta)
    params = ReportParams(real_per_condition=40, synthetic_per_condition=24, grid_seeds=6,
                          traversal_seeds=2, traversal_steps=8, cnn_folds=2, cnn_epochs=2,
                          explorer_seeds=2, workers=2)  # fmt: skip
    build_report(work / "model", work / "cropsets" / "nfkb", work / "report", params)
    return work / "report"


def _small_png(path: Path) -> None:
    """Quantise the screenshot to 256 colours: a fraction of the size, the text still sharp."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def shoot(report: Path, out: Path, chromium: str | None = None) -> list[Path]:
    """report.html and explorer.html of the folder `report` as out/report.png, out/explorer.png."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: install Debian's chromium (make browser)")
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport=VIEWPORT, offline=True).new_page()
        page.goto((report / "report.html").as_uri())
        page.wait_for_selector("div.plot .main-svg")
        page.screenshot(path=str(out / "report.png"))
        page.goto((report / "explorer.html").as_uri())
        page.fill("#slider", str(int(page.get_attribute("#slider", "max") or 2) // 2))
        page.check("#split")
        page.screenshot(path=str(out / "explorer.png"))
        browser.close()
    shots = [out / "report.png", out / "explorer.png"]
    for shot in shots:
        _small_png(shot)
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="a report folder (default: make a tiny run)")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go")
    args = parser.parse_args()
    if args.report is not None:
        shoot(args.report.resolve(), args.out)
        return
    with tempfile.TemporaryDirectory() as work:
        shoot(tiny_report(Path(work)), args.out)


if __name__ == "__main__":
    main()
