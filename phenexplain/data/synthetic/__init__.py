"""Procedural fluorescence plates with planted phenotypes (`phenexplain synth`).

`assays` declares each assay (channels, conditions, planted cell-parameter distributions and the
expected direction of every effect); `shapes` renders soft star-convex objects; `field` composes
one field of view as a camera records it; `plate` lays out plates and wells, generates fields in
parallel and writes them atomically with their ground truth.
"""

from phenexplain.data.synthetic.assays import ASSAYS, Assay, CellModel, Condition, get_assay
from phenexplain.data.synthetic.plate import generate_plates

__all__ = ["ASSAYS", "Assay", "CellModel", "Condition", "generate_plates", "get_assay"]
