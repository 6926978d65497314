"""Nothing is written or served outside the folder it belongs to, whatever the names inside a
checkpoint: condition names become safe file names, a `latest` pointer stays in its run folder,
and `serve` hands out only the report's own regular files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from phenexplain.config import ExplainParams, ReportParams
from phenexplain.errors import PhenexplainError
from phenexplain.explain.jobs import Model, explain_run
from phenexplain.fsutil import MARKER, safe_name
from phenexplain.report.build import _samples_section
from phenexplain.report.html import Page
from phenexplain.training.checkpoint import resolve_checkpoint
from tests.cli_inprocess import one_line_error, run_cli

HOSTILE = ["../../x", "EGF/TNF", "a\\b", "..", ".", "CON", "/etc/passwd", "~", "-rf", "a\0b",
           "[bold red]TNF", "é/ü", " ", "x" * 300]  # fmt: skip
# different labels whose unsafe characters (or case) would map to one name without the digest
LOOKALIKES = ["TNF", "tnf", "a/b", "a?b", "a_b", "a b", "a//b", "con", "CON"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _check_inside(tmp_path: Path, before: set[Path], out: Path) -> set[Path]:
    """Every new file lies inside `out`; returns them."""
    new = _files(tmp_path) - before
    outside = [p for p in new if not p.resolve().is_relative_to(out.resolve())]
    assert not outside, f"written outside {out}: {outside}"
    return new


@pytest.mark.parametrize("name", HOSTILE, ids=ascii)
def test_safe_name_is_one_plain_file_name(name):
    safe = safe_name(name)
    assert safe == safe_name(name)  # stable: shard names are recorded in crop sets
    assert "/" not in safe and "\\" not in safe and "\0" not in safe
    assert not safe.startswith(".") and safe not in ("", ".", "..")
    assert safe.isascii() and len(safe.encode()) <= 120


def test_lookalike_names_never_collide_even_ignoring_case():
    names = {safe_name(n).casefold() for n in LOOKALIKES}
    assert len(names) == len(LOOKALIKES)


def test_shard_names_of_existing_crop_sets_are_unchanged():
    from phenexplain.data.cropset import shard_name

    # as recorded by earlier ingests (the rule before safe_name existed)
    assert shard_name("BBBC021/Week1 22123") == "BBBC021_Week1_22123-4180e287"
    assert shard_name("..") == "plate-5ec1f7e7"


@pytest.mark.parametrize("name", HOSTILE, ids=ascii)
def test_generate_writes_hostile_conditions_inside_out(tmp_path, tiny_checkpoint, name):
    ckpt, _ = tiny_checkpoint(1, conditions=(name, "ctrl"))
    out = tmp_path / "deep" / "er" / "out"
    before = _files(tmp_path)
    code, stderr = run_cli("generate", ckpt, out, "--condition", name, "--seeds", "0-1")
    assert code == 0, stderr
    new = _check_inside(tmp_path, before, out)
    images = [p for p in new if p.name != MARKER]
    assert {p.parent for p in new} == {out} and len(images) == 2


def test_generate_of_lookalike_conditions_writes_distinct_files(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(1, conditions=LOOKALIKES)
    out = tmp_path / "out"
    for name in LOOKALIKES:
        code, stderr = run_cli("generate", ckpt, out, "--condition", name, "--seeds", "0")
        assert code == 0, stderr
    names = {p.name.casefold() for p in out.iterdir() if p.name != MARKER}
    assert len(names) == len(LOOKALIKES)


def test_report_traversals_of_hostile_conditions_stay_inside(tmp_path, tiny_checkpoint):
    names = ["ctrl", "../../x", "EGF/TNF", "..", "TNF", "tnf", "a/b", "a?b"]
    ckpt, _ = tiny_checkpoint(1, conditions=names)
    model = Model.load(ckpt)
    out = tmp_path / "r" / "out"
    (out / "traversals").mkdir(parents=True)
    before = _files(tmp_path)
    params = ReportParams(grid_seeds=1, traversal_seeds=1, traversal_steps=1)
    page = Page("t")
    _samples_section(page, model, "ctrl", ["blue"], params, out)
    new = _check_inside(tmp_path, before, out)
    assert {p.parent for p in new} == {out / "traversals"}
    videos = {p.name.casefold() for p in new if p.suffix == ".gif"}
    assert len(videos) == len(names) - 1  # each beside its raw channels (.ome.tif)
    assert {p.name.casefold() for p in new} == videos | {v[:-4] + ".ome.tif" for v in videos}
    assert "EGF/TNF" in page.render()  # the label itself is kept in the page


def test_report_of_a_hostile_condition_writes_only_inside_out(
    tmp_path, assay_crops, tiny_checkpoint
):
    """The whole report, on a crop set whose treated condition is called ../../EGF/TNF."""
    import pandas as pd

    from phenexplain.report.build import build_report
    from tests.report.test_report import SMALL

    hostile = "../../EGF/TNF"
    crops = Path(shutil.copytree(assay_crops("nfkb", 64).root, tmp_path / "cs"))
    manifest = pd.read_parquet(crops / "manifest.parquet")
    manifest["condition"] = manifest["condition"].replace({"TNF": hostile})
    manifest.to_parquet(crops / "manifest.parquet", index=False)
    names = json.loads((crops / "conditions.json").read_text())
    (crops / "conditions.json").write_text(
        json.dumps({hostile if k == "TNF" else k: v for k, v in names.items()})
    )
    ckpt, _ = tiny_checkpoint(["DNA", "NFkB"], (hostile, "control"), 16)
    out = tmp_path / "r" / "out"
    before = _files(tmp_path)
    build_report(ckpt, crops, out, ReportParams(**SMALL))
    new = _check_inside(tmp_path, before, out)
    assert any(p.parent == out / "traversals" for p in new)
    assert hostile in (out / "report.html").read_text()


@pytest.mark.parametrize("name", ["../../x", "EGF/TNF", "..", "a\\b"], ids=ascii)
def test_traverse_and_explain_with_hostile_conditions_stay_inside(tmp_path, tiny_checkpoint, name):
    ckpt, _ = tiny_checkpoint(1, conditions=(name, "ctrl"))
    out = tmp_path / "a" / "b"
    before = _files(tmp_path)
    code, stderr = run_cli("traverse", ckpt, "--from", name, "--to", "ctrl", "--out",
                           out / "t.gif", "--seeds", "0", "--steps", "1")  # fmt: skip
    assert code == 0, stderr
    params = ExplainParams(source=name, seeds="0", steps=1, formats=["gif", "frames"])
    explain_run(ckpt, out / "explain", params)
    _check_inside(tmp_path, before, out)


def test_latest_pointer_out_of_the_run_folder_is_refused(tmp_path, tiny_checkpoint):
    other, _ = tiny_checkpoint(1)  # a valid checkpoint, outside the run folder
    run = tmp_path / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    rel = os.path.relpath(other, run / "checkpoints")
    for pointer in (rel, str(other), "..", ".", "a/b", ""):
        (run / "checkpoints" / "latest").write_text(pointer)
        with pytest.raises(PhenexplainError, match="latest"):
            resolve_checkpoint(run)
    (run / "checkpoints" / "latest").write_text(rel)
    message = one_line_error(*run_cli("generate", run, tmp_path / "o", "--condition", "ctrl"))
    assert "latest" in message and not (tmp_path / "o").exists()


# serve -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A report folder with a hidden file, a subfolder and links out, served on loopback."""
    root = tmp_path_factory.mktemp("serve")
    (root / "secret.txt").write_text("outside")
    report = root / "report"
    (report / "traversals").mkdir(parents=True)
    (report / "report.html").write_text("<html>report</html>")
    (report / "traversals" / "a.gif").write_bytes(b"GIF89a")
    (report / ".env").write_text("TOKEN=1")
    (report / ".hidden").mkdir()
    (report / ".hidden" / "x.txt").write_text("hidden")
    (report / "out.txt").symlink_to(root / "secret.txt")
    (report / "up").symlink_to(root)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "phenexplain.cli", "serve", str(report),
                             "--port", str(port)], stderr=subprocess.PIPE)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/report.html").read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("phenexplain serve did not answer")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _status(url: str) -> tuple[int, bytes]:
    # raw path: urllib would not normalise it, and a client need not either
    host, _, path = url.removeprefix("http://").partition("/")
    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=10) as s:
        s.sendall(f"GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_serve_hands_out_the_report_files(served):
    assert _status(f"{served}/report.html") == (200, b"<html>report</html>")
    assert _status(f"{served}/") == (200, b"<html>report</html>")
    assert _status(f"{served}/traversals/a.gif") == (200, b"GIF89a")


@pytest.mark.parametrize(
    "path",
    ["traversals/", "traversals", ".env", ".hidden/x.txt", "out.txt", "up/secret.txt",
     "../secret.txt", "%2e%2e/secret.txt", "..%2fsecret.txt", "%2e%2e%2fsecret.txt",
     "traversals/../../secret.txt", "traversals/%2e%2e/%2e%2e/secret.txt", "..\\secret.txt",
     "%2e%2e%5csecret.txt", "/" + "/".join([".."] * 4) + "/etc/passwd", "nope.html"],
)  # fmt: skip
def test_serve_refuses_listings_dotfiles_links_out_and_escapes(served, path):
    status, body = _status(f"{served}/{path}")
    assert status == 404, (status, body[:200])
    assert b"outside" not in body and b"TOKEN" not in body and b"hidden" not in body
    assert b"Directory listing" not in body
