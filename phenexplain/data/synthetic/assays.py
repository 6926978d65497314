"""Synthetic assays: channels, conditions and the planted phenotype of each condition.

Each condition draws its cells from a `CellModel`; the difference between a treated condition's
model and the control's model *is* the planted phenotype. `Assay.ground_truth()` writes the planted
values and, per condition, the expected direction of each measurable effect relative to the control.

Units: areas in px^2, intensities in expected photons per pixel before camera gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from phenexplain.errors import PhenexplainError

STAINS = {
    "dna": "nuclear DNA stain (DAPI/Hoechst-like) with chromatin texture",
    "nfkb": "translocating transcription factor (NF-kB p65-like): cytoplasmic at rest, nuclear when active",
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
    nc_ratio_sigma: float = 0.25  # log-normal spread of that ratio
    golgi_compact: bool = True  # True: perinuclear cluster; False: scattered spots
    golgi_spots: float = 4.0  # mean number of golgi spots per cell (Poisson)
    golgi_spot_sigma: float = 2.4  # golgi spot Gaussian sigma, px
    relative_density: float = 1.0  # cells per field relative to the assay's density


@dataclass(frozen=True)
class Condition:
    """One experimental condition: its name (a folder- and label-safe string) and cell model."""

    name: str
    model: CellModel
    treatment: str
    concentration_um: float = 0.0
    expected: dict[str, str] = field(default_factory=dict)  # feature -> "up" | "down"


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
        }


def _hill(concentration: float, ec50: float, slope: float = 1.0) -> float:
    """Fractional response of a Hill curve, 0 at zero dose and 1 at saturation."""
    return concentration**slope / (concentration**slope + ec50**slope)


def _nfkb() -> Assay:
    base = CellModel()
    return Assay(
        name="nfkb",
        description="NF-kB translocation: TNF-like treatment moves the marker from cytoplasm to nucleus.",
        channels=(Channel("DNA", "dna"), Channel("NFkB", "nfkb")),
        control="control",
        conditions=(
            Condition("control", base, treatment="none"),
            Condition(
                "TNF",
                replace(base, nc_ratio=2.2),
                treatment="TNF",
                concentration_um=0.0012,
                expected={"nc_ratio": "up"},
            ),
        ),
        notes="Planted: the median nucleus/cytoplasm NFkB concentration ratio (0.45 -> 2.2).",
    )


def _golgi() -> Assay:
    base = CellModel(golgi_compact=True, golgi_spots=4.0, golgi_spot_sigma=2.4)
    return Assay(
        name="golgi",
        description="Golgi dispersal: nocodazole-like treatment splits the compact perinuclear golgi "
        "into many small scattered spots.",
        channels=(Channel("DNA", "dna"), Channel("Golgi", "golgi")),
        control="DMSO",
        conditions=(
            Condition("DMSO", base, treatment="DMSO"),
            Condition(
                "nocodazole",
                replace(base, golgi_compact=False, golgi_spots=22.0, golgi_spot_sigma=1.1),
                treatment="nocodazole",
                concentration_um=10.0,
                expected={"spot_count": "up", "spot_area": "down"},
            ),
        ),
        notes="Planted: golgi layout (compact -> scattered), spots per cell (4 -> 22) and spot "
        "sigma (2.4 -> 1.1 px).",
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
            )
        )
    return Assay(
        name="dose",
        description="Dose series of a cytochalasin-like compound: cytoplasm contracts and cells are "
        "lost (toxicity) monotonically with concentration.",
        channels=(Channel("DNA", "dna"), Channel("Tubulin", "tubulin"), Channel("Actin", "actin")),
        control="DMSO",
        conditions=tuple(conditions),
        notes=f"Planted: Hill response h = c / (c + {DOSE_EC50_UM} uM); cell area x (1 - 0.45 h), "
        "cell density x (1 - 0.6 h). Effects are monotonic in dose.",
    )


SUBTLE_D = 0.4


def _subtle() -> Assay:
    base = CellModel()
    shifted = replace(base, nucleus_area=base.nucleus_area + SUBTLE_D * base.nucleus_area_sd)
    return Assay(
        name="subtle",
        description="Two cell lines whose only difference is a small shift of nuclear area "
        f"(Cohen's d = {SUBTLE_D}), invisible by eye under cell-to-cell variability.",
        channels=(Channel("DNA", "dna"), Channel("Actin", "actin")),
        control="corrected",
        conditions=(
            Condition("corrected", base, treatment="isogenic control"),
            Condition("mutant", shifted, treatment="mutant", expected={"nucleus_area": "up"}),
        ),
        notes=f"Planted: mean nuclear area {base.nucleus_area:g} -> {shifted.nucleus_area:g} px^2 "
        f"with sd {base.nucleus_area_sd:g} (d = {SUBTLE_D}).",
    )


ASSAYS = {"nfkb": _nfkb, "golgi": _golgi, "dose": _dose, "subtle": _subtle}


def get_assay(name: str) -> Assay:
    """The assay called `name`; raises with the list of known assays otherwise."""
    try:
        return ASSAYS[name]()
    except KeyError:
        known = ", ".join(sorted(ASSAYS))
        raise PhenexplainError(f"unknown assay {name!r}; choose one of: {known}") from None
