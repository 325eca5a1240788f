"""An image table (:mod:`attok_monai.data.table`) as a bundle's training/evaluation data source, with its split.

A bundle reads its table once (:func:`table_splits`) and takes its parts from the result (:func:`select_split`).
The split comes from, in this order:

1. the table spec's ``split_file`` when that file exists (e.g. HAM10000's ``splits.csv``): it always wins;
2. the spec's ``split_column`` when the table has that column and at least one row fills it (rows left empty are in
   no part and counted as ``unassigned``);
3. otherwise a grouped, stratified split (:func:`~attok_monai.data.splits.grouped_stratified_split`: no group in two
   parts) computed with ``fractions`` and ``seed`` and written to ``split_file`` (the run folder), so the run records
   exactly what it trained on and a later evaluation can reuse it.

The split's source and counts are logged (logger ``attok_monai.data``) and returned by :func:`split_params` as flat
MLflow params (no ids, no group values).

Example (a bundle config)::

    "table": "$attok_monai.data.table_source.table_splits(@vocabulary, @table_spec, split_file=@split_file,
              fractions=@split_fractions, seed=@seed)",
    "train#datalist": "$attok_monai.data.table_source.select_split(@table, 'train', limit=@limit_train)"
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.splits import SplitInfo
from attok_monai.data.table import TableResult, TableSpec, load_table, read_table
from attok_monai.errors import InputError

__all__ = ["select_split", "split_params", "table_splits"]

logger = logging.getLogger("attok_monai.data")

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.2}


def _table_columns(spec: TableSpec) -> list[str]:
    if spec.table is None:
        return []
    path = Path(spec.table)
    if path.suffix.lower() in (".csv", ".tsv", ".tab", ".txt"):
        sep = spec.sep or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
        if not path.is_file():
            raise FileNotFoundError(f"image table not found: {path}")
        try:
            return list(pd.read_csv(path, sep=sep, nrows=0, dtype=str).columns)
        except pd.errors.EmptyDataError:
            raise InputError(f"image table {path} is empty; expected a header line and one row per image.") from None
    return list(read_table(path, spec.sep).columns)


def _column_split_info(items: Sequence[Mapping[str, Any]], source: str) -> SplitInfo:
    """A :class:`SplitInfo` describing a split given by a table column (for logging and MLflow params)."""
    counts: dict[str, int] = dict(Counter(it["split"] for it in items if it.get("split")))
    class_counts: dict[str, dict[str, int]] = defaultdict(dict)
    where: dict[str, set[str]] = defaultdict(set)
    for it in items:
        s = it.get("split")
        if not s:
            continue
        labels = it.get("label")
        for lab in labels if isinstance(labels, list) else [labels]:
            class_counts[s][str(lab)] = class_counts[s].get(str(lab), 0) + 1
        if it.get("group") is not None:
            where[it["group"]].add(s)
    return SplitInfo(
        assignment={str(it["id"]): it["split"] for it in items if it.get("split")},
        counts=counts,
        class_counts={s: dict(sorted(c.items())) for s, c in class_counts.items()},
        source=source,
        unassigned=sum(1 for it in items if not it.get("split")),
        groups_in_several_splits=sum(1 for s in where.values() if len(s) > 1),
    )


def table_splits(
    vocabulary: AttributeVocabulary | Mapping[str, Any] | str | os.PathLike,
    spec: TableSpec | Mapping[str, Any],
    split_file: str | os.PathLike | None = None,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    on_error: str = "raise",
    report_path: str | os.PathLike | None = None,
) -> TableResult:
    """Read the whole table once, with every item's ``"split"`` set (see the module docstring for the order).

    Args:
        vocabulary: the bundle's vocabulary (raw dataset labels are mapped with ``index_of_label``).
        spec: a :class:`~attok_monai.data.table.TableSpec` or a mapping of its fields (bundle config). Its
            ``split_file`` is a *given* split (read, never written); its ``split_fractions`` are ignored.
        split_file: where a *computed* split is written (CSV ``id,split`` or ``.json``); ``None``: not written.
        fractions: ``{split: fraction}`` of a computed split (default train 0.8 / val 0.2).
        seed: seed of a computed split.
        on_error, report_path: as in :func:`~attok_monai.data.table.load_table`.

    Returns:
        the :class:`~attok_monai.data.table.TableResult` of all rows; ``result.split_info`` describes the split
        (``source`` ``"file"``, ``"column"`` or ``"computed"``).

    Raises:
        FileNotFoundError: the table is absent. DatasetTableError: bad rows (with ``on_error="raise"``).
    """
    spec = TableSpec.coerce(spec, split_fractions=None)
    kw = dict(on_error=on_error, report_path=report_path)
    given = spec.split_file is not None and Path(spec.split_file).is_file()
    if spec.split_file is not None and not given:
        logger.warning("split file %s not found: the split is taken from the table or computed", spec.split_file)
    if given:
        result = load_table(vocabulary, None, spec=spec, **kw)
    else:
        spec = replace(spec, split_file=None)
        has_column = spec.split_column is not None and spec.split_column in _table_columns(spec)
        result = None
        if has_column:
            result = load_table(vocabulary, None, spec=spec, **kw)
            if any(it["split"] for it in result.items):
                result.split_info = _column_split_info(result.items, "column")
            else:
                result = None  # the column is there but empty: compute
        if result is None:
            computed = replace(
                spec, split_column=None, split_file=None if split_file is None else str(split_file),
                split_fractions=dict(fractions or DEFAULT_FRACTIONS), split_seed=int(seed),
            )
            if split_file is not None:
                Path(split_file).parent.mkdir(parents=True, exist_ok=True)
            result = load_table(vocabulary, None, spec=computed, **kw)
    info = result.split_info
    if info is not None and info.source == "file":
        # a given file may leak groups or miss rows: count it the same way as a column split
        checked = _column_split_info(result.items, "file")
        info.groups_in_several_splits, info.unassigned = checked.groups_in_several_splits, checked.unassigned
    logger.info(
        "table %s: %d rows, split from %s%s: %s (unassigned %d, groups in several parts %d)",
        spec.table, result.counts.get("rows", 0), info.source if info else "nowhere",
        f" ({info.path})" if info is not None and info.path else "",
        info.counts if info else {}, info.unassigned if info else 0, info.groups_in_several_splits if info else 0,
    )
    if info is not None and info.groups_in_several_splits:
        logger.warning("%d group(s) have images in more than one split: the split leaks", info.groups_in_several_splits)
    return result


def select_split(result: TableResult, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The items of one split of a :func:`table_splits` result (the first ``limit`` of them, for quick runs).

    Raises:
        ValueError: the table has no item in that split (the message lists the splits it has).
    """
    items = [it for it in result.items if it["split"] == split]
    if not items:
        have = sorted({it["split"] for it in result.items if it["split"]})
        raise InputError(f"the image table has no rows in split {split!r}; it has: {have or 'no splits'}.")
    return items if limit is None else items[: int(limit)]


def split_params(result: TableResult, prefix: str = "split") -> dict[str, Any]:
    """Flat MLflow params of the split: source, seed, counts per part, unassigned rows, leaking groups and the
    class counts per part (as ``<prefix>_classes_<part>`` = ``"label:count,..."``); no ids, no group values."""
    info = result.split_info
    if info is None:
        return {f"{prefix}_source": "none"}
    out = info.to_params(prefix)
    if info.path:
        out[f"{prefix}_file"] = os.path.basename(info.path)
    for part, counts in info.class_counts.items():
        out[f"{prefix}_classes_{part}"] = ",".join(f"{k}:{v}" for k, v in counts.items())
    return out
