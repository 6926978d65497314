"""Readers on trees the tests build: BBBC021's CSV and path quirk, manifests, image formats."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from phenexplain.config import IngestParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.images import UnreadableImageError, load_field
from phenexplain.data.ingest import ingest
from phenexplain.data.readers import StructureError, list_fields
from phenexplain.integrations.gx_validation import GXValidator

BBBC_COLUMNS = [
    "TableNumber", "ImageNumber", "Image_FileName_DAPI", "Image_PathName_DAPI",
    "Image_FileName_Tubulin", "Image_PathName_Tubulin", "Image_FileName_Actin",
    "Image_PathName_Actin", "Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Replicate",
    "Image_Metadata_Compound", "Image_Metadata_Concentration",
]  # fmt: skip
CHANNELS = ["DAPI", "Tubulin", "Actin"]


def _bbbc021_tree(root: Path, rng: np.random.Generator, plate_fields) -> None:
    """Plate Week1_22123 unzipped at ROOT/Week1_22123 (quirk); Week2_24121 at ROOT/Week2/Week2_24121."""
    rows = []
    for n, (week, plate, folder, well, site, compound, conc) in enumerate(plate_fields, start=1):
        (root / folder).mkdir(parents=True, exist_ok=True)
        row = {"TableNumber": 1, "ImageNumber": n, "Image_Metadata_Plate_DAPI": plate,
               "Image_Metadata_Well_DAPI": well, "Replicate": 1, "Image_Metadata_Compound": compound,
               "Image_Metadata_Concentration": conc}  # fmt: skip
        for k, ch in enumerate(CHANNELS, start=1):
            name = f"{week}_{plate}_{well}_s{site}_w{k}{n:04X}A1B2.tif"
            image = rng.integers(90, 130, (256, 320), dtype=np.uint16)
            yy, xx = np.mgrid[:256, :320]
            for cy, cx in rng.uniform(40, 210, (6, 2)):
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] += 1500 if ch == "DAPI" else 300
            tifffile.imwrite(root / folder / name, image)
            row[f"Image_FileName_{ch}"] = name
            row[f"Image_PathName_{ch}"] = f"{week}/{plate}"
        rows.append(row)
    with (root / "BBBC021_v1_image.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=BBBC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (root / "BBBC021_v1_moa.csv").write_text(
        "compound,concentration,moa\ntaxol,3,Microtubule stabilizers\n"
    )


@pytest.fixture
def bbbc021(tmp_path):
    fields = []
    for week, plate, folder in (
        ("Week1", "Week1_22123", "Week1_22123"),
        ("Week2", "Week2_24121", "Week2/Week2_24121"),
    ):
        for well, compound, conc in (("B02", "DMSO", "0.0"), ("C05", "taxol", "3.0")):
            for site in (1, 2, 3, 4):
                fields.append((week, plate, folder, well, site, compound, conc))
    _bbbc021_tree(tmp_path / "bbbc", np.random.default_rng(0), fields)
    return tmp_path / "bbbc"


def test_bbbc021_reader_resolves_both_path_forms_and_parses_sites(bbbc021):
    records = list_fields(bbbc021, "bbbc021", CHANNELS)
    assert len(records) == 16
    assert {r.condition for r in records} == {"DMSO_0", "taxol_3"}
    assert {r.site for r in records} == {1, 2, 3, 4}
    assert all(f.is_file() for r in records for f in r.files)
    assert {r.files[0].parent.name for r in records} == {"Week1_22123", "Week2_24121"}
    taxol = next(r for r in records if r.condition == "taxol_3")
    assert taxol.extra["moa"] == "Microtubule stabilizers" and taxol.extra["compound"] == "taxol"


def test_bbbc021_ingests_into_a_crop_set(bbbc021, tmp_path):
    p = IngestParams(layout="bbbc021", channels=CHANNELS, dna_channel="DAPI", crop_size=32,
                     min_images_per_condition=4, workers=1)  # fmt: skip
    validator = GXValidator()
    try:
        ingest(bbbc021, tmp_path / "crops", p, validator=validator)
    finally:
        validator.close()
    cs = CropSet(tmp_path / "crops")
    assert cs.conditions == {"DMSO_0": 0, "taxol_3": 1}
    assert cs[0][0].shape == (3, 32, 32)
    assert set(cs.manifest["plate"]) == {"Week1_22123", "Week2_24121"}
    assert set(cs.manifest.loc[cs.manifest["condition"] == "taxol_3", "moa"]) == {
        "Microtubule stabilizers"
    }


def test_bbbc021_missing_column_is_named(bbbc021):
    text = (
        (bbbc021 / "BBBC021_v1_image.csv").read_text().replace("Image_PathName_Actin", "PathActin")
    )
    (bbbc021 / "BBBC021_v1_image.csv").write_text(text)
    with pytest.raises(
        StructureError, match=r"BBBC021_v1_image\.csv: missing column.*Image_PathName_Actin"
    ):
        list_fields(bbbc021, "bbbc021", CHANNELS)


def test_manifest_paths_may_not_leave_their_folder(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metadata.csv").write_text(
        "plate,well,site,condition,path_DNA\nP1,A01,1,ctrl,../../etc/passwd\n"
    )
    with pytest.raises(StructureError, match="points outside"):
        list_fields(tmp_path / "m", "manifest", ["DNA"])


def test_unknown_layout_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(StructureError, match="unknown layout 'zarr'"):
        list_fields(tmp_path, "zarr", ["DNA"])
    with pytest.raises(StructureError, match="no images found"):
        list_fields(tmp_path, "folders", ["DNA"])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_load_field_formats_and_channel_counts(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    planes = rng.integers(0, np.iinfo(dtype).max, (2, 40, 50), dtype=dtype)
    files = []
    for i, plane in enumerate(planes):
        path = tmp_path / f"c{i}{suffix}"
        (tifffile.imwrite(path, plane) if suffix == ".tif" else Image.fromarray(plane).save(path))
        files.append(path)
    field = load_field(tuple(files), 2)
    assert field.dtype == dtype and np.array_equal(field, planes)
    stack = tmp_path / "stack.tif"
    five = rng.integers(0, 255, (5, 40, 50), dtype=np.uint8)
    tifffile.imwrite(stack, five)
    assert np.array_equal(load_field((stack,), 5), five)
    with pytest.raises(UnreadableImageError, match="holds 5 channel"):
        load_field((stack,), 3)


def test_giant_dimensions_are_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    with tifffile.TiffFile(path, mode="r+b") as tif:  # the header now claims 60000 x 60000
        tif.pages[0].tags["ImageWidth"].overwrite(60000)
        tif.pages[0].tags["ImageLength"].overwrite(60000)
    with pytest.raises(UnreadableImageError, match="over the limit"):
        load_field((path,), 1, max_megapixels=100)
    png = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(png)
    data = bytearray(png.read_bytes())
    data[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR width and height
    png.write_bytes(bytes(data))
    with pytest.raises(UnreadableImageError):
        load_field((png,), 1, max_megapixels=100)
