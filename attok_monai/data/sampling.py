"""Class-imbalance helpers: inverse-frequency sample weights and a balanced ``WeightedRandomSampler``.

With weights ``1 / count(class)`` every class is drawn equally often in expectation. Multi-label samples (a list of
classes) get the mean of their classes' weights; samples without a label form their own class.

Example::

    sampler = class_balanced_sampler([it["label"] for it in train_items], seed=0)
    loader = monai.data.DataLoader(train_ds, batch_size=32, sampler=sampler)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["class_balanced_sampler", "class_balanced_weights", "class_frequencies"]

_NONE = "__no_label__"


def _keys(label: Any) -> list[Any]:
    if label is None:
        return [_NONE]
    if isinstance(label, torch.Tensor):
        label = label.tolist()
    if isinstance(label, np.ndarray):
        label = label.tolist()
    if isinstance(label, (list, tuple)):
        return [x.item() if hasattr(x, "item") else x for x in label] or [_NONE]
    return [label.item() if hasattr(label, "item") else label]


def class_frequencies(labels: Sequence[Any]) -> dict[Any, int]:
    """``{class: number of samples that carry it}`` (multi-label samples count once per class)."""
    counts: Counter = Counter()
    for lab in labels:
        counts.update(set(_keys(lab)))
    return dict(counts)


def class_balanced_weights(labels: Sequence[Any]) -> torch.Tensor:
    """Per-sample weights (N,) float64: ``1 / count(class)``; multi-label: the mean over the sample's classes.

    Args:
        labels: one label per sample: int/str class, a list of classes, or ``None``.

    Raises:
        ValueError: ``labels`` is empty.
    """
    if len(labels) == 0:
        raise ValueError("class_balanced_weights: no labels given.")
    freq = class_frequencies(labels)
    w = [float(np.mean([1.0 / freq[k] for k in set(_keys(lab))])) for lab in labels]
    return torch.tensor(w, dtype=torch.float64)


def class_balanced_sampler(
    labels: Sequence[Any], num_samples: int | None = None, seed: int = 0, replacement: bool = True
) -> WeightedRandomSampler:
    """A :class:`torch.utils.data.WeightedRandomSampler` drawing classes equally often (inverse-frequency weights).

    Args:
        labels: as in :func:`class_balanced_weights`.
        num_samples: draws per epoch (default: ``len(labels)``).
        seed: seeds the sampler's own generator (the draw order is the same for a seed).
        replacement: draw with replacement (default; needed to over-sample rare classes).
    """
    weights = class_balanced_weights(labels)
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        weights, num_samples=int(num_samples or len(labels)), replacement=replacement, generator=generator
    )
