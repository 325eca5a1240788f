"""Image folders + a label table, as hospitals hold them, read into the project's data list.

A :class:`TableSpec` says where the images and labels are:

- a CSV/TSV/JSON table (read with pandas) with a path column (paths relative to ``image_root``, by default the
  table's folder), or an id column + an image folder + an extension (``images/<id>.jpg``);
- one label column, several label columns (each holding a label, or 0/1 flags named by the column with
  ``binary_labels=True``), or a multi-label column split by ``label_separator`` (``"Effusion|Mass"``);
- an optional group column (patient/lesion id), an optional split column or a separate split file joined on the id
  (e.g. HAM10000's ``splits.csv``), or a split computed and written on first use (``split_fractions``);
- or a class-per-folder tree ``root/<class>/*.png`` (``class_folders=root``; with ``split_folders=True``
  ``root/<split>/<class>/*``).

Labels are mapped onto an :class:`~attok_monai.attributes.AttributeVocabulary` with ``index_of_label`` (the vocabulary
holds the raw dataset labels, e.g. ``"nv"``). :func:`load_table` returns the data-contract items
``{"image": absolute path str, "label": int | list[int], "id": str, "group": str | None, "split": str | None}`` for
one split (or all). Bad rows (missing image file, unreadable image with ``verify_images=True``, missing or unknown
label, missing or duplicate id) are never hidden: they raise one
:class:`DatasetTableError` listing the first rows and the total, or, with ``on_error="skip"``, are left out and
written to a CSV report.

Group values may be patient identifiers: by default they are replaced by a one-way hash (``group`` is then
``"g<16 hex>"``), and they never appear in error messages, reports or split files.

Example::

    spec = TableSpec(table="ham10000/HAM10000_metadata.csv", id_column="image_id", image_dir="images",
                     extension=".jpg", label_columns="dx", group_column="lesion_id", split_file="ham10000/splits.csv")
    train = table_datalist(vocab, "train", spec=spec)          # 7015 items
    ds = TableImageDataset(vocab, "val", spec=spec, size=224)  # ds[0]["image"]: float32 (3, 224, 224) in [0, 1]
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
from monai.data import Dataset

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.image2d import PIL_SUFFIXES, suffix_of
from attok_monai.data.image_transforms import image_load_transforms
from attok_monai.data.splits import SplitInfo, make_or_load_split
from attok_monai.errors import InputError
from attok_monai.fileio import atomic_write_text

logger = logging.getLogger("attok_monai.data")

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetTableError",
    "RowProblem",
    "TableImageDataset",
    "TableResult",
    "TableSpec",
    "load_table",
    "read_table",
    "table_datalist",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".nii", ".nii.gz",
)
_DICOM_SUFFIXES = (".dcm", ".dicom")
_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_FALSE = {"0", "0.0", "false", "f", "no", "n", ""}
_MAX_LISTED = 10


class DatasetTableError(InputError):
    """Bad rows in an image table. ``problems`` holds every :class:`RowProblem`; the message lists the first ones."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class RowProblem:
    """One problem of one row: ``row`` is the 1-based data row (header excluded: file line ``row + 1`` of a CSV),
    ``id`` the sample id (``""`` if none), ``kind`` one of ``missing_id``, ``missing_path``, ``missing_image``,
    ``unreadable_image``, ``missing_label``, ``unknown_label``, ``bad_label``, ``duplicate_id``, ``detail`` the
    sentence naming the field and what was expected."""

    row: int
    id: str
    kind: str
    detail: str

    def __str__(self) -> str:
        ident = f" (id {self.id!r})" if self.id else ""
        return f"row {self.row}{ident}: {self.kind}: {self.detail}"


@dataclass
class TableSpec:
    """Where the images and labels of one dataset are.

    Attributes:
        table: CSV/TSV/JSON(L) label table; ``None`` with ``class_folders``.
        image_root: folder that relative paths (and ``image_dir``) are relative to; default the table's folder (or
            ``class_folders``).
        path_column: column holding the image path (relative to ``image_root`` or absolute).
        id_column: column holding the sample id (unique; never a patient id). Without ``path_column`` the image is
            ``image_root / image_dir / (id + extension)``. Without ``id_column`` the id is the path cell without its
            suffix.
        image_dir: sub-folder of the images (id mode).
        extension: file suffix appended to the id (id mode), e.g. ``".jpg"``.
        label_columns: one column name, several, or ``None`` (unlabelled: items get no ``"label"``).
        label_separator: split label cells on this separator (multi-label column).
        binary_labels: label columns hold 0/1 flags; the column name is the label.
        group_column: patient/lesion/origin id column (kept together by splits).
        pseudonymize_groups: replace group values by a one-way hash (default ``True``).
        split_column: column holding the split name.
        split_file: split file (CSV ``id,split`` or JSON, see :mod:`attok_monai.data.splits`) joined on the id; it
            wins over ``split_column``. When it does not exist and ``split_fractions`` is given, the split is computed
            (grouped, stratified) and written there.
        split_file_id_column: id column of the split file (default ``id``, else its first non-split column).
        split_fractions: ``{split: fraction}`` for a computed split (e.g. ``{"train": 0.8, "val": 0.2}``).
        split_seed: seed of the computed split.
        class_folders: root of a ``<class>/<image>`` tree (labels are the folder names).
        split_folders: the tree is ``<split>/<class>/<image>``.
        image_extensions: suffixes taken from a folder tree (case-insensitive).
        sep: table separator (default: from the suffix, ``,`` or tab).
    """

    table: str | None = None
    image_root: str | None = None
    path_column: str | None = None
    id_column: str | None = None
    image_dir: str | None = None
    extension: str = ""
    label_columns: str | Sequence[str] | None = "label"
    label_separator: str | None = None
    binary_labels: bool = False
    group_column: str | None = None
    pseudonymize_groups: bool = True
    split_column: str | None = None
    split_file: str | None = None
    split_file_id_column: str | None = None
    split_fractions: Mapping[str, float] | None = None
    split_seed: int = 0
    class_folders: str | None = None
    split_folders: bool = False
    image_extensions: Sequence[str] = IMAGE_EXTENSIONS
    sep: str | None = None

    @classmethod
    def coerce(cls, spec: TableSpec | Mapping[str, Any] | None = None, **overrides: Any) -> TableSpec:
        """A spec from a spec, a mapping (bundle config) and/or keyword fields; unknown names raise ``TypeError``."""
        if spec is None:
            spec = cls()
        elif isinstance(spec, Mapping):
            spec = cls(**dict(spec))
        return replace(spec, **overrides) if overrides else spec


@dataclass
class TableResult:
    """What :func:`load_table` read.

    Attributes:
        items: the data list of the requested split(s).
        problems: every row problem found (empty unless ``on_error="skip"``).
        counts: ``rows`` (table rows), ``valid`` (rows without problems), ``skipped`` (rows left out),
            ``problems`` (problem count), one count per problem kind, ``items`` (returned items).
        split_counts: ``{split name: valid rows}`` over the whole table (``"none"`` for rows without a split).
        split_info: the :class:`~attok_monai.data.splits.SplitInfo` when a split file was read or computed.
        report_path: the written report, if any.
    """

    items: list[dict[str, Any]]
    problems: list[RowProblem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    split_info: SplitInfo | None = None
    report_path: str | None = None


# ---------------------------------------------------------------------------------------------------------- reading
def read_table(path: str | os.PathLike, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV/JSON/JSONL table with every cell as ``str`` (missing -> ``""``; JSON lists kept as lists).

    JSON: a list of records, or a mapping with one list of records (``{"items": [...]}``), or column-wise mapping.

    Raises:
        FileNotFoundError: the table is absent. DatasetTableError: the file cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image table not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".json", ".jsonl", ".ndjson"):
            text = path.read_text(encoding="utf-8")
            if suffix == ".json":
                data = json.loads(text)
            else:
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            if isinstance(data, Mapping):
                lists = [v for v in data.values() if isinstance(v, list) and (not v or isinstance(v[0], Mapping))]
                data = lists[0] if len(lists) == 1 else pd.DataFrame(data).to_dict("records")
            if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
                raise DatasetTableError(f"image table {path}: expected a JSON list of records (objects).")
            df = pd.DataFrame.from_records(data)
            return df.apply(lambda col: col.map(_json_cell)).astype(object)
        if sep is None:
            sep = "\t" if suffix in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DatasetTableError(f"image table {path} is empty; expected a header line and one row per image.") from None
    except (pd.errors.ParserError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetTableError(f"image table {path}: cannot be parsed ({e}).") from e


def _json_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v if x is not None]
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _folder_table(spec: TableSpec) -> tuple[pd.DataFrame, TableSpec]:
    """The rows of a class-per-folder tree, and the spec that reads them (path/label[/split] columns)."""
    root = Path(spec.class_folders)
    if not root.is_dir():
        raise FileNotFoundError(f"class folder root not found: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in spec.image_extensions}

    def subdirs(p: Path) -> list[Path]:
        return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))

    rows = []
    ignored: dict[str, int] = {}
    for split_dir in subdirs(root) if spec.split_folders else [None]:
        base = split_dir if split_dir is not None else root
        for class_dir in subdirs(base):
            for f in sorted(class_dir.rglob("*")):
                sfx = suffix_of(f.name)
                if f.is_file() and not f.name.startswith(".") and sfx not in exts:
                    ignored[sfx or "(none)"] = ignored.get(sfx or "(none)", 0) + 1
                if f.is_file() and not f.name.startswith(".") and sfx in exts:
                    rows.append(
                        {
                            "path": f.relative_to(root).as_posix(),
                            "label": class_dir.name,
                            "split": split_dir.name if split_dir is not None else "",
                        }
                    )
    if ignored:  # said, not silently dropped (no names: only the count per suffix)
        logger.warning("class folders %s: %d file(s) without an image suffix %s left out: %s", root.name,
                       sum(ignored.values()), sorted(exts), dict(sorted(ignored.items())))
    if not rows:
        raise DatasetTableError(
            f"class folder root {root}: no image files with suffixes {sorted(exts)} in "
            + ("<split>/<class>/ sub-folders." if spec.split_folders else "<class>/ sub-folders.")
        )
    derived = replace(
        spec,
        table=None,
        image_root=str(root),
        path_column="path",
        id_column=None,
        label_columns="label",
        label_separator=None,
        binary_labels=False,
        group_column=None,
        split_column="split" if spec.split_folders else None,
    )
    return pd.DataFrame(rows, dtype=object), derived


def _group_key(value: str, pseudonymize: bool) -> str:
    if not pseudonymize:
        return value
    return "g" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def _verify_image(path: str) -> str | None:
    """``None`` when the file decodes (PNG/JPEG/TIFF/BMP by PIL; DICOM frame or NIfTI slice by ``read_image_2d``),
    else the reason."""
    try:
        if suffix_of(path) not in PIL_SUFFIXES:
            from attok_monai.data.load2d import read_image_2d

            read_image_2d(path)
            return None
        from PIL import Image

        with Image.open(path) as im:
            im.load()
        return None
    except Exception as e:  # noqa: BLE001 - any decoder failure is the answer
        return f"{type(e).__name__}: {e}"


def _labels_of(
    record: Mapping[str, Any], spec: TableSpec, columns: list[str], vocab: AttributeVocabulary
) -> tuple[int | list[int] | None, list[tuple[str, str]]]:
    """(label, [(kind, detail), ...]) of one row."""
    problems: list[tuple[str, str]] = []
    raw: list[tuple[str, str]] = []  # (column, raw label)
    multi = len(columns) > 1 or spec.label_separator is not None or spec.binary_labels
    for col in columns:
        cell = record[col]
        if spec.binary_labels:
            v = str(cell).strip().lower()
            if v in _TRUE:
                raw.append((col, col))
            elif v not in _FALSE:
                problems.append(("bad_label", f"column {col!r} holds {cell!r}; expected a 0/1 flag."))
            continue
        if isinstance(cell, list):
            values, multi = cell, True
        elif spec.label_separator is not None:
            values = str(cell).split(spec.label_separator)
        else:
            values = [cell]
        raw += [(col, str(v).strip()) for v in values if str(v).strip()]
    indices: list[int] = []
    for col, value in raw:
        try:
            i = vocab.index_of_label(value)
        except ValueError:
            known = sorted(str(a.label) for a in vocab if a.label is not None)
            problems.append(("unknown_label", f"label {value!r} in column {col!r} is not in the vocabulary {known}."))
            continue
        if i not in indices:
            indices.append(i)
    if not raw and not problems:
        problems.append(("missing_label", f"no label in column(s) {columns}."))
    if problems:
        return None, problems
    return (indices if multi else indices[0]), []


def _require_columns(df: pd.DataFrame, names: Sequence[str | None], where: str) -> None:
    missing = [n for n in names if n is not None and n not in df.columns]
    if missing:
        raise DatasetTableError(f"{where}: no column(s) {missing}; the columns are {list(df.columns)}.")


def _write_report(path: str | os.PathLike, problems: Sequence[RowProblem]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "id", "problem", "detail"])
    for p in problems:
        w.writerow([p.row, p.id, p.kind, p.detail])
    atomic_write_text(Path(path), buf.getvalue())


def _error_message(source: str, problems: Sequence[RowProblem], n_rows: int) -> str:
    bad_rows = len({p.row for p in problems})
    kinds: dict[str, int] = {}
    for p in problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    lines = [
        f"{source}: {len(problems)} problem(s) in {bad_rows} of {n_rows} row(s) "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}); "
        f"the first {min(len(problems), _MAX_LISTED)} (rows are 1-based data rows, header excluded):"
    ]
    lines += [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more.")
    lines.append('Fix the table, or pass on_error="skip" with report_path=... to leave these rows out and list them.')
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- main
def load_table(
    vocabulary: AttributeVocabulary | Mapping[str, Any] | str | os.PathLike,
    split: str | Sequence[str] | None = None,
    *,
    spec: TableSpec | Mapping[str, Any] | None = None,
    on_error: str = "raise",
    report_path: str | os.PathLike | None = None,
    verify_images: bool = False,
    **fields_: Any,
) -> TableResult:
    """Read an image table (or class folder tree) into data-list items of one split (or all).

    Args:
        vocabulary: the bundle's vocabulary (or what :meth:`AttributeVocabulary.coerce` accepts); raw dataset labels
            are mapped with ``index_of_label``.
        split: the split name(s) to return; ``None``: every valid row.
        spec: a :class:`TableSpec` (or mapping); keyword ``fields_`` override its fields.
        on_error: ``"raise"``: any bad row raises one :class:`DatasetTableError`; ``"skip"``: bad rows are left out,
            listed in ``report_path`` (CSV ``row,id,problem,detail``, written atomically) and counted.
        report_path: where the skip report goes (written whenever given and problems were found, in both modes).
        verify_images: decode every listed image that exists (PIL, or pydicom for ``.dcm``): slow, for small tables.

    Returns:
        :class:`TableResult`; ``result.items`` are
        ``{"image": abs path str, "label": int | list[int], "id": str, "group": str | None, "split": str | None}``.

    Raises:
        DatasetTableError: bad rows (``on_error="raise"``), missing columns, an unparsable table.
        FileNotFoundError: the table, folder root or a required split file is absent.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"load_table: on_error must be 'raise' or 'skip', got {on_error!r}.")
    vocab = AttributeVocabulary.coerce(vocabulary)
    spec = TableSpec.coerce(spec, **fields_)
    if spec.class_folders is not None:
        df, spec = _folder_table(spec)
        source = f"class folders {spec.image_root}"
    elif spec.table is not None:
        df = read_table(spec.table, spec.sep)
        source = f"image table {spec.table}"
    else:
        raise ValueError("load_table: give a table (TableSpec.table) or a class folder root (TableSpec.class_folders).")
    if spec.path_column is None and spec.id_column is None:
        raise ValueError(f"{source}: give path_column, or id_column (+ image_dir/extension), to locate the images.")
    columns = [spec.label_columns] if isinstance(spec.label_columns, str) else list(spec.label_columns or [])
    _require_columns(df, [spec.path_column, spec.id_column, spec.group_column, spec.split_column, *columns], source)

    root = Path(spec.image_root) if spec.image_root is not None else Path(spec.table).parent
    root = Path(os.path.abspath(root))
    ext = spec.extension if not spec.extension or spec.extension.startswith(".") else "." + spec.extension
    records = df.to_dict("records")
    problems: list[RowProblem] = []
    items: list[dict[str, Any]] = []
    rows_of_items: list[int] = []
    first_row_of_id: dict[str, int] = {}
    blank = 0
    for n, rec in enumerate(records, start=1):
        if all(v == "" or v == [] for v in rec.values()):  # a blank line: nothing to report
            blank += 1
            continue
        row_problems: list[tuple[str, str]] = []
        sid = str(rec[spec.id_column]).strip() if spec.id_column is not None else ""
        cell = str(rec[spec.path_column]).strip() if spec.path_column is not None else ""
        if spec.path_column is not None and not cell:
            row_problems.append(("missing_path", f"column {spec.path_column!r} is empty; expected an image path."))
        if spec.id_column is not None and not sid:
            row_problems.append(("missing_id", f"column {spec.id_column!r} is empty; expected a unique sample id."))
        if spec.id_column is None and cell:
            sid = str(Path(cell).with_suffix("").as_posix()) if Path(cell).suffix else cell
        image = None
        if cell:
            image = str(Path(cell) if os.path.isabs(cell) else root / cell)
        elif spec.path_column is None and sid:
            image = str(root / (spec.image_dir or "") / f"{sid}{ext}")
        if image is not None:
            image = os.path.abspath(image)
            if not os.path.isfile(image):
                row_problems.append(("missing_image", f"image file not found: {image}"))
            elif verify_images:
                reason = _verify_image(image)
                if reason is not None:
                    row_problems.append(("unreadable_image", f"image file cannot be decoded: {image} ({reason})"))
        label = None
        if columns:
            label, label_problems = _labels_of(rec, spec, columns, vocab)
            row_problems += label_problems
        if sid:
            if sid in first_row_of_id:
                row_problems.append(("duplicate_id", f"id {sid!r} was first used in row {first_row_of_id[sid]}."))
            else:
                first_row_of_id[sid] = n
        if row_problems:
            problems += [RowProblem(n, sid, kind, detail) for kind, detail in row_problems]
            continue
        group_cell = str(rec[spec.group_column]).strip() if spec.group_column is not None else ""
        split_cell = str(rec[spec.split_column]).strip() if spec.split_column is not None else ""
        item: dict[str, Any] = {"image": image, "id": sid}
        if columns:
            item["label"] = label
        item["group"] = _group_key(group_cell, spec.pseudonymize_groups) if group_cell else None
        item["split"] = split_cell or None
        items.append(item)
        rows_of_items.append(n)

    n_rows = len(records) - blank
    if n_rows == 0:
        raise DatasetTableError(f"{source} has a header but no rows; expected one row per image.")
    if problems and report_path is not None:
        _write_report(report_path, problems)
    if problems and on_error == "raise":
        raise DatasetTableError(_error_message(source, problems, n_rows), problems)
    if problems and report_path is None:
        warnings.warn(
            f"{source}: skipped {len({p.row for p in problems})} bad row(s) without a report file; "
            f"first: {problems[0]}",
            stacklevel=2,
        )

    split_info: SplitInfo | None = None
    if spec.split_file is not None and (Path(spec.split_file).is_file() or spec.split_fractions is None):
        if not Path(spec.split_file).is_file():
            raise FileNotFoundError(f"split file not found: {spec.split_file} (give split_fractions to create it).")
        split_info = make_or_load_split(items, spec.split_file, split_file_id_column=spec.split_file_id_column)
    elif spec.split_fractions is not None:
        split_info = make_or_load_split(items, spec.split_file, fractions=spec.split_fractions, seed=spec.split_seed)
    if split_info is not None:
        items = split_info.apply(items)

    split_counts: dict[str, int] = {}
    for it in items:
        key = it["split"] if it["split"] is not None else "none"
        split_counts[key] = split_counts.get(key, 0) + 1
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        items = [it for it in items if it["split"] in wanted]

    bad_rows = len({p.row for p in problems})
    counts = {
        "rows": n_rows,
        "valid": n_rows - bad_rows,
        "skipped": bad_rows,
        "problems": len(problems),
        "items": len(items),
    }
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return TableResult(
        items=items,
        problems=problems,
        counts=counts,
        split_counts=split_counts,
        split_info=split_info,
        report_path=str(report_path) if report_path is not None and problems else None,
    )


def table_datalist(
    vocabulary: AttributeVocabulary | Mapping[str, Any] | str | os.PathLike,
    split: str | Sequence[str] | None = None,
    *,
    spec: TableSpec | Mapping[str, Any] | None = None,
    on_error: str = "raise",
    report_path: str | os.PathLike | None = None,
    verify_images: bool = False,
    **fields_: Any,
) -> list[dict[str, Any]]:
    """The data list of :func:`load_table` (same arguments): ``[{"image", "label", "id", "group", "split"}, ...]``."""
    return load_table(
        vocabulary,
        split,
        spec=spec,
        on_error=on_error,
        report_path=report_path,
        verify_images=verify_images,
        **fields_,
    ).items


_SPEC_FIELDS = {f.name for f in fields(TableSpec)}


class TableImageDataset(Dataset):
    """A MONAI :class:`~monai.data.Dataset` over :func:`load_table` items, with the standard load chain.

    ``ds[i]`` is ``{"image": float32 tensor (C, size, size) in [0, 1], "label": int | list[int], "id", "group",
    "split"}``. ``ds.result`` is the :class:`TableResult` (``ds.counts``: its counts).

    Args:
        vocabulary, split, spec, on_error, report_path, verify_images: as in :func:`load_table`.
        transform: replaces the default :func:`~attok_monai.data.image_transforms.image_load_transforms` chain.
        size, channels, reader, intensity_range, resize: passed to the default chain.
        fields_: :class:`TableSpec` fields.
    """

    def __init__(
        self,
        vocabulary: AttributeVocabulary | Mapping[str, Any] | str | os.PathLike,
        split: str | Sequence[str] | None = None,
        *,
        spec: TableSpec | Mapping[str, Any] | None = None,
        transform: Any = None,
        size: int | None = 224,
        channels: int | None = 3,
        reader: Any = None,
        intensity_range: tuple[float, float] | None = (0.0, 255.0),
        resize: str = "pad",
        on_error: str = "raise",
        report_path: str | os.PathLike | None = None,
        verify_images: bool = False,
        **fields_: Any,
    ) -> None:
        unknown = set(fields_) - _SPEC_FIELDS
        if unknown:
            raise TypeError(f"TableImageDataset: unknown argument(s) {sorted(unknown)}.")
        self.result = load_table(
            vocabulary,
            split,
            spec=spec,
            on_error=on_error,
            report_path=report_path,
            verify_images=verify_images,
            **fields_,
        )
        if transform is None:
            transform = image_load_transforms(
                size=size, channels=channels, reader=reader, intensity_range=intensity_range, resize=resize
            )
        super().__init__(self.result.items, transform)

    @property
    def counts(self) -> dict[str, int]:
        return self.result.counts
