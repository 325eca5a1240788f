"""Manifests: the table written by ``python -m attok_monai.ingest`` and read back as a MONAI data list.

A manifest is JSONL (one JSON object per line) or CSV (chosen by the file extension), one row per image (or per
frame), with the fields ``MANIFEST_FIELDS``:

- ``id``: pseudonymised SOP instance key (``<key>-f<frame>`` when a file gives one row per frame);
- ``image``: the file's pseudonymised key (:func:`attok_monai.data.pseudonym.file_key`, 16 hex), never a path: paths
  (and folder names such as ``PatientID/StudyInstanceUID/...``) may identify a patient. The key-to-path map is the
  separate **private** file ``<manifest stem>.paths.private.json`` (:func:`private_map_path`) holding the archive
  root and each key's path relative to it (POSIX separators; symlinks kept as the link's own path), or absolute
  with ``absolute_paths=True``. The user keeps it beside the archive, never shares or logs it;
  :func:`load_manifest` resolves keys through it. Manifests of older versions with paths in ``image`` still load;
- ``frame`` / ``n_frames``; ``label`` (the first label column's text, "" when unlabelled) and ``labels``
  (``{column: text}``; CSV: one ``labels.<column>`` column each);
- ``modality``, ``photometric``, ``rows``, ``columns``;
- ``patient_key`` / ``study_key`` / ``series_key`` / ``instance_key``: salted HMAC-SHA256 pseudonyms
  (:func:`attok_monai.data.pseudonym.pseudonymise`); ``label_key``: pseudonym of the label CSV key the row was
  joined on (lets a re-run tell which label rows are matched); no raw identifier is stored.

The report ``<manifest stem>.report.json`` beside it holds the path mode, the counts, the salt fingerprint and every
skipped file (by key) with its reason; no path.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attok_monai.errors import InputError
from attok_monai.fileio import atomic_write_text

__all__ = [
    "MANIFEST_FIELDS",
    "read_manifest",
    "write_manifest",
    "report_path",
    "private_map_path",
    "read_private_map",
    "write_private_map",
    "load_manifest",
    "atomic_write_text",
]

MANIFEST_FIELDS = (
    "id", "image", "frame", "n_frames", "label", "labels", "modality", "photometric", "rows", "columns",
    "patient_key", "study_key", "series_key", "instance_key", "label_key",
)
_INT_FIELDS = ("frame", "n_frames", "rows", "columns")




def _is_csv(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".csv")


def report_path(manifest: str | os.PathLike) -> Path:
    """``<folder>/<manifest stem>.report.json``."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name.rsplit(".", 1)[0] + ".report.json")


def private_map_path(manifest: str | os.PathLike) -> Path:
    """``<folder>/<manifest stem>.paths.private.json``: the key-to-path map of a manifest (private: it holds paths)."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name.rsplit(".", 1)[0] + ".paths.private.json")


def write_private_map(path: str | os.PathLike, root: str | os.PathLike, files: dict[str, str], path_mode: str) -> None:
    """Write the private key-to-path map ``{"root", "path_mode", "files": {key: path}}`` atomically, mode 0600."""
    payload = {"private": "holds file paths that may identify patients: keep beside the archive, never share",
               "root": str(root), "path_mode": path_mode, "files": dict(sorted(files.items()))}
    atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n", mode=0o600)


def read_private_map(path: str | os.PathLike) -> dict[str, Any]:
    """The map written by :func:`write_private_map` (``{"root": str, "path_mode": str, "files": {key: path}}``).

    Raises:
        ValueError: naming the file when it is not such a map.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"private path map {path}: cannot be read ({type(e).__name__}); expected the "
                         "*.paths.private.json written by the ingest.") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise InputError(f"private path map {path}: expected a JSON object with a 'files' mapping.")
    return data


def write_manifest(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as JSONL or CSV (by extension), atomically."""
    if _is_csv(path):
        label_cols = sorted({c for r in rows for c in (r.get("labels") or {})})
        header = [f for f in MANIFEST_FIELDS if f != "labels"] + [f"labels.{c}" for c in label_cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            flat = {k: ("" if r.get(k) is None else r.get(k)) for k in MANIFEST_FIELDS if k != "labels"}
            flat.update({f"labels.{c}": v for c, v in (r.get("labels") or {}).items()})
            w.writerow(flat)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps({k: r.get(k) for k in MANIFEST_FIELDS}, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(path, text)


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The raw rows of a manifest (JSONL or CSV).

    Raises:
        ValueError: naming the file and line when a row is not valid JSON or lacks ``id``/``image``.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    if _is_csv(path):
        with open(path, encoding="utf-8", newline="") as f:
            for i, r in enumerate(csv.DictReader(f), start=2):
                row: dict[str, Any] = {k: v for k, v in r.items() if not k.startswith("labels.")}
                row["labels"] = {k[len("labels."):]: v for k, v in r.items() if k.startswith("labels.")}
                for k in _INT_FIELDS:
                    if row.get(k) not in (None, ""):
                        try:
                            row[k] = int(row[k])
                        except ValueError:
                            raise InputError(f"{path}, line {i}: field {k!r} is not an integer.") from None
                rows.append(_check_row(row, path, i))
    else:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}, line {i}: not valid JSON ({e.msg}).") from None
                rows.append(_check_row(row, path, i))
    return rows


def _check_row(row: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(row, dict) or not row.get("id") or not row.get("image"):
        raise InputError(f"{path}, line {line}: expected a row with non-empty 'id' and 'image'.")
    return row


def _root_for(manifest: Path, root: str | os.PathLike | None) -> Path:
    """Root of the path-style rows of an older manifest: ``root``, else the one its report recorded, else its folder."""
    if root is not None:
        return Path(root)
    rep = report_path(manifest)
    if rep.exists():
        try:
            recorded = json.loads(rep.read_text(encoding="utf-8")).get("root")
        except (OSError, json.JSONDecodeError):
            recorded = None
        if recorded:
            return Path(recorded)
    return manifest.parent


def load_manifest(
    path: str | os.PathLike,
    vocabulary: Any = None,
    label_column: str = "label",
    root: str | os.PathLike | None = None,
    label_sep: str | None = ";",
    require_label: bool = False,
    private_map: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """A manifest as a data list of the data contract; image keys are resolved to paths through the private map.

    Args:
        path: the manifest (JSONL or CSV).
        vocabulary: an ``AttributeVocabulary`` (or anything ``AttributeVocabulary.coerce`` accepts); when given,
            label texts become indices via ``vocabulary.index_of_label``; a text containing ``label_sep`` becomes
            a multi-label list of indices. Without it the label text is kept as is.
        label_column: ``"label"`` (the primary label) or the name of one label column of the CSV it came from.
        root: folder that relative image paths are relative to; default: the root recorded in the private map (or,
            for an older manifest, in its report), else the manifest's folder.
        label_sep: separator of several labels in one cell (None: never split).
        require_label: raise when a row has no label (else the item's ``label`` is None).
        private_map: the key-to-path map (default: :func:`private_map_path` of the manifest).

    Returns:
        ``[{"image": absolute path str, "frame": int, "label": int | list[int] | str | None, "id": str,
        "group": pseudonymised patient key or None, "modality": str}, ...]``, plus ``"split"`` where the row has
        a non-empty ``split`` (a column added to the manifest by hand; :func:`~attok_monai.data.manifest_source.\
        manifest_datalist` then takes the parts from it).

    Raises:
        ValueError: naming the manifest, the row id and the problem (unknown label, missing label column, a key
            that the private map does not hold, no private map).
    """
    path = Path(path)
    map_file = Path(private_map) if private_map is not None else private_map_path(path)
    pmap = read_private_map(map_file) if map_file.is_file() else None
    files: dict[str, str] = pmap["files"] if pmap else {}
    base = Path(root) if root is not None else (Path(pmap["root"]) if pmap and pmap.get("root") else _root_for(path, None))
    vocab = None
    if vocabulary is not None:
        from attok_monai.attributes import AttributeVocabulary

        vocab = AttributeVocabulary.coerce(vocabulary)
    items = []
    for row in read_manifest(path):
        if label_column == "label":
            text = row.get("label")
        else:
            labels = row.get("labels") or {}
            if label_column not in labels:
                raise InputError(f"{path}: row {row['id']} has no label column {label_column!r} "
                                 f"(columns: {sorted(labels)}).")
            text = labels[label_column]
        text = None if text in (None, "") else str(text)
        label: Any = text
        if text is None and require_label:
            raise InputError(f"{path}: row {row['id']} has no label.")
        if vocab is not None and text is not None:
            parts = [t.strip() for t in text.split(label_sep)] if label_sep and label_sep in text else [text]
            try:
                idx = [vocab.index_of_label(t) for t in parts if t]
            except ValueError as e:
                raise InputError(f"{path}: row {row['id']}: {e}") from None
            label = idx if len(parts) > 1 else idx[0]
        image = _resolve_image(row, files, path, map_file, pmap is not None)
        item = {
            "image": os.path.abspath(image if image.is_absolute() else base / image),
            "frame": int(row.get("frame") or 0),
            "label": label,
            "id": str(row["id"]),
            "group": row.get("patient_key") or None,
            "modality": row.get("modality") or "",
        }
        if row.get("split"):  # a split column a user added (ingest writes none): the parts it names are kept
            item["split"] = str(row["split"])
        items.append(item)
    return items


def _resolve_image(row: dict[str, Any], files: dict[str, str], manifest: Path, map_file: Path, have_map: bool) -> Path:
    ref = str(row["image"])
    if ref in files:
        return Path(files[ref])
    if "/" in ref or "\\" in ref or "." in ref:  # an older manifest: a path
        return Path(ref)
    if not have_map:
        raise InputError(f"{manifest}: row {row['id']} names its image by key; the private path map {map_file.name} "
                         "that resolves keys is not there (copy it beside the manifest or pass private_map=...).")
    raise InputError(f"{manifest}: row {row['id']}: image key {ref} is not in the private path map {map_file.name}.")
