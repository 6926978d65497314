"""Can a small CNN tell the conditions apart? The paper's check (Supplementary Table 1, Methods).

A `ConditionCNN` (four convolutional layers) is trained with `train_condition_cnn` for 10 epochs
on each of k folds (4 by default) and tested on the held-out fold; the mean and standard deviation
(ddof = 1) of the test accuracy over the folds are reported. Folds are grouped, so all crops of a
group (a well by default: plate and well together, since well names repeat across plates; or a
plate, a slide, any column of the manifest) sit on one side only: otherwise the network could
recognise a well's look rather than its condition. Folds are also stratified by condition
(`StratifiedGroupKFold`).

Two accuracies per fold: per image, and per group, where a group's prediction is the condition
with the highest mean softmax probability over its test crops (mean probability, not majority
vote: it keeps the confidence of each crop). A group holding several conditions has no single
true label and is left out of the group accuracy (NaN when no group qualifies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.metrics.extractors import ConditionCNN, train_condition_cnn
from phenexplain.nets.ops import from_uint8
from phenexplain.training.data import TrainingData

FOLDS = 4
EPOCHS = 10


@dataclass(frozen=True)
class Discriminability:
    """Cross-validated accuracy of a condition CNN; `folds` holds one row per fold."""

    folds: pd.DataFrame  # fold, train_images, test_images, test_groups, accuracy, group_accuracy
    group: str
    aggregation: str = "mean probability"

    @property
    def accuracy_mean(self) -> float:
        return float(self.folds["accuracy"].mean())

    @property
    def accuracy_std(self) -> float:
        return float(self.folds["accuracy"].std(ddof=1))

    @property
    def group_accuracy_mean(self) -> float:
        return float(self.folds["group_accuracy"].mean())

    @property
    def group_accuracy_std(self) -> float:
        return float(self.folds["group_accuracy"].std(ddof=1))

    def as_dict(self) -> dict:
        """Summary and per-fold numbers as plain Python values (NaN where undefined)."""
        return {
            "group": self.group,
            "aggregation": self.aggregation,
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "group_accuracy_mean": self.group_accuracy_mean,
            "group_accuracy_std": self.group_accuracy_std,
            "folds": self.folds.to_dict(orient="records"),
        }


def grouped_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int = FOLDS, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) per fold; a group never sits on both sides."""
    count = len(np.unique(groups))
    if folds < 2 or count < folds:
        raise PhenexplainError(
            f"{folds}-fold cross-validation needs at least {max(folds, 2)} groups, got {count}; "
            "lower `folds` or group by a finer column"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def _probabilities(model: ConditionCNN, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities [N, K] of uint8 images [N, C, H, W]."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            logits = model(from_uint8(images[start : start + batch]))
            out.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(out)


def _group_accuracy(probabilities: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Accuracy of the mean-probability prediction per group with a single true label."""
    hits = []
    for g in np.unique(groups):
        members = groups == g
        truth = np.unique(labels[members])
        if len(truth) == 1:
            hits.append(probabilities[members].mean(axis=0).argmax() == truth[0])
    return float(np.mean(hits)) if hits else np.nan


def cross_validate(
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    folds: int = FOLDS,
    epochs: int = EPOCHS,
    seed: int = 0,
    batch: int = 64,
    group_name: str = "group",
) -> Discriminability:
    """Grouped k-fold accuracy of a condition CNN on uint8 images [N, C, H, W], labels [N] 0..K-1.

    Deterministic for a seed: fold f trains with seed `seed + f`.
    """
    images, labels, groups = np.asarray(images), np.asarray(labels), np.asarray(groups)
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or not len(images) == len(labels) == len(groups)
    ):
        raise PhenexplainError(
            f"expected uint8 images [N, C, H, W] with N labels and N groups, got images "
            f"{images.dtype} {images.shape}, {len(labels)} labels, {len(groups)} groups"
        )
    conditions = int(labels.max()) + 1
    rows = []
    for fold, (train, test) in enumerate(grouped_folds(labels, groups, folds, seed)):
        model, _ = train_condition_cnn(
            images[train], labels[train], conditions, epochs=epochs, seed=seed + fold, batch=batch
        )
        probabilities = _probabilities(model, images[test])
        rows.append(
            {
                "fold": fold,
                "train_images": len(train),
                "test_images": len(test),
                "test_groups": len(np.unique(groups[test])),
                "accuracy": float((probabilities.argmax(1) == labels[test]).mean()),
                "group_accuracy": _group_accuracy(probabilities, labels[test], groups[test]),
            }
        )
    return Discriminability(pd.DataFrame(rows), group=group_name)


def crop_groups(crops: CropSet, group: str = "well") -> np.ndarray:
    """Group key per crop: ``well`` is plate and well together; any other manifest column as is."""
    manifest = crops.manifest
    if group == "well":
        return (manifest["plate"].astype(str) + "/" + manifest["well"].astype(str)).to_numpy()
    if group not in manifest.columns:
        raise PhenexplainError(
            f"no column {group!r} to group by; choose 'well' or one of {list(manifest.columns)}"
        )
    return manifest[group].astype(str).to_numpy()


def discriminability(
    crops: CropSet,
    *,
    conditions: Sequence[str] | None = None,
    group: str = "well",
    resolution: int | None = None,
    folds: int = FOLDS,
    epochs: int = EPOCHS,
    seed: int = 0,
) -> Discriminability:
    """The paper's CNN check on a crop set, optionally on a subset of `conditions`.

    `resolution` box-downsamples the crops first (a power of two dividing the crop size).
    """
    data = TrainingData(crops, resolution=resolution)
    names = crops.manifest["condition"].to_numpy()
    chosen = sorted(set(names)) if conditions is None else sorted(conditions)
    unknown = sorted(set(chosen) - set(names))
    if unknown or len(chosen) < 2:
        raise PhenexplainError(
            f"choose at least two of the crop set's conditions {sorted(set(names))}; got {chosen}"
        )
    index = np.flatnonzero(np.isin(names, chosen))
    images = np.stack([data.image(int(i)) for i in index])
    labels = np.searchsorted(chosen, names[index])
    groups = crop_groups(crops, group)[index]
    return cross_validate(
        images, labels, groups, folds=folds, epochs=epochs, seed=seed, group_name=group
    )
