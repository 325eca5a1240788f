"""A DICOM ingest manifest (``python -m attok_monai.ingest``) as a bundle's training/evaluation data source."""

from __future__ import annotations

import os
from typing import Any

from attok_monai.data.manifest import load_manifest, read_manifest
from attok_monai.data.splits import grouped_stratified_split
from attok_monai.errors import InputError

__all__ = ["manifest_datalist", "split_is_computed"]


def manifest_datalist(
    manifest: str | os.PathLike, vocabulary: Any, split: str | None = "train",
    fractions: dict[str, float] | None = None, seed: int = 0, require_label: bool = True,
) -> list[dict[str, Any]]:
    """One split of a manifest as a data list.

    Items with a ``split`` field are selected by it. Otherwise the split is computed by
    :func:`grouped_stratified_split` over the pseudonymised patient key (``group``), so no patient is in two parts;
    it is deterministic for ``seed`` and ``fractions`` (default train 0.8 / val 0.2). ``split=None`` returns all.

    Raises:
        ValueError: a manifest without labelled rows, or a split name that it does not have.
    """
    items = load_manifest(manifest, vocabulary=vocabulary, require_label=require_label)
    if not items:
        raise InputError(f"manifest {manifest} has no labelled rows.")
    if split is None:
        return items
    if all("split" in it and it["split"] for it in items):
        chosen = [it for it in items if it["split"] == split]
        if not chosen:
            raise InputError(f"manifest {manifest} has no rows of split {split!r}.")
        return chosen
    parts = grouped_stratified_split(
        [it["label"] for it in items], [it.get("group") for it in items], fractions or {"train": 0.8, "val": 0.2}, seed
    )
    if split not in parts:
        raise InputError(f"split {split!r} is not one of {sorted(parts)} for manifest {manifest}.")
    return [items[i] | {"split": split} for i in parts[split]]


def split_is_computed(manifest: str | os.PathLike) -> bool:
    """Whether :func:`manifest_datalist` computes the manifest's split (some row has no ``split``), rather than reading
    it from the rows."""
    return not all(row.get("split") for row in read_manifest(manifest))
