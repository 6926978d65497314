"""Synthetic assays: channels, conditions and the planted phenotype of each condition.

Each condition draws its cells from a `CellModel`; the difference between a treated condition's
model and the control's model *is* the planted phenotype. `Assay.ground_truth()` writes the planted
values and, per condition, the expected direction of each measurable effect relative to the control,
the intensity changes that remain besides the planted phenotype, and the Cohen's d the project's own
measurement realises at native resolution.

The planted phenotypes move marker within a cell but conserve its total: translocation moves NF-kB
between cytoplasm and nucleus, scattering splits the golgi into more, smaller spots with the same
integrated signal. So a classifier cannot tell conditions apart by brightness alone, except where
`Condition.intensity` says so.

Wells are biological replicates: each well multiplies the planted parameters and the marker
expression by its own log-normal factor (`WELL_SIGMA`, recorded per well by the plate writer), so
cells of one well resemble each other more than cells of different wells and a per-cell test
pseudo-replicates.

Units: areas in px^2, intensities in expected photons per pixel before camera gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from phenexplain.errors import PhenexplainError

STAINS = {
    "dna": "nuclear DNA stain (DAPI/Hoechst-like) with chromatin texture",
    "nfkb": "translocating transcription factor (NF-kB p65-like): cytoplasmic at rest, "
    "nuclear when active",
    "golgi": "golgi marker (GM130/CCR5-like): compact perinuclear ribbon or scattered mini-stacks",
    "actin": "F-actin-like cell-body stain, brighter at the cell cortex",
    "tubulin": "tubulin-like cell-body stain, brighter around the nucleus",
}


@dataclass(frozen=True)
class CellModel:
    """Distributions every cell of a condition is drawn from."""

    nucleus_area: float = 300.0  # mean nuclear area, px^2
    nucleus_area_sd: float = 60.0  # standard deviation of nuclear area, px^2
    cell_area: float = 1700.0  # mean whole-cell area (nucleus included), px^2
    cell_area_sd: float = 380.0
    dna_level: float = 700.0  # mean nuclear DNA signal, photons/px
    marker_level: float = 120.0  # mean cytoplasmic marker concentration, photons/px
    brightness_cv: float = 0.25  # per-cell log-normal spread of every channel's level
    nc_ratio: float = 0.45  # median nucleus/cytoplasm marker concentration ratio
    nc_ratio_sigma: float = 0.2  # log-normal spread of that ratio
    golgi_compact: bool = True  # True: perinuclear cluster; False: scattered spots
    golgi_spots: float = 4.0  # mean golgi spots per cell (1 + Poisson(mean - 1): a cell has one)
    golgi_spot_sigma: float = 2.4  # golgi spot Gaussian sigma, px
    relative_density: float = 1.0  # cells per field relative to the assay's density


WELL_SIGMA = {
    "marker_level": 0.12,
    "nucleus_area": 0.04,
    "cell_area": 0.05,
    "nc_ratio": 0.12,
    "golgi_spots": 0.12,
    "golgi_spot_sigma": 0.06,
}
"""Log-normal sigma of the per-well multiplicative factor on each planted parameter."""

REFERENCE_PLATE = {
    "seed": 11,
    "plates": 1,
    "wells_per_condition": 12,
    "sites_per_well": 2,
    "height": 1024,
    "width": 1280,
    "cells_per_mpx": 50.0,
}
"""The plate `Condition.expected_d` was measured on: `phenexplain.measure.assays.measure_field`
on every field, cells with the nucleus inside the field, d pooled over cells (log for nc_ratio)."""


@dataclass(frozen=True)
class Condition:
    """One experimental condition: its name (a folder- and label-safe string) and cell model."""

    name: str
    model: CellModel
    treatment: str
    concentration_um: float = 0.0
    expected: dict[str, str] = field(default_factory=dict)  # feature -> "up" | "down"
    # feature -> Cohen's d vs control realised at native resolution (see REFERENCE_PLATE)
    expected_d: dict[str, float] = field(default_factory=dict)
    # intensity measure -> "up" | "down" | "unchanged" vs control, besides the planted phenotype
    intensity: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Channel:
    """An image channel: its name as written in file names, and the stain it simulates."""

    name: str
    stain: str


@dataclass(frozen=True)
class Assay:
    """A synthetic screening assay with planted phenotypes."""

    name: str
    description: str
    channels: tuple[Channel, ...]
    conditions: tuple[Condition, ...]
    control: str
    notes: str = ""

    def condition(self, name: str) -> Condition:
        for cond in self.conditions:
            if cond.name == name:
                return cond
        raise PhenexplainError(f"assay {self.name!r} has no condition {name!r}")

    def ground_truth(self) -> dict:
        """Planted parameters and expected effect directions, as written next to the images."""
        control = self.condition(self.control).model
        conditions = {}
        for cond in self.conditions:
            planted = asdict(cond.model)
            changed = {k: v for k, v in planted.items() if v != getattr(control, k)}
            conditions[cond.name] = {
                "treatment": cond.treatment,
                "concentration_um": cond.concentration_um,
                "is_control": cond.name == self.control,
                "planted": planted,
                "changed_vs_control": changed,
                "expected_vs_control": dict(cond.expected),
                "expected_d_vs_control": dict(cond.expected_d),
                "intensity_vs_control": dict(cond.intensity),
            }
        return {
            "assay": self.name,
            "description": self.description,
            "notes": self.notes,
            "control": self.control,
            "channels": [
                {"name": ch.name, "stain": ch.stain, "description": STAINS[ch.stain]}
                for ch in self.channels
            ],
            "conditions": conditions,
            "well_variation": {
                "kind": "log-normal multiplicative factor per well and parameter, mean 1",
                "sigma": dict(WELL_SIGMA),
                "per_well": "ground_truth_wells.csv",
            },
            "expected_d_reference": {
                "plate": dict(REFERENCE_PLATE),
                "measured_by": "phenexplain.measure.assays.measure_field, native resolution",
                "d": "Cohen's d of treated - control over cells (pooled SD); log for nc_ratio",
            },
        }


def _hill(concentration: float, ec50: float, slope: float = 1.0) -> float:
    """Fractional response of a Hill curve, 0 at zero dose and 1 at saturation."""
    return concentration**slope / (concentration**slope + ec50**slope)


# Cohen's d realised on REFERENCE_PLATE, measured at native resolution (tests re-measure them).
NFKB_D = 2.85
GOLGI_D = {"spot_count": 1.21, "spot_area": -0.89}
SUBTLE_REALISED_D = 0.38


def _nfkb() -> Assay:
    base = CellModel()
    return Assay(
        name="nfkb",
        description="NF-kB translocation: TNF-like treatment moves the marker from cytoplasm "
        "to nucleus.",
        channels=(Channel("DNA", "dna"), Channel("NFkB", "nfkb")),
        control="control",
        conditions=(
            Condition("control", base, treatment="none"),
            Condition(
                "TNF",
                replace(base, nc_ratio=3.2),
                treatment="TNF",
                concentration_um=0.0012,
                expected={"nc_ratio": "up"},
                expected_d={"log_nc_ratio": NFKB_D},
                intensity={
                    "NFkB integrated per cell": "unchanged",
                    "NFkB mean in nucleus": "up",
                    "NFkB mean in cytoplasm": "down",
                },
            ),
        ),
        notes="Planted: the median nucleus/cytoplasm NFkB concentration ratio (0.45 -> 3.2), "
        "with the total NFkB per cell conserved (moved from cytoplasm to nucleus).",
    )


def _golgi() -> Assay:
    base = CellModel(golgi_compact=True, golgi_spots=4.0, golgi_spot_sigma=2.4)
    return Assay(
        name="golgi",
        description="Golgi dispersal: nocodazole-like treatment splits the compact perinuclear "
        "golgi into many small scattered spots.",
        channels=(Channel("DNA", "dna"), Channel("Golgi", "golgi")),
        control="DMSO",
        conditions=(
            Condition("DMSO", base, treatment="DMSO"),
            Condition(
                "nocodazole",
                replace(base, golgi_compact=False, golgi_spots=3.0, golgi_spot_sigma=2.3),
                treatment="nocodazole",
                concentration_um=10.0,
                expected={"spot_count": "up", "spot_area": "down"},
                expected_d={"spot_count": GOLGI_D["spot_count"], "spot_area": GOLGI_D["spot_area"]},
                intensity={
                    "Golgi integrated per cell": "unchanged",
                    "Golgi peak per spot": "down",
                },
            ),
        ),
        notes="Planted: golgi layout (compact -> scattered), spots per cell (4 -> 3, each one "
        "detected apart instead of one merged ribbon) and spot sigma (2.4 -> 2.3 px), with the "
        "integrated golgi signal per cell conserved.",
    )


DOSES_UM = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
DOSE_EC50_UM = 0.3


def _dose() -> Assay:
    base = CellModel()
    conditions = [Condition("DMSO", base, treatment="DMSO")]
    for dose in DOSES_UM:
        h = _hill(dose, DOSE_EC50_UM)
        model = replace(
            base,
            cell_area=round(base.cell_area * (1.0 - 0.45 * h), 3),
            cell_area_sd=round(base.cell_area_sd * (1.0 - 0.45 * h), 3),
            relative_density=round(1.0 - 0.6 * h, 4),
        )
        conditions.append(
            Condition(
                f"cytoD_{dose:g}uM",
                model,
                treatment="cytochalasin-like",
                concentration_um=dose,
                expected={"cytoplasm_area": "down", "cell_count": "down"},
                intensity={
                    "Actin integrated per cell": "down",
                    "Tubulin integrated per cell": "down",
                    "Actin and Tubulin mean per cell": "unchanged",
                },
            )
        )
    return Assay(
        name="dose",
        description="Dose series of a cytochalasin-like compound: cytoplasm contracts and cells "
        "are lost (toxicity) monotonically with concentration.",
        channels=(Channel("DNA", "dna"), Channel("Tubulin", "tubulin"), Channel("Actin", "actin")),
        control="DMSO",
        conditions=tuple(conditions),
        notes=f"Planted: Hill response h = c / (c + {DOSE_EC50_UM} uM); cell area x (1 - 0.45 h), "
        "cell density x (1 - 0.6 h). Effects are monotonic in dose.",
    )


SUBTLE_D = 0.4  # the Cohen's d of nuclear area the assay aims at, as measured
# Planted shift of mean nuclear area, in planted SDs: segmentation and well effects widen the
# measured spread, so a realised d of SUBTLE_D needs a larger planted shift.
SUBTLE_SHIFT_SD = 0.55


def _subtle() -> Assay:
    base = CellModel()
    shifted = replace(base, nucleus_area=base.nucleus_area + SUBTLE_SHIFT_SD * base.nucleus_area_sd)
    return Assay(
        name="subtle",
        description="Two cell lines whose only difference is a small shift of nuclear area "
        f"(measured Cohen's d about {SUBTLE_D}), invisible by eye under cell-to-cell variability.",
        channels=(Channel("DNA", "dna"), Channel("Actin", "actin")),
        control="corrected",
        conditions=(
            Condition("corrected", base, treatment="isogenic control"),
            Condition(
                "mutant",
                shifted,
                treatment="mutant",
                expected={"nucleus_area": "up"},
                expected_d={"nucleus_area": SUBTLE_REALISED_D},
                intensity={"DNA integrated per nucleus": "up", "DNA mean in nucleus": "unchanged"},
            ),
        ),
        notes=f"Planted: mean nuclear area {base.nucleus_area:g} -> {shifted.nucleus_area:g} px^2 "
        f"with sd {base.nucleus_area_sd:g} (planted d = {SUBTLE_SHIFT_SD}, measured about "
        f"{SUBTLE_D}).",
    )


ASSAYS = {"nfkb": _nfkb, "golgi": _golgi, "dose": _dose, "subtle": _subtle}


def get_assay(name: str) -> Assay:
    """The assay called `name`; raises with the list of known assays otherwise."""
    try:
        return ASSAYS[name]()
    except KeyError:
        known = ", ".join(sorted(ASSAYS))
        raise PhenexplainError(f"unknown assay {name!r}; choose one of: {known}") from None
