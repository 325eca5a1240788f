"""Sampling helpers: inverse-frequency class weights and a class-balanced ``WeightedRandomSampler``; per-group shares
of the draws (a generalist's mixture of sources).

With weights ``1 / count(class)`` every class is drawn equally often in expectation. Multi-label samples (a list of
classes) get the mean of their classes' weights; samples without a label form their own class. With group shares,
group ``g`` gets ``shares[g] / sum(shares)`` of the draws, spread evenly over its samples.

Example::

    sampler = class_balanced_sampler([it["label"] for it in train_items], seed=0)
    loader = monai.data.DataLoader(train_ds, batch_size=32, sampler=sampler)
    sampler = group_share_sampler(["fundus", "fundus", "xray"], {"fundus": 1, "xray": 1}, seed=0)  # half each
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["class_balanced_sampler", "class_balanced_weights", "class_frequencies", "group_share_sampler",
           "group_share_weights"]

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


def group_share_weights(groups: Sequence[str], shares: Mapping[str, float]) -> torch.Tensor:
    """Per-sample weights (N,) float64 such that group ``g`` holds ``shares[g] / sum(shares)`` of the total weight,
    split evenly over its samples (``shares[g] / count(g)`` each, normalised).

    Args:
        groups: the group of each sample.
        shares: a positive share for every group that occurs in ``groups`` (and no other).

    Raises:
        ValueError: ``groups`` is empty; a group has no share, a share names no group, or a share is not a positive
            finite number (the message names it).
    """
    if len(groups) == 0:
        raise ValueError("group_share_weights: no samples given.")
    counts = Counter(groups)
    missing = sorted(set(counts) - set(shares))
    unknown = sorted(set(shares) - set(counts))
    if missing or unknown:
        raise ValueError(
            "group_share_weights: shares must name exactly the groups "
            f"{sorted(counts)}; " + "; ".join(
                ([f"no share for {missing}"] if missing else []) + ([f"no samples for {unknown}"] if unknown else []))
            + "."
        )
    for g, v in shares.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"group_share_weights: the share of {g!r} must be a positive number, got {v!r}.")
    total = float(sum(shares.values()))
    return torch.tensor([shares[g] / total / counts[g] for g in groups], dtype=torch.float64)


def group_share_sampler(
    groups: Sequence[str], shares: Mapping[str, float], num_samples: int | None = None, seed: int = 0,
) -> WeightedRandomSampler:
    """A :class:`torch.utils.data.WeightedRandomSampler` (with replacement) drawing each group its share
    (:func:`group_share_weights`); ``num_samples`` draws per epoch (default ``len(groups)``); ``seed`` seeds the
    sampler's own generator."""
    weights = group_share_weights(groups, shares)
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(weights, num_samples=int(num_samples or len(groups)), replacement=True,
                                 generator=generator)
