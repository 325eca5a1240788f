"""Grouped, stratified, deterministic train/val(/test) splits, and split files that make them reproducible.

Images of one patient (or one lesion, or one original tile and its rotated copies) must all sit in the same part,
or the validation numbers measure memory, not generalisation. :func:`grouped_stratified_split` assigns whole groups
to parts while keeping the class proportions of every part close to those of the whole set;
:func:`make_or_load_split` makes the choice durable: a given split file always wins, otherwise the computed split is
written (atomically) to the split file with its seed and counts, so that a later evaluation reads the same split.

A split file is a CSV (``id,split``; leading ``#`` lines hold metadata as JSON), or a JSON file
``{"seed": ..., "counts": ..., "assignment": {id: split}}``. Files such as HAM10000's ``splits.csv``
(``image_id,split``) are read as they are. Split files hold sample ids and split names only: never group values
(patient or lesion ids).

Example::

    parts = grouped_stratified_split(labels=[0, 0, 1, 1], groups=["a", "a", "b", "c"], fractions={"train": .5, "val": .5})
    # {"train": [...], "val": [...]}: indices into labels; "a"'s two images in one part
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attok_monai.errors import InputError
from attok_monai.fileio import atomic_write_text

__all__ = [
    "DEFAULT_FRACTIONS",
    "SplitInfo",
    "cross_validation_part",
    "grouped_stratified_split",
    "make_or_load_split",
    "read_split_file",
    "write_split_file",
]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.2}
_NO_LABEL = "__no_label__"


def _normalise_fractions(fractions: Mapping[str, float] | None) -> dict[str, float]:
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not fractions:
        raise InputError("split fractions are empty; give e.g. {'train': 0.8, 'val': 0.2}.")
    for name, f in fractions.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"split fractions: split name {name!r} must be a non-empty string.")
        if not np.isfinite(f) or f < 0:
            raise InputError(f"split fractions: fraction of {name!r} is {f!r}; expected a number >= 0.")
    total = float(sum(fractions.values()))
    if total <= 0:
        raise InputError(f"split fractions {fractions} sum to 0; expected a positive sum.")
    return {k: float(v) / total for k, v in fractions.items()}


def _stratum(labels: Sequence[Any]) -> Hashable:
    """The majority label of a group's samples (ties: the smallest by string order); multi-label samples vote for
    each of their labels; a group without any label gets its own stratum."""
    votes: Counter = Counter()
    for lab in labels:
        if isinstance(lab, (list, tuple, np.ndarray)):
            votes.update(int(x) if isinstance(x, (int, np.integer)) else x for x in lab)
        elif lab is not None:
            votes[int(lab) if isinstance(lab, (int, np.integer)) else lab] += 1
    if not votes:
        return _NO_LABEL
    top = max(votes.values())
    return min((k for k, v in votes.items() if v == top), key=lambda k: str(k))


def grouped_stratified_split(
    labels: Sequence[Any],
    groups: Sequence[Hashable | None] | None = None,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Split sample indices into parts so that no group is in two parts and class proportions are kept.

    Each group is stratified on its majority label. Within each stratum the groups are shuffled with ``seed``, then
    placed largest first, each into the part whose share of that stratum is furthest below its target
    (``fraction * samples placed so far``, counted over the strata placed before it too). The result depends only on the inputs and the seed.

    Args:
        labels: one label per sample (N,): int/str class, or a list of classes for multi-label samples.
        groups: one group key per sample (N,) (patient/lesion id); ``None`` (or a ``None`` entry) makes a sample its
            own group.
        fractions: ``{split name: fraction}``, normalised to sum 1; default ``{"train": 0.8, "val": 0.2}``.
        seed: random seed.

    Returns:
        ``{split name: sorted list of sample indices}`` with every split name present (possibly empty).

    Raises:
        ValueError: if ``groups`` and ``labels`` differ in length, or the fractions are invalid.
    """
    fr = _normalise_fractions(fractions)
    n = len(labels)
    if groups is not None and len(groups) != n:
        raise ValueError(f"grouped_stratified_split: {len(groups)} groups for {n} labels; expected one per sample.")
    members: dict[Hashable, list[int]] = {}
    for i in range(n):
        g = None if groups is None else groups[i]
        key = ("__single__", i) if g is None or (isinstance(g, float) and np.isnan(g)) else ("g", g)
        members.setdefault(key, []).append(i)
    strata: dict[Hashable, list[list[int]]] = defaultdict(list)
    for idx in members.values():  # insertion order: first appearance, independent of the group values
        strata[_stratum([labels[i] for i in idx])].append(idx)

    rng = np.random.default_rng(seed)
    names = list(fr)
    out: dict[str, list[int]] = {name: [] for name in names}
    total = 0
    filled = dict.fromkeys(names, 0)
    for key in sorted(strata, key=lambda k: (type(k).__name__, str(k))):
        glist = strata[key]
        order = rng.permutation(len(glist))
        glist = sorted((glist[j] for j in order), key=len, reverse=True)  # stable: ties keep the shuffled order
        total += sum(len(g) for g in glist)
        for g in glist:
            # the part furthest below its target over the strata placed so far (so the remainder of one stratum is
            # made up in the next: small strata still feed small parts); ties go to the larger fraction, then to the
            # earlier name
            best = max(names, key=lambda s: (fr[s] * total - filled[s], fr[s], -names.index(s)))
            filled[best] += len(g)
            out[best].extend(g)
    return {name: sorted(idx) for name, idx in out.items()}


def cross_validation_part(
    datalist: Sequence[Mapping[str, Any]], folds: int, fold: int, part: str, seed: int = 0
) -> list[Mapping[str, Any]]:
    """One part of a ``folds``-fold cross-validation of a data list: ``"val"`` is fold ``fold``, ``"train"`` the
    other ``folds - 1`` folds.

    The folds come from :func:`grouped_stratified_split` with ``folds`` equal fractions over the items' ``"label"``
    and ``"group"`` (an item without a group is its own group), so class proportions are kept in every fold and no
    group is in two folds. They depend only on the data list and ``seed``, not on a run's seed: every run that names
    the same ``folds`` and ``fold`` trains and scores on the same images. Item order is kept.

    Args:
        datalist: the items of the part that is cross-validated (usually the training split), each with ``"label"``.
        folds: the number of folds; ``0`` turns cross-validation off and returns ``datalist`` unchanged for
            ``"train"`` (``"val"`` then has no meaning and is refused, and so is a ``fold`` other than 0).
        fold: which fold is held out, ``0 <= fold < folds``.
        part: ``"train"`` or ``"val"``.
        seed: the seed of the fold assignment (fixed by default, so folds pair across runs).

    Returns:
        the items of the part (a new list; the items themselves are not copied).

    Raises:
        ValueError: a bad ``folds``/``fold``/``part``, more folds than items, or an item without ``"label"``.
    """
    if part not in ("train", "val"):
        raise InputError(f"cross_validation_part: part {part!r}; expected 'train' or 'val'.")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 0 or folds == 1:
        raise InputError(f"cv_folds: {folds!r}; expected 0 (off) or an integer >= 2.")
    if folds == 0:
        if fold != 0:
            raise InputError(f"cv_fold: {fold!r} with cv_folds 0 (cross-validation off); set cv_folds too, e.g. 5.")
        if part == "val":
            raise InputError("cross_validation_part: part 'val' with cv_folds 0 (cross-validation is off).")
        return list(datalist)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds:
        raise InputError(f"cv_fold: {fold!r}; expected an integer in [0, {folds - 1}] (cv_folds is {folds}).")
    if len(datalist) < folds:
        raise InputError(f"cv_folds: {folds} folds of {len(datalist)} items; expected at least one item per fold.")
    missing = [i for i, it in enumerate(datalist) if "label" not in it]
    if missing:
        raise InputError(f"cross_validation_part: item {missing[0]} has no 'label'; the folds are stratified by label.")
    names = [f"fold{k}" for k in range(folds)]
    parts = grouped_stratified_split(
        [it["label"] for it in datalist], [it.get("group") for it in datalist], dict.fromkeys(names, 1.0), seed=seed
    )
    held = set(parts[names[fold]])
    return [it for i, it in enumerate(datalist) if (i in held) == (part == "val")]


# ---------------------------------------------------------------------------------------------------------- files


def write_split_file(
    path: str | os.PathLike, assignment: Mapping[str, str], metadata: Mapping[str, Any] | None = None
) -> None:
    """Write ``{sample id: split name}`` atomically (temp file in the same folder + rename).

    ``.json`` files get ``{**metadata, "assignment": {...}}``; other suffixes a CSV ``id,split`` whose first line is
    ``# attok-monai split <metadata as JSON>``. Ids containing a comma, quote or newline are quoted (CSV rules).
    """
    import csv
    import io

    path = Path(path)
    meta = dict(metadata or {})
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps({**meta, "assignment": dict(assignment)}, indent=2))
        return
    buf = io.StringIO()
    buf.write("# attok-monai split " + json.dumps(meta, sort_keys=True) + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "split"])
    for k, v in assignment.items():
        w.writerow([k, v])
    atomic_write_text(path, buf.getvalue())


def read_split_file(
    path: str | os.PathLike, id_column: str | None = None, split_column: str = "split"
) -> tuple[dict[str, str], dict[str, Any]]:
    """Read a split file: returns ``({sample id: split name}, metadata)``.

    CSV/TSV: the id column is ``id_column``, else ``id``, else the first column that is not ``split_column``;
    leading ``# attok-monai split {...}`` lines give the metadata. JSON: ``{"assignment": {id: split}, ...}`` or
    ``{"splits": {split: [ids]}}``.

    Raises:
        FileNotFoundError: the file is absent.
        ValueError: naming the file and the problem (missing column, an id given two different splits, empty ids).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    meta: dict[str, Any] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"split file {path}: not valid JSON ({e}).") from e
        if isinstance(data, Mapping) and isinstance(data.get("assignment"), Mapping):
            pairs = [(str(k), str(v)) for k, v in data["assignment"].items()]
        elif isinstance(data, Mapping) and isinstance(data.get("splits"), Mapping):
            pairs = [(str(i), str(s)) for s, ids in data["splits"].items() for i in ids]
        else:
            raise InputError(f"split file {path}: expected an 'assignment' mapping or a 'splits' mapping.")
        meta = {k: v for k, v in data.items() if k not in ("assignment", "splits")}
    else:
        skip = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#"):
                    break
                skip += 1
                body = line[1:].strip()
                if body.startswith("attok-monai split"):
                    try:
                        meta.update(json.loads(body[len("attok-monai split") :].strip() or "{}"))
                    except json.JSONDecodeError:
                        pass
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        df = pd.read_csv(path, sep=sep, skiprows=skip, dtype=str, keep_default_na=False, na_filter=False)
        if split_column not in df.columns:
            raise InputError(f"split file {path}: no column {split_column!r}; columns are {list(df.columns)}.")
        if id_column is None:
            others = [c for c in df.columns if c != split_column]
            if not others:
                raise InputError(f"split file {path}: no id column besides {split_column!r}.")
            id_column = "id" if "id" in others else others[0]
        if id_column not in df.columns:
            raise InputError(f"split file {path}: no id column {id_column!r}; columns are {list(df.columns)}.")
        pairs = list(zip(df[id_column].str.strip(), df[split_column].str.strip()))
    assignment: dict[str, str] = {}
    for line_no, (i, s) in enumerate(pairs, start=1):
        if not i or not s:
            raise InputError(f"split file {path}: entry {line_no} has an empty id or split ({i!r}, {s!r}).")
        if assignment.get(i, s) != s:
            raise InputError(f"split file {path}: id {i!r} is given two splits ({assignment[i]!r} and {s!r}).")
        assignment[i] = s
    return assignment, meta


# ---------------------------------------------------------------------------------------------------------- make/load
@dataclass
class SplitInfo:
    """The split of one table.

    Attributes:
        assignment: ``{sample id: split name}`` for the table's samples found in the split.
        counts: ``{split name: number of samples}``.
        class_counts: ``{split name: {label: number of samples}}`` (multi-label samples count once per label).
        source: ``"file"`` (read from an existing split file) or ``"computed"``.
        path: the split file (``None`` when computed without a file).
        seed: the seed that made the split (``None`` when unknown, e.g. a hand-made split file).
        fractions: the requested fractions, when known.
        unassigned: number of table samples that the split file does not list.
        groups_in_several_splits: number of groups with samples in more than one split (0 for computed splits;
            a hand-made file may leak groups, which is reported here, never hidden).
    """

    assignment: dict[str, str]
    counts: dict[str, int]
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = "computed"
    path: str | None = None
    seed: int | None = None
    fractions: dict[str, float] | None = None
    unassigned: int = 0
    groups_in_several_splits: int = 0

    def apply(self, items: Sequence[Mapping[str, Any]], id_key: str = "id", split_key: str = "split") -> list[dict]:
        """Copies of ``items`` with ``split_key`` set from the assignment (``None`` for unlisted ids)."""
        return [{**it, split_key: self.assignment.get(str(it[id_key]))} for it in items]

    def select(self, items: Sequence[Mapping[str, Any]], split: str, id_key: str = "id") -> list[dict]:
        """The items of one split, with ``"split"`` set."""
        return [{**it, "split": split} for it in items if self.assignment.get(str(it[id_key])) == split]

    def to_params(self, prefix: str = "split") -> dict[str, Any]:
        """Flat ``{name: value}`` for MLflow ``log_params`` (no ids, no group values)."""
        out: dict[str, Any] = {f"{prefix}_source": self.source, f"{prefix}_seed": self.seed}
        out.update({f"{prefix}_n_{k}": v for k, v in self.counts.items()})
        out[f"{prefix}_unassigned"] = self.unassigned
        out[f"{prefix}_groups_in_several_splits"] = self.groups_in_several_splits
        return out


def _columns(table: Any, id_key: str, label_key: str, group_key: str) -> tuple[list[str], list[Any], list[Any]]:
    if hasattr(table, "columns") and hasattr(table, "to_dict"):  # pandas DataFrame
        if id_key not in table.columns:
            raise InputError(f"make_or_load_split: table has no column {id_key!r}; columns are {list(table.columns)}.")
        records = table.to_dict("records")
    else:
        records = list(table)
    ids, labels, groups = [], [], []
    for n, r in enumerate(records):
        if id_key not in r:
            raise InputError(f"make_or_load_split: item {n} has no {id_key!r} key.")
        ids.append(str(r[id_key]))
        labels.append(r.get(label_key))
        groups.append(r.get(group_key))
    dup = [k for k, c in Counter(ids).items() if c > 1]
    if dup:
        raise InputError(f"make_or_load_split: {len(dup)} duplicate id(s), e.g. {dup[:5]}; ids must be unique.")
    return ids, labels, groups


def _label_keys(label: Any) -> list[str]:
    if label is None:
        return []
    if isinstance(label, (list, tuple, np.ndarray)):
        return [str(x.item() if hasattr(x, "item") else x) for x in label]
    return [str(label.item() if hasattr(label, "item") else label)]


def make_or_load_split(
    table: Sequence[Mapping[str, Any]] | Any,
    split_file: str | os.PathLike | None,
    *,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    id_key: str = "id",
    label_key: str = "label",
    group_key: str = "group",
    split_file_id_column: str | None = None,
) -> SplitInfo:
    """Load the split from ``split_file`` when it exists (it always wins); otherwise compute a grouped, stratified
    split (:func:`grouped_stratified_split`) and write it to ``split_file`` (atomically) with its seed, fractions and
    counts, so that a later evaluation uses the same split.

    Args:
        table: the data list (``list[dict]`` with ``id``, ``label``, optional ``group``) or a DataFrame with those
            columns.
        split_file: CSV/JSON path (see :func:`write_split_file`); ``None``: compute, write nothing.
        fractions, seed: as in :func:`grouped_stratified_split` (ignored when the file exists).
        id_key, label_key, group_key: keys (columns) of the table.
        split_file_id_column: id column of a given CSV split file (default ``id`` or its first non-split column).

    Returns:
        :class:`SplitInfo` with the assignment and counts (``info.to_params()`` for MLflow).
    """
    ids, labels, groups = _columns(table, id_key, label_key, group_key)
    path = Path(split_file) if split_file is not None else None
    if path is not None and path.is_file():
        file_assignment, meta = read_split_file(path, id_column=split_file_id_column)
        assignment = {i: file_assignment[i] for i in ids if i in file_assignment}
        source, used_seed, used_fr = "file", meta.get("seed"), meta.get("fractions")
    else:
        fr = _normalise_fractions(fractions)
        parts = grouped_stratified_split(labels, groups, fr, seed)
        assignment = {}
        for name, idx in parts.items():
            for i in idx:
                assignment[ids[i]] = name
        assignment = {i: assignment[i] for i in ids}  # table order
        source, used_seed, used_fr = "computed", seed, fr
    counts: dict[str, int] = dict(Counter(assignment.values()))
    if source == "computed":
        counts = {name: counts.get(name, 0) for name in used_fr}
    class_counts: dict[str, dict[str, int]] = defaultdict(dict)
    where: dict[Any, set[str]] = defaultdict(set)
    for i, lab, g in zip(ids, labels, groups):
        s = assignment.get(i)
        if s is None:
            continue
        for k in _label_keys(lab):
            class_counts[s][k] = class_counts[s].get(k, 0) + 1
        if g is not None:
            where[g].add(s)
    info = SplitInfo(
        assignment=assignment,
        counts=counts,
        class_counts={s: dict(sorted(c.items())) for s, c in class_counts.items()},
        source=source,
        path=str(path) if path is not None else None,
        seed=used_seed,
        fractions=dict(used_fr) if used_fr else None,
        unassigned=len(ids) - len(assignment),
        groups_in_several_splits=sum(1 for s in where.values() if len(s) > 1),
    )
    if source == "computed" and path is not None:
        write_split_file(
            path,
            assignment,
            {"seed": seed, "fractions": info.fractions, "counts": counts, "method": "grouped_stratified_split"},
        )
    return info
