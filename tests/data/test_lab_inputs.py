"""Inputs labs have, on files the tests write: OME-TIFF, OME-Zarr, LoadData CSVs and label images.

Fields are 96 x 128 px with four nuclei at known places (DNA: bright disks; Actin: a bright
gradient, so the two channels are told apart after scaling); files store Actin first, ingest asks
for DNA first, so a crop's channel 0 is bright at its centre only if the planes were reordered.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from ome_zarr import writer
from ome_zarr.format import FormatV04

from phenexplain.config import IngestParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.readers import StructureError, list_fields
from tests.cli_inprocess import run_cli

SHAPE = (96, 128)
CENTRES = [(30, 30), (30, 90), (66, 40), (66, 100)]
CHANNELS = ["DNA", "Actin"]


def params(layout: str, **kw) -> IngestParams:
    return IngestParams(
        layout=layout, channels=CHANNELS, dna_channel="DNA", crop_size=32,
        min_images_per_condition=1, workers=1, **kw,
    )  # fmt: skip


def _field(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """([Actin, DNA] uint16 [2, H, W], nucleus labels 10, 20, 30, 40 as uint16 [H, W])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    dna = rng.integers(90, 130, SHAPE).astype(np.uint16)
    actin = (3000 + 4 * xx + rng.integers(0, 50, SHAPE)).astype(np.uint16)
    labels = np.zeros(SHAPE, np.uint16)
    for k, (cy, cx) in enumerate(CENTRES, start=1):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
        dna[disk] += 1500
        labels[disk] = 10 * k  # not 1..n, as after a tool's filtering
    return np.stack([actin, dna]), labels


def _write_ome_tiff(
    path: Path, planes: np.ndarray, names=("Actin", "DNA"), plate=None, pixel=None
) -> None:
    """`plate`: (name, row, column, index) written as OME-XML Plate/Well/WellSample; `pixel`:
    (size, unit) written as PhysicalSizeX/Y."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"axes": "CYX", "Channel": {"Name": list(names)}}
    if pixel is not None:
        for axis in "XY":
            meta[f"PhysicalSize{axis}"], meta[f"PhysicalSize{axis}Unit"] = pixel
    tifffile.imwrite(path, planes, ome=True, metadata=meta)
    if plate is None:
        return
    name, row, column, index = plate
    xml = (
        f'<Plate ID="Plate:0" Name="{name}"><Well ID="Well:0" Row="{row}" Column="{column}">'
        f'<WellSample ID="WellSample:0" Index="{index}"><ImageRef ID="Image:0"/></WellSample>'
        "</Well></Plate>"
    )
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tag = tif.pages[0].tags["ImageDescription"]
        tag.overwrite(tag.value.replace("<Image ", xml + "<Image ", 1))


def _platemap(path: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = ["plate,well,condition,compound"] + [f"{p},{w},{c},{c.upper()}" for p, w, c in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def ome_tiff_tree(tmp_path) -> Path:
    """P1: OME-XML plate metadata (wells B02 = row 1 col 1, C03); P2: named P2/<well>_s<site>."""
    root = tmp_path / "ome"
    seed = 0
    for (row, column), site in [((r, c), s) for r, c in ((1, 1), (2, 2)) for s in (0, 1)]:
        seed += 1
        _write_ome_tiff(
            root / "run1" / f"f{seed}.ome.tif", _field(seed)[0], plate=("P1", row, column, site)
        )
    for well, site in (("B2", 1), ("C03", 1), ("C03", 2)):
        seed += 1
        _write_ome_tiff(root / "P2" / f"{well}_s{site}.ome.tiff", _field(seed)[0])
    _platemap(
        root / "platemap.csv", [("", "B02", "control"), ("P1", "C03", "drug"), ("P2", "C3", "drug")]
    )
    return root


def test_ome_tiff_fields_get_plate_well_site_and_reordered_channels(ome_tiff_tree, tmp_path):
    records = list_fields(ome_tiff_tree, "ome-tiff", CHANNELS)
    keys = {(r.plate, r.well, r.site, r.condition) for r in records}
    assert keys == {
        ("P1", "B02", 1, "control"), ("P1", "B02", 2, "control"), ("P1", "C03", 1, "drug"),
        ("P1", "C03", 2, "drug"), ("P2", "B02", 1, "control"), ("P2", "C03", 1, "drug"),
        ("P2", "C03", 2, "drug"),
    }  # fmt: skip
    assert {r.planes for r in records} == {(1, 0)}
    out = tmp_path / "crops"
    summary = ingest(ome_tiff_tree, out, params("ome-tiff"))
    cs = CropSet(out)
    assert summary.crops == len(cs) == 7 * 4 and summary.quarantined == 0
    assert cs.conditions == {"control": 0, "drug": 1}
    m = cs.manifest
    assert set(m["well"]) == {"B02", "C03"} and set(m["compound"]) == {"CONTROL", "DRUG"}
    assert (m["scale_low_DNA"] < 200).all() and (m["scale_low_Actin"] > 2900).all()
    for i in range(len(cs)):
        image, _ = cs[i]
        assert image[0, 16, 16] > 200 and image[0, 2, 2] < 60  # DNA: a nucleus at the centre
    info = json.loads((out / "cropset.json").read_text())
    assert info["layout"] == "ome-tiff" and info["nuclei"] == "segmented"


def test_ome_tiff_wrong_channel_names_and_unmapped_wells_are_named(ome_tiff_tree):
    with pytest.raises(
        StructureError,
        match=r"P2/B2_s1\.ome\.tiff: channel\(s\) Tubulin not found; the file names its "
        r"channels 'Actin', 'DNA'; set ingest\.channels",
    ):
        list_fields(ome_tiff_tree, "ome-tiff", ["DNA", "Tubulin"])
    _platemap(ome_tiff_tree / "platemap.csv", [("", "B02", "control")])
    with pytest.raises(StructureError, match=r"platemap\.csv: no condition for 2 imaged well\(s\): "
                       r"P1 C03, P2 C03; add a row"):  # fmt: skip
        list_fields(ome_tiff_tree, "ome-tiff", CHANNELS)
    _write_ome_tiff(ome_tiff_tree / "P2" / "odd.ome.tif", _field(9)[0])
    with pytest.raises(
        StructureError, match=r"odd\.ome\.tif: no plate metadata .* rename the file"
    ):
        list_fields(ome_tiff_tree, "ome-tiff", CHANNELS)


def _ngff_image(group, planes: np.ndarray, fmt, labels=("Actin", "DNA")) -> None:
    window = {"start": 0, "end": 65535, "min": 0, "max": 65535}
    omero = {"channels": [{"label": n, "color": "FFFFFF", "window": window} for n in labels]}
    writer.write_image(planes, group, axes="cyx", scale_factors=[2], fmt=fmt, omero=omero)


def _ngff_plate(path: Path, name: str, wells: dict[str, int], fmt, seed: int = 0) -> None:
    """A plate of `wells` ('A/1': number of fields), written with ome-zarr's writer."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if fmt else 3)
    rows = sorted({w.split("/")[0] for w in wells})
    columns = sorted({w.split("/")[1] for w in wells})
    writer.write_plate_metadata(root, rows, columns, list(wells), fmt=fmt, name=name)
    for well, count in wells.items():
        row, column = well.split("/")
        group = root.require_group(row).require_group(column)
        writer.write_well_metadata(group, [str(i) for i in range(count)], fmt=fmt)
        for i in range(count):
            seed += 1
            _ngff_image(group.require_group(str(i)), _field(seed)[0], fmt)


@pytest.mark.parametrize("fmt", [None, FormatV04()], ids=["ngff-0.5", "ngff-0.4"])
def test_ome_zarr_plate_and_single_image_ingest_to_crops(tmp_path, fmt):
    root = tmp_path / "zarr"
    root.mkdir()
    _ngff_plate(root / "plate1.ome.zarr", "P1", {"A/1": 2, "B/2": 1}, fmt)
    image = zarr.open_group(
        str(root / "P2" / "A01_s3.ome.zarr"), mode="w", zarr_format=2 if fmt else 3
    )
    _ngff_image(image, _field(7)[0], fmt)
    _platemap(root / "platemap.csv", [("", "A01", "control"), ("P1", "B02", "drug")])
    records = list_fields(root, "ome-zarr", CHANNELS)
    assert [(r.plate, r.well, r.site, r.condition) for r in records] == [
        ("P1", "A01", 1, "control"), ("P1", "A01", 2, "control"), ("P1", "B02", 1, "drug"),
        ("P2", "A01", 3, "control"),
    ]  # fmt: skip
    assert all(r.files[0].name in ("s0", "0") and r.planes == (1, 0) for r in records)
    out = tmp_path / "crops"
    ingest(root, out, params("ome-zarr"))
    cs = CropSet(out)
    assert len(cs) == 16 and cs.conditions == {"control": 0, "drug": 1}
    assert set(cs.manifest["plate"]) == {"P1", "P2"}
    assert all(cs[i][0][0, 16, 16] > 200 for i in range(len(cs)))
    assert ingest(root, out, params("ome-zarr")).plates_added == []  # array folders hash stably
    level0 = root / "P2" / "A01_s3.ome.zarr" / records[-1].files[0].name
    zarr.open_array(str(level0), mode="r+")[0, 0, 0] = 7  # a changed chunk: P2 again, P1 kept
    again = ingest(root, out, params("ome-zarr"))
    assert again.plates_added == ["P2"] and again.plates_kept == ["P1"]
    with pytest.raises(StructureError, match=r"channel\(s\) Tubulin not found.*'Actin', 'DNA'"):
        list_fields(root, "ome-zarr", ["Tubulin"])


def test_ome_zarr_well_paths_may_not_leave_the_plate(tmp_path):
    plate = tmp_path / "p.zarr"
    _ngff_plate(plate, "P1", {"A/1": 1}, None)
    meta = json.loads((plate / "zarr.json").read_text())
    meta["attributes"]["ome"]["plate"]["wells"][0]["path"] = "../../A/1"
    (plate / "zarr.json").write_text(json.dumps(meta))
    _platemap(tmp_path / "platemap.csv", [("", "A01", "control")])
    with pytest.raises(StructureError, match="points outside"):
        list_fields(plate, "ome-zarr", CHANNELS)


def _loaddata(root: Path, n_fields: int = 4) -> Path:
    """A LoadData CSV with one TIFF per channel, relative and absolute PathNames, and the
    nucleus labels as CellProfiler exports them (ObjectsPathName_Nuclei, ...)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    for n in range(n_fields):
        planes, labels = _field(n)
        well, site = ("B02", "C03")[n % 2], 1 + n // 2
        for name, plane in zip(("Actin", "DNA"), planes, strict=True):
            tifffile.imwrite(root / "images" / f"{well}_s{site}_{name}.tif", plane)
        tifffile.imwrite(root / "labels" / f"{well}_s{site}_nuclei.tif", labels)
        rows.append({
            "Metadata_Plate": "P1", "Metadata_Well": well, "Metadata_Site": site,
            "Metadata_Treatment": ("DMSO", "taxol")[n % 2], "Metadata_Dose": "0.1",
            "PathName_DNA": "images", "FileName_DNA": f"{well}_s{site}_DNA.tif",
            "PathName_Actin": str(root / "images"), "FileName_Actin": f"{well}_s{site}_Actin.tif",
            "ObjectsPathName_Nuclei": "labels", "ObjectsFileName_Nuclei": f"{well}_s{site}_nuclei.tif",
        })  # fmt: skip
    path = root / "load_data.csv"
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return path


def _params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  crop_size: 32\n  min_images_per_condition: 1\n  workers: 1\n")
    return path


def test_loaddata_csv_through_the_command_line(tmp_path):
    csv_path = _loaddata(tmp_path / "screen")
    out = tmp_path / "crops"
    code, stderr = run_cli(
        "--params", _params_file(tmp_path), "ingest", csv_path, out, "--layout", "loaddata",
        "--channels", "DNA,Actin", "--dna-channel", "DNA", "--condition-column",
        "Metadata_Treatment",
    )  # fmt: skip
    assert code == 0, stderr
    assert "ingested plate(s) P1" in stderr and "16 crops" in stderr
    cs = CropSet(out)
    assert cs.conditions == {"DMSO": 0, "taxol": 1}
    m = cs.manifest
    assert set(zip(m["well"], m["condition"], strict=True)) == {("B02", "DMSO"), ("C03", "taxol")}
    assert set(m["Dose"]) == {"0.1"} and set(m["site"]) == {1, 2}
    assert (m["scale_low_DNA"] < 200).all() and (m["scale_low_Actin"] > 2900).all()
    assert all(cs[i][0][0, 16, 16] > 200 for i in range(len(cs)))
    assert json.loads((out / "cropset.json").read_text())["nuclei"] == "segmented"
    code, stderr = run_cli(
        "--params", _params_file(tmp_path), "ingest", csv_path, tmp_path / "masked", "--layout",
        "loaddata", "--channels", "DNA,Actin", "--dna-channel", "DNA", "--condition-column",
        "Metadata_Treatment", "--masks", csv_path,
    )  # fmt: skip
    assert code == 0 and "16 crops, 0 field(s) quarantined" in stderr, stderr
    info = json.loads((tmp_path / "masked" / "cropset.json").read_text())
    assert info["nuclei"] == "supplied" and info["params"]["masks"] == str(csv_path)


def test_loaddata_missing_column_and_escaping_path_are_refused(tmp_path):
    csv_path = _loaddata(tmp_path / "screen", n_fields=2)
    with pytest.raises(
        StructureError,
        match=r"load_data\.csv: missing column\(s\) Metadata_Condition; a LoadData CSV needs "
        r".*ingest\.condition_column",
    ):
        list_fields(csv_path, "loaddata", CHANNELS)
    text = csv_path.read_text()
    csv_path.write_text(text.replace(",images,", ",../../elsewhere,", 1))
    with pytest.raises(
        StructureError, match=r"load_data\.csv:2: path \.\./\.\./elsewhere/\S+ points outside"
    ):
        list_fields(csv_path, "loaddata", CHANNELS, condition_column="Metadata_Treatment")


def test_supplied_masks_replace_segmentation_and_bad_masks_quarantine(tmp_path):
    csv_path = _loaddata(tmp_path / "screen")
    labels = tmp_path / "screen" / "labels"
    tifffile.imwrite(labels / "C03_s1_nuclei.tif", np.zeros((64, 64), np.uint16))  # wrong size
    tifffile.imwrite(labels / "B02_s2_nuclei.tif", _field(2)[1].astype(np.float32))  # not labels
    out = tmp_path / "crops"
    p = params("loaddata", condition_column="Metadata_Treatment", masks=str(csv_path))
    summary = ingest(csv_path, out, p)
    assert summary.quarantined == 2 and summary.crops == 2 * 4
    qc = pd.read_parquet(out / "qc.parquet").set_index("field_id")
    assert "bad mask: mask " in qc.at["P1_C03_s1", "reasons"]
    assert (
        "C03_s1_nuclei.tif: shape 64x64 is not the field's 96x128" in qc.at["P1_C03_s1", "reasons"]
    )
    assert (
        "B02_s2_nuclei.tif: pixel type float32 is not an integer" in qc.at["P1_B02_s2", "reasons"]
    )
    assert qc.at["P1_B02_s1", "masks"] == "labels/B02_s1_nuclei.tif"
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert set(quarantine["field_id"]) == {"P1_C03_s1", "P1_B02_s2"}
    m = CropSet(out).manifest
    centres = sorted(zip(m["y"].round(3), m["x"].round(3), strict=True))
    assert centres == sorted([(float(y), float(x)) for y, x in CENTRES] * 2)
    info = json.loads((out / "cropset.json").read_text())
    assert info["nuclei"] == "supplied" and info["params"]["masks"] == str(csv_path)


def test_a_masks_folder_is_matched_by_field_id_and_a_field_without_one_is_quarantined(
    ome_tiff_tree, tmp_path
):
    masks = tmp_path / "masks"
    masks.mkdir()
    for field_id in ("P2_B02_s1", "P2_C03_s1"):
        tifffile.imwrite(masks / f"{field_id}.tif", _field(0)[1])
    tifffile.imwrite(masks / "f1_cp_masks.tif", _field(0)[1])  # cellpose's name for run1/f1
    cells = np.zeros(SHAPE, np.uint16)
    cells[:, :40], cells[:, 60:] = 3, 7
    tifffile.imwrite(masks / "P2_B02_s1_cells.tif", cells)
    summary = ingest(ome_tiff_tree, tmp_path / "crops", params("ome-tiff", masks=str(masks)))
    assert summary.crops == 3 * 4 and summary.quarantined == 4
    qc = pd.read_parquet(tmp_path / "crops" / "qc.parquet")
    missing = qc[qc["status"] == "quarantined"]
    assert missing["reasons"].str.startswith(f"no mask: none for this field in {masks}").all()
    counted = qc.set_index("field_id")["Count_Cells"]
    assert counted["P2_B02_s1"] == 2 and counted.drop("P2_B02_s1").isna().all()
    with pytest.raises(ValueError, match="precropped images are not segmented"):
        params("ome-tiff", masks=str(masks), precropped=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StructureError, match=r"no field has a mask in .*empty"):
        ingest(ome_tiff_tree, tmp_path / "other", params("ome-tiff", masks=str(empty)))


def test_z_stacks_and_malformed_ngff_metadata_are_refused_naming_the_file(tmp_path):
    stack = np.stack([_field(1)[0]] * 3, axis=1)  # [C, Z, H, W]
    tiff = tmp_path / "tiff" / "P1" / "B02_s1.ome.tif"
    tiff.parent.mkdir(parents=True)
    tifffile.imwrite(
        tiff, stack, ome=True, metadata={"axes": "CZYX", "Channel": {"Name": ["Actin", "DNA"]}}
    )
    with pytest.raises(StructureError, match=r"B02_s1\.ome\.tif: SizeZ = 3; .*project z-stacks"):
        list_fields(tmp_path / "tiff", "ome-tiff", CHANNELS)
    image = zarr.open_group(str(tmp_path / "zarr" / "P1" / "B02_s1.ome.zarr"), mode="w")
    window = {"start": 0, "end": 65535, "min": 0, "max": 65535}
    omero = {
        "channels": [{"label": n, "color": "FFFFFF", "window": window} for n in ("Actin", "DNA")]
    }
    writer.write_image(stack, image, axes="czyx", scale_factors=[], omero=omero)
    with pytest.raises(StructureError, match=r"s0: z = 3; ingest takes one 2-D plane"):
        list_fields(tmp_path / "zarr", "ome-zarr", CHANNELS)
    flat = zarr.open_group(str(tmp_path / "zarr" / "P1" / "B02_s1.ome.zarr"), mode="w")
    _ngff_image(flat, _field(1)[0], None)
    meta_path = tmp_path / "zarr" / "P1" / "B02_s1.ome.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["ome"]["omero"] = ["DNA"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StructureError, match=r"B02_s1\.ome\.zarr: malformed OME-NGFF metadata"):
        list_fields(tmp_path / "zarr", "ome-zarr", CHANNELS)


def test_the_pixel_size_of_ome_metadata_is_recorded_and_follows_the_crops(tmp_path):
    root = tmp_path / "ome"
    for k, well in enumerate(("B02", "C03")):
        _write_ome_tiff(root / "P1" / f"{well}_s1.ome.tif", _field(k)[0], pixel=(650, "nm"))
    _platemap(root / "platemap.csv", [("", "B02", "control"), ("", "C03", "drug")])
    assert {r.extra["pixel_size_um"] for r in list_fields(root, "ome-tiff", CHANNELS)} == {"0.65"}
    ingest(root, tmp_path / "crops", params("ome-tiff"))
    crops = CropSet(tmp_path / "crops")
    assert crops.metadata.pixel_size_um == pytest.approx(0.65)
    assert crops.pixel_size_um(16) == pytest.approx(1.3)  # 32 px crops drawn at 16 px
    # one field without a pixel size: none is recorded (never guessed); a declared one wins
    _write_ome_tiff(root / "P1" / "B02_s2.ome.tif", _field(5)[0])
    ingest(root, tmp_path / "mixed", params("ome-tiff"))
    assert CropSet(tmp_path / "mixed").metadata.pixel_size_um is None
    ingest(root, tmp_path / "declared", params("ome-tiff", pixel_size_um=0.325))
    assert CropSet(tmp_path / "declared").metadata.pixel_size_um == pytest.approx(0.325)


def test_the_pixel_size_of_an_ngff_image_comes_from_its_scale(tmp_path):
    root = tmp_path / "zarr"
    image = zarr.open_group(str(root / "P1" / "A01_s1.ome.zarr"), mode="w", zarr_format=3)
    window = {"start": 0, "end": 65535, "min": 0, "max": 65535}
    omero = {"channels": [{"label": n, "color": "FFFFFF", "window": window}
                          for n in ("Actin", "DNA")]}  # fmt: skip
    writer.write_image(_field(1)[0], image, axes="cyx", scale_factors=[2], omero=omero,
                       scale={"y": 0.5, "x": 0.5})  # fmt: skip
    _platemap(root / "platemap.csv", [("", "A01", "control")])
    (record,) = list_fields(root, "ome-zarr", CHANNELS)
    assert "pixel_size_um" not in record.extra  # a scale without a unit: no pixel size
    meta_file = root / "P1" / "A01_s1.ome.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    for axis in meta["attributes"]["ome"]["multiscales"][0]["axes"][1:]:
        axis["unit"] = "micrometer"
    meta_file.write_text(json.dumps(meta))
    (record,) = list_fields(root, "ome-zarr", CHANNELS)
    assert record.extra["pixel_size_um"] == "0.5"
