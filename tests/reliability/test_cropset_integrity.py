"""Crop-set integrity: concurrent ingests, tampered or damaged crop sets, orphan shards.

No silent wrong results: a crop set either opens with exactly the crops and labels it was written
with, or `CropSet` refuses it with one line naming the file and what to do. Two ingests into one
crop set take turns (a file lock next to it), so neither loses the other's plates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenexplain.config import IngestParams, SynthParams
from phenexplain.data import cropset as cs
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.synthetic import generate_plates
from phenexplain.errors import PhenexplainError

REPO = Path(__file__).resolve().parents[2]
PARAMS = IngestParams(
    layout="manifest", channels=["DNA", "NFkB"], crop_size=16, min_images_per_condition=1,
    workers=1,
)  # fmt: skip


def tiny_plate(out: Path, seed: int, sites: int = 2, size: int = 160) -> Path:
    """A one-plate nfkb plate (plate id NFKB<seed>-P01) of 2 wells x `sites` small fields."""
    spec = SynthParams(assay="nfkb", seed=seed, plates=1, wells_per_condition=1,
                       sites_per_well=sites, height=size, width=size, workers=1)  # fmt: skip
    generate_plates(spec, out)
    return out


@pytest.fixture(scope="module")
def plates(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("plates")
    return {seed: tiny_plate(root / f"p{seed}", seed, sites=3, size=256) for seed in (1, 2, 3, 4)}


@pytest.fixture(scope="module")
def base(plates, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "crops"
    ingest(plates[1], out, PARAMS)
    return out


@pytest.fixture
def crops(base, tmp_path) -> Path:
    """A private copy of the one-plate crop set."""
    return Path(shutil.copytree(base, tmp_path / "crops"))


def _shard(root: Path) -> Path:
    (path,) = sorted((root / "images").glob("*.npy"))
    return path


def _plates(root: Path) -> set[str]:
    return set(CropSet(root).manifest["plate"])


# --- two ingests at once -------------------------------------------------------------------

RACER = """
import sys, time
from pathlib import Path
from phenexplain.config import IngestParams
from phenexplain.data.ingest import ingest
params = IngestParams.model_validate_json(sys.argv[4])
print("ready", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.001)
print(ingest(sys.argv[1], sys.argv[2], params), flush=True)
"""


def _race(sources: list[Path], out: Path, go: Path) -> list[subprocess.CompletedProcess]:
    """Run one ingest per source into `out` in separate processes, released at the same instant."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(s), str(out), str(go), PARAMS.model_dump_json()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for s in sources
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def test_two_ingests_into_a_new_folder_keep_both_plates(plates, tmp_path):
    out = tmp_path / "crops"
    results = _race([plates[1], plates[2]], out, tmp_path / "go")
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    assert _plates(out) == {"NFKB001-P01", "NFKB002-P01"}
    assert CropSet(out).verify() == []


def test_two_ingests_into_an_existing_crop_set_keep_every_plate(plates, crops, tmp_path):
    results = _race([plates[2], plates[3]], crops, tmp_path / "go")
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    assert _plates(crops) == {"NFKB001-P01", "NFKB002-P01", "NFKB003-P01"}
    assert CropSet(crops).verify() == []
    referenced = {f"{s}.npy" for s in CropSet(crops).manifest["shard"]}
    assert {p.name for p in (crops / "images").glob("*.npy")} == referenced


def test_an_ingest_waits_for_the_lock_then_fails_with_a_clear_message(plates, crops):
    from phenexplain.data.cropset import output_lock

    start = time.monotonic()
    with output_lock(crops), pytest.raises(PhenexplainError, match="another") as err:
        ingest(plates[2], crops, PARAMS, lock_timeout=0.5)
    assert 0.4 < time.monotonic() - start < 30
    assert str(crops) in str(err.value) and "\n" not in str(err.value)
    assert _plates(crops) == {"NFKB001-P01"}


# --- never "up to date" with a missing or damaged shard ------------------------------------


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_rerun_with_a_missing_or_changed_shard_repairs_it(plates, crops, damage):
    original = [CropSet(crops)[i][0].copy() for i in range(len(CropSet(crops)))]
    shard = _shard(crops)
    shard.unlink() if damage == "missing" else _flip_last_byte(shard)
    summary = ingest(plates[1], crops, PARAMS)
    assert summary.plates_added == ["NFKB001-P01"]
    repaired = CropSet(crops)
    assert repaired.verify() == []
    assert all(np.array_equal(repaired[i][0], c) for i, c in enumerate(original))


def test_a_damaged_shard_of_a_plate_not_in_the_source_is_a_clear_error(plates, crops):
    ingest(plates[2], crops, PARAMS)
    other = CropSet(crops).info["plates"]["NFKB002-P01"]["shard"]
    _flip_last_byte(crops / "images" / f"{other}.npy")
    with pytest.raises(PhenexplainError, match=other) as err:
        ingest(plates[1], crops, PARAMS)
    assert "NFKB002-P01" in str(err.value) and "\n" not in str(err.value)


def test_reopening_hashes_no_shard_again(crops, monkeypatch):
    from phenexplain import fsutil

    CropSet(crops)
    calls = []
    real = fsutil.file_sha256
    monkeypatch.setattr(fsutil, "file_sha256", lambda p: calls.append(p) or real(p))
    CropSet(crops)
    assert calls == []
    _flip_last_byte(_shard(crops))
    with pytest.raises(PhenexplainError, match=_shard(crops).name):
        CropSet(crops)
    assert len(calls) == 1


# --- orphan shards -------------------------------------------------------------------------


def test_next_ingest_removes_only_our_orphan_shards(plates, crops, caplog):
    images, shard = crops / "images", _shard(crops)
    orphan = images / f"{cs.shard_name('NFKB009-P01')}-0123abcd.npy"
    tmp = images / f".{orphan.name}.tmp-4242"
    shutil.copy(shard, orphan)
    shutil.copy(shard, tmp)
    foreign = [images / "notes.txt", images / "mine.npy", images / "mine-0123abcd.npy.bak"]
    for path in foreign:
        path.write_text("not ours")
    with caplog.at_level(logging.INFO, logger="phenexplain.data"):
        ingest(plates[1], crops, PARAMS)
    assert not orphan.exists() and not tmp.exists()
    assert all(p.read_text() == "not ours" for p in foreign)
    assert orphan.name in caplog.text
    assert CropSet(crops).verify() == []


# --- tampered crop sets --------------------------------------------------------------------


def _edit_json(name: str, edit):
    def apply(root: Path) -> None:
        data = json.loads((root / name).read_text())
        edit(data)
        (root / name).write_text(json.dumps(data))

    return apply


def _edit_manifest(edit):
    def apply(root: Path) -> None:
        df = edit(pd.read_parquet(root / cs.MANIFEST))
        df.to_parquet(root / cs.MANIFEST, index=False)

    return apply


def _resave_shard(change):
    def apply(root: Path) -> None:
        path = _shard(root)
        array = np.load(path)
        np.save(path, change(array), allow_pickle=True)

    return apply


def _set(df: pd.DataFrame, column: str, value) -> pd.DataFrame:
    df[column] = df[column].astype(object) if not np.isscalar(value) else df[column]
    df.loc[0, column] = value
    return df


def _write(name: str, data: bytes):
    return lambda root: (root / name).write_bytes(data)


def _truncate(name: str, keep: float = 0.5):
    def apply(root: Path) -> None:
        path = root / name if name != "shard" else _shard(root)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return apply


def _remove(name: str):
    return lambda root: (root / name).unlink() if name != "shard" else _shard(root).unlink()


def _drop_condition(data: dict) -> None:
    data.pop(sorted(data)[0])


def _merge_conditions(data: dict) -> None:
    for name in data:
        data[name] = 0


TAMPERED = [
    ("cropset.json missing", _remove(cs.INFO), cs.INFO),
    ("cropset.json garbage", _write(cs.INFO, b"\x00\xffnot json"), cs.INFO),
    ("cropset.json truncated", _truncate(cs.INFO), cs.INFO),
    ("cropset.json a list", _write(cs.INFO, b"[1, 2]"), cs.INFO),
    ("cropset.json crop_size text", _edit_json(cs.INFO, lambda d: d.update(crop_size="16")), cs.INFO),
    ("cropset.json channels missing", _edit_json(cs.INFO, lambda d: d.pop("channels")), cs.INFO),
    ("cropset.json old format", _edit_json(cs.INFO, lambda d: d.update(format_version=1)), cs.INFO),
    ("conditions.json missing", _remove(cs.CONDITIONS), cs.CONDITIONS),
    ("conditions.json garbage", _write(cs.CONDITIONS, b"{'TNF': 0"), cs.CONDITIONS),
    ("conditions.json without a condition", _edit_json(cs.CONDITIONS, _drop_condition), cs.CONDITIONS),
    ("conditions.json two share an index", _edit_json(cs.CONDITIONS, _merge_conditions), cs.CONDITIONS),
    ("conditions.json index out of range", _edit_json(cs.CONDITIONS, lambda d: d.update(TNF=7)), cs.CONDITIONS),
    ("conditions.json index text", _edit_json(cs.CONDITIONS, lambda d: d.update(TNF="0")), cs.CONDITIONS),
    ("manifest missing", _remove(cs.MANIFEST), cs.MANIFEST),
    ("manifest garbage", _write(cs.MANIFEST, b"PAR1 not parquet PAR1"), cs.MANIFEST),
    ("manifest truncated", _truncate(cs.MANIFEST), cs.MANIFEST),
    ("manifest index -1", _edit_manifest(lambda df: _set(df, "index", -1)), cs.MANIFEST),
    ("manifest index past the shard", _edit_manifest(lambda df: _set(df, "index", 10**6)), cs.MANIFEST),
    ("manifest index of another crop", _edit_manifest(lambda df: _set(df, "index", 1)), cs.MANIFEST),
    ("manifest index as text", _edit_manifest(lambda df: df.assign(index=df["index"].astype(str))), cs.MANIFEST),
    ("manifest without shard column", _edit_manifest(lambda df: df.drop(columns="shard")), cs.MANIFEST),
    ("manifest shard outside images", _edit_manifest(lambda df: _set(df, "shard", "../../etc/x")), cs.MANIFEST),
    ("manifest unknown shard", _edit_manifest(lambda df: _set(df, "shard", "nope-0123abcd")), cs.MANIFEST),
    ("manifest condition not listed", _edit_manifest(lambda df: _set(df, "condition", "EGF")), cs.MANIFEST),
    ("manifest condition null", _edit_manifest(lambda df: _set(df, "condition", None)), cs.MANIFEST),
    ("shard missing", _remove("shard"), ".npy"),
    ("shard truncated", _truncate("shard", 0.9), ".npy"),
    ("shard header only", _truncate("shard", 0.03), ".npy"),
    ("shard garbage", lambda root: _shard(root).write_bytes(b"garbage" * 100), ".npy"),
    ("shard flipped byte", lambda root: _flip_last_byte(_shard(root)), ".npy"),
    ("shard float32", _resave_shard(lambda a: a.astype(np.float32)), ".npy"),
    ("shard 3-d", _resave_shard(lambda a: a[:, 0]), ".npy"),
    ("shard one channel", _resave_shard(lambda a: a[:, :1]), ".npy"),
    ("shard object array", _resave_shard(lambda a: np.array([None] * len(a), dtype=object)), ".npy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tamper", "names"), [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED]
)
def test_a_tampered_crop_set_is_refused_naming_the_file(crops, tamper, names):
    tamper(crops)
    with pytest.raises(PhenexplainError) as err:
        opened = CropSet(crops)
        for i in range(len(opened)):  # reading every crop must fail if opening did not
            opened[i]
    message = str(err.value)
    assert names in message and "\n" not in message, message


def test_import_stylegan_records_the_shard_hash(crops, tmp_path):
    from phenexplain.data.stylegan_zip import export_stylegan, import_stylegan

    export_stylegan(crops, tmp_path / "ds.zip")
    back = tmp_path / "back"
    import_stylegan(tmp_path / "ds.zip", back, channels=["DNA", "NFkB"])
    shards = CropSet(back).info["shards"]
    (name,) = shards
    digest = hashlib.sha256((back / "images" / f"{name}.npy").read_bytes()).hexdigest()
    assert shards[name]["sha256"] == digest
    _flip_last_byte(back / "images" / f"{name}.npy")
    with pytest.raises(PhenexplainError, match=name):
        CropSet(back)


# --- an extension interrupted before any of its writes -------------------------------------


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of ingest's own clean-up runs for an extension."""


EXTENSION_WRITES = 7  # shard, cropset.json (new shards), manifest, qc, quarantine, conditions, info


@pytest.mark.parametrize("write", range(EXTENSION_WRITES))
def test_an_extension_killed_before_any_write_opens_or_names_a_file_and_a_rerun_repairs_it(
    plates, crops, monkeypatch, write
):
    from phenexplain.data import ingest as ingest_module

    calls = []

    def counted(real):
        def wrapper(*args, **kwargs):
            calls.append(real.__name__)
            if len(calls) == write + 1:
                raise _Killed
            return real(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:
        for name in ("write_shard", "write_table"):
            patch.setattr(cs, name, counted(getattr(cs, name)))
        patch.setattr(ingest_module, "write_json", counted(ingest_module.write_json))
        with pytest.raises(_Killed):
            ingest(plates[2], crops, PARAMS)
    try:
        left = CropSet(crops)
        assert set(left.labels) <= set(range(len(left.conditions)))
        assert left.verify() == []
    except PhenexplainError as exc:
        assert "\n" not in str(exc)
    ingest(plates[2], crops, PARAMS)
    repaired = CropSet(crops)
    assert set(repaired.manifest["plate"]) == {"NFKB001-P01", "NFKB002-P01"}
    assert repaired.verify() == []
    referenced = {f"{s}.npy" for s in repaired.manifest["shard"]}
    assert {p.name for p in (crops / "images").iterdir()} == referenced


@pytest.mark.parametrize("command", ["export-stylegan", "train"])
def test_the_command_line_prints_one_line_naming_the_tampered_file(crops, tmp_path, command):
    _flip_last_byte(_shard(crops))
    args = [str(crops), str(tmp_path / "out.zip")] if command == "export-stylegan" else [str(crops)]
    if command == "train":
        args += ["--run-dir", str(tmp_path / "run"), "--kimg", "0.01"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "phenexplain.cli", command, *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and _shard(crops).name in lines[0], result.stderr
    assert not (tmp_path / "out.zip").exists()
