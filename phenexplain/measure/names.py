"""Names of what the package measures: a plain name, a CellProfiler-style name and a unit.

Two kinds of code names reach the report:
- assays (`measure.crops`, `report.analysis`) have short code names (``log_nc_ratio``), spelt
  out by `ASSAY_NAMES`;
- the feature panel (`measure.features`) is named as CellProfiler names it,
  ``<Object>_<Category>_<Feature>[_<Channel>][_<parameters>]``; `plain_name` reads such a name
  part by part (object, category, feature, channel, parameters) into words, e.g.
  ``Nuclei_Intensity_MeanIntensity_DNA`` -> "mean DNA intensity in the nucleus" and
  ``Cells_Texture_Contrast_NFkB_3_00_256`` -> "NFkB texture contrast in the cell (scale 3 px,
  horizontal, 256 levels)".
`describe` takes either kind. Intensities are uint8 / 255 (`measure.crops`), lengths in pixels
of the crop set's size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from phenexplain.errors import PhenexplainError

INTENSITY = "uint8/255"  # the intensity scale of `measure.crops.to_intensity`


@dataclass(frozen=True)
class FeatureName:
    """One measured quantity: its code name, plain name, CellProfiler-style name and unit."""

    code: str
    plain: str
    cellprofiler: str
    unit: str  # "" for dimensionless values


# assay code name -> (plain name, CellProfiler-style name, unit); areas at the crop set's size
ASSAY_NAMES = {
    "nc_ratio": (
        "nucleus/cytoplasm NF-kB ratio",
        "Math_Ratio_Nuclei_Intensity_MeanIntensity_over_CytoplasmRing_NFkB",
        "",
    ),
    "log_nc_ratio": (
        "nucleus/cytoplasm NF-kB ratio (log)",
        "Math_Log_Ratio_Nuclei_Intensity_MeanIntensity_over_CytoplasmRing_NFkB",
        "ln(ratio)",
    ),
    "spot_count": ("Golgi spots per cell", "Cells_Children_GolgiSpots_Count", "count"),
    "spot_area": ("mean Golgi spot area (px^2)", "Mean_GolgiSpots_AreaShape_Area", "px^2"),
    "cytoplasm_area": ("cytoplasm area (px^2)", "Cytoplasm_AreaShape_Area", "px^2"),
    "nucleus_area": ("nucleus area (px^2)", "Nuclei_AreaShape_Area", "px^2"),
    "cell_count": ("nuclei per crop", "Image_Count_Nuclei", "count"),
    "background_fraction": (
        "background fraction of the crop",
        "Image_AreaOccupied_BackgroundFraction",
        "fraction",
    ),
}

OBJECT_WORDS = {"Nuclei": "nucleus", "Cells": "cell", "Cytoplasm": "cytoplasm"}

SHAPE_WORDS = {  # AreaShape feature -> (words, unit); {p} {q}: its trailing numbers
    "Area": ("area", "px^2"),
    "BoundingBoxArea": ("bounding-box area", "px^2"),
    "ConvexArea": ("convex-hull area", "px^2"),
    "FilledArea": ("area with holes filled", "px^2"),
    "Perimeter": ("perimeter", "px"),
    "PerimeterCrofton": ("perimeter (Crofton estimate)", "px"),
    "EquivalentDiameter": ("equivalent diameter", "px"),
    "MajorAxisLength": ("major axis length", "px"),
    "MinorAxisLength": ("minor axis length", "px"),
    "MaxFeretDiameter": ("maximum Feret diameter", "px"),
    "MinFeretDiameter": ("minimum Feret diameter", "px"),
    "MaximumRadius": ("maximum radius (distance to the edge)", "px"),
    "MeanRadius": ("mean radius (distance to the edge)", "px"),
    "MedianRadius": ("median radius (distance to the edge)", "px"),
    "Orientation": ("orientation of the major axis", "degrees"),
    "Compactness": ("compactness", ""),
    "Eccentricity": ("eccentricity", ""),
    "EulerNumber": ("Euler number (1 - holes)", ""),
    "Extent": ("extent (area / bounding-box area)", ""),
    "FormFactor": ("form factor (4 pi area / perimeter^2)", ""),
    "Solidity": ("solidity (area / convex-hull area)", ""),
    "SpatialMoment": ("spatial moment of order ({p}, {q})", "px^{order}"),
    "CentralMoment": ("central moment of order ({p}, {q})", "px^{order}"),
    "NormalizedMoment": ("normalised central moment of order ({p}, {q})", ""),
    "HuMoment": ("Hu moment {p}", ""),
    "InertiaTensor": ("inertia tensor element ({p}, {q})", "px^2"),
    "InertiaTensorEigenvalues": ("inertia tensor eigenvalue {p}", "px^2"),
    "Zernike": ("Zernike shape moment (n={p}, m={q})", ""),
}

INTENSITY_WORDS = {  # Intensity feature (without "Edge") -> (words before the channel, after)
    "IntegratedIntensity": ("integrated", "intensity"),
    "MeanIntensity": ("mean", "intensity"),
    "MedianIntensity": ("median", "intensity"),
    "StdIntensity": ("standard deviation of", "intensity"),
    "MADIntensity": ("median absolute deviation of", "intensity"),
    "MinIntensity": ("minimum", "intensity"),
    "MaxIntensity": ("maximum", "intensity"),
    "LowerQuartileIntensity": ("lower-quartile", "intensity"),
    "UpperQuartileIntensity": ("upper-quartile", "intensity"),
    "MassDisplacement": ("", "mass displacement (intensity centre from shape centre)"),
}

TEXTURE_WORDS = {"InfoMeas1": "information measure of correlation 1",
                 "InfoMeas2": "information measure of correlation 2"}  # fmt: skip
# cp-measure's 2D Haralick directions _00.._03 (correspondence vectors (0,1) (1,1) (1,0) (1,-1))
TEXTURE_DIRECTIONS = {"00": "horizontal", "01": "diagonal NW-SE", "02": "vertical",
                      "03": "diagonal NE-SW"}  # fmt: skip
RADIAL_WORDS = {
    "FracAtD": ("fraction of the {ch} intensity in ring {k} of {n}", "fraction"),
    "MeanFrac": ("{ch} mean fractional intensity in ring {k} of {n}", ""),
    "RadialCV": ("{ch} coefficient of variation around ring {k} of {n}", ""),
    "ZernikeMagnitude": ("{ch} radial Zernike magnitude (n={k}, m={n})", ""),
    "ZernikePhase": ("{ch} radial Zernike phase (n={k}, m={n})", "rad"),
}


def words(camel: str) -> str:
    """A CamelCase token as lower-case words: ``DifferenceEntropy`` -> "difference entropy"."""
    tokens = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", camel)  # acronyms stay upper case
    return " ".join(w if w.isupper() else w.lower() for w in tokens)


def _panel_name(name: str) -> tuple[str, str]:
    """(plain name, unit) of a CellProfiler-style panel name (`measure.features`)."""
    parts = name.split("_")
    if len(parts) < 3 or parts[0] not in OBJECT_WORDS:
        raise PhenexplainError(f"{name!r} is not a CellProfiler-style panel feature name")
    obj, category, feature, *rest = parts
    where = OBJECT_WORDS[obj]
    if category == "AreaShape":  # AreaShape_<feature>[_<p>[_<q>]], no channel
        text, unit = SHAPE_WORDS.get(feature, (words(feature), ""))
        p, q = [*rest, "", ""][:2]
        order = sum(int(x) for x in (p, q) if x.isdigit()) + 2
        return f"{text.format(p=p, q=q)} of the {where}", unit.format(order=order)
    if category == "Intensity":  # Intensity_<feature>[Edge]_<channel>
        channel, edge = "_".join(rest), feature.endswith("Edge")
        before, after = INTENSITY_WORDS.get(feature.removesuffix("Edge"), ("", words(feature)))
        text = " ".join(w for w in (before, channel, after) if w)
        unit = {"MassDisplacement": "px", "IntegratedIntensity": f"{INTENSITY} x px"}.get(
            feature.removesuffix("Edge"), INTENSITY
        )
        return f"{text} {'at the edge of' if edge else 'in'} the {where}", unit
    if category == "Granularity":  # Granularity_<scale>_<channel>
        channel = "_".join(rest)
        return f"{channel} granularity in the {where} (spectrum scale {feature})", "% of intensity"
    if category == "Texture":  # Texture_<feature>_<channel>_<scale>_<direction>_<levels>
        *parts, scale, direction, levels = rest
        what = TEXTURE_WORDS.get(feature, words(feature))
        way = TEXTURE_DIRECTIONS.get(direction, f"direction {direction}")
        text = f"{'_'.join(parts)} texture {what} in the {where}"
        return f"{text} (scale {scale} px, {way}, {levels} levels)", ""
    if category == "RadialDistribution":  # <feature>_<channel>_<k>of<n> or _<channel>_<n>_<m>
        ring = "of" in rest[-1]
        parts, (k, n) = (rest[:-1], rest[-1].split("of")) if ring else (rest[:-2], rest[-2:])
        text, unit = RADIAL_WORDS.get(feature, (words(feature) + " {ch} ({k}, {n})", ""))
        return f"{text.format(ch='_'.join(parts), k=k, n=n)} of the {where}", unit
    return f"{words(category)} {words(feature)} {' '.join(rest)} of the {where}", ""


def describe(name: str) -> FeatureName:
    """The names and unit of an assay (code or CellProfiler-style name) or a panel feature."""
    if name in ASSAY_NAMES:
        return FeatureName(name, *ASSAY_NAMES[name])
    for code, (plain, cellprofiler, unit) in ASSAY_NAMES.items():
        if name == cellprofiler:
            return FeatureName(code, plain, cellprofiler, unit)
    plain, unit = _panel_name(name)
    return FeatureName(name, plain, name, unit)


def plain_name(name: str) -> str:
    """The plain name of an assay or a CellProfiler-style panel feature (see `describe`)."""
    return describe(name).plain


def assay_names(assay: str) -> tuple[str, str]:
    """(plain name, CellProfiler-style name) of an assay's code name."""
    plain, cellprofiler, _ = ASSAY_NAMES[assay]
    return plain, cellprofiler


def with_names(
    frame: pd.DataFrame, column: str = "feature", others: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """`frame` with ``feature_name`` (plain) and ``cellprofiler_name`` before `column`, which
    holds code names; `others` gives the plain name of values that are no feature (a summary row
    such as ``all``), which get no CellProfiler-style name."""
    others = dict(others or {})
    known = {
        value: FeatureName(value, others[value], "", "") if value in others else describe(value)
        for value in map(str, pd.unique(frame[column]))
    }
    frame = frame.copy()
    at = list(frame.columns).index(column)
    frame.insert(at, "cellprofiler_name", [known[str(v)].cellprofiler for v in frame[column]])
    frame.insert(at, "feature_name", [known[str(v)].plain for v in frame[column]])
    return frame
