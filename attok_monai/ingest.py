"""Ingest a DICOM archive into a manifest: ``python -m attok_monai.ingest ROOT --labels labels.csv --key
SOPInstanceUID --label-column dx --out manifest.jsonl --salt-env ATTOK_SALT``.

What it does:

1. finds the files: the IMAGE records of ``ROOT/DICOMDIR`` when there is one (``--no-dicomdir`` to walk anyway),
   else every file under ``ROOT`` (any or no extension; hidden files and folders and the output files skipped);
2. reads each header (``pydicom.dcmread(stop_before_pixels=True)``, ``force`` for files without the DICM
   preamble) and, by default, decodes the chosen frame(s) once so that a file whose pixels cannot be decoded
   (unsupported compression, broken VR, truncated stream) is skipped with the decoder's full reason
   (``--header-only``: the fast scan without decoding), with a per-file time limit;
3. joins the label CSV on ``--key``: ``SOPInstanceUID``, ``SeriesInstanceUID``, ``StudyInstanceUID``,
   ``AccessionNumber``, ``path`` (the file's path relative to ROOT, POSIX separators) or ``regex:PATTERN`` (a
   regular expression searched in the relative path; its group ``key``, else group 1, else the whole match is the
   key). The CSV column holding the key is ``--csv-key-column`` (default: the key's name; ``key`` for regex);
4. writes the manifest (see :mod:`attok_monai.data.manifest`), its report ``<stem>.report.json`` and the private
   key-to-path map ``<stem>.paths.private.json`` beside it. Manifest and report name every file by its
   pseudonymised key (:func:`~attok_monai.data.pseudonym.file_key`), never by a path (PACS exports put the
   PatientID and UIDs in folder names); only the private map, which the user keeps beside the archive, holds the
   paths (relative to ROOT, symlinks included). The report lists every skipped file (key) and why, and the label
   rows that match no file (by CSV line number: the key values may be identifiers) and the count of files that
   match no label row.

Frames: a multi-frame file gives the frame(s) chosen by ``--frames`` (``middle`` default, ``first``, ``all`` = one
row per frame, ``every:K``, or an index). Series: ``--series-slices`` applies the same rule to the single-frame
files of each CT/MR/PT/NM series (sorted by InstanceNumber, then path); default ``all`` keeps every file.

Re-running on a grown archive keeps the existing rows and adds only new files: a file whose key is in the manifest
is not read again, and a new file whose pseudonymised SOP instance key is already there is skipped as a duplicate.
The salt must be the same (checked with the fingerprint in the report). No header value or path is logged or
written outside the private map: identifiers appear only as salted HMAC-SHA256 pseudonyms and the salt is never
stored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attok_monai.data.dicom import dicomdir_files, scan_dicom, verify_dicom_frames
from attok_monai.data.image2d import ImageReadError, safe_reason, select_indices, time_limit
from attok_monai.data.manifest import (
    atomic_write_text,
    private_map_path,
    read_manifest,
    read_private_map,
    report_path,
    write_manifest,
    write_private_map,
)
from attok_monai.data.pseudonym import MissingSaltError, file_key, pseudonymise, resolve_salt, salt_check
from attok_monai.errors import InputError

__all__ = ["IngestReport", "ingest", "main", "DICOM_KEYS"]

logger = logging.getLogger(__name__)

DICOM_KEYS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "AccessionNumber")
VOLUME_MODALITIES = {"CT", "MR", "PT", "NM"}


@dataclass
class IngestReport:
    """Outcome of :func:`ingest` (also written as JSON beside the manifest; ``root`` and the paths of the written
    files stay in this object and the private map: the JSON names the files only).

    ``skipped``: ``[{"file": the file's key, "reason": str}, ...]``; ``unmatched_labels``: ``[{"line": CSV line,
    "reason": str}, ...]`` for label rows that no file matched; ``files_without_label``: files that matched no label
    row, by key (each also in ``skipped`` unless unlabelled files are kept).
    """

    root: str
    manifest: str
    report: str
    private_map: str
    path_mode: str
    scanned: int = 0
    kept: int = 0
    added: int = 0
    rows: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    unmatched_labels: list[dict[str, Any]] = field(default_factory=list)
    files_without_label: list[str] = field(default_factory=list)
    label_rows: int = 0
    salt_check: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["root"]
        for k in ("manifest", "report", "private_map"):
            d[k] = Path(d[k]).name
        d["counts"] = {"scanned": self.scanned, "kept": self.kept, "added": self.added, "rows": self.rows,
                       "skipped": len(self.skipped), "label_rows": self.label_rows,
                       "labels_matching_no_file": len(self.unmatched_labels),
                       "files_matching_no_label": len(self.files_without_label)}
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        d["skip_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
        return d


def _walk(root: Path, exclude: set[Path]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not name.startswith(".") and p.resolve() not in exclude:
                out.append(p)
    return out


def _load_labels(
    labels_csv: str | os.PathLike, key_column: str, label_columns: Sequence[str]
) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """``({key: {column: label}}, {key: first CSV line})``.

    Raises:
        ValueError: one line naming the CSV (and line) and what was expected: unreadable, empty, header only,
            missing column, empty key, conflicting labels.
    """
    import pandas as pd

    try:
        df = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"label CSV {labels_csv} is empty; expected a header line with the columns "
                         f"{[key_column, *label_columns]} and one row per image.") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the label CSV {labels_csv}: {type(e).__name__}: {e}") from None
    missing = [c for c in (key_column, *label_columns) if c not in df.columns]
    if missing:
        raise InputError(f"label CSV {labels_csv}: missing column(s) {missing}; it has {list(df.columns)}.")
    if df.empty:
        raise InputError(f"label CSV {labels_csv} has a header but no rows; expected one row per image.")
    table: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for i, rec in enumerate(df[[key_column, *label_columns]].itertuples(index=False), start=2):
        key = str(rec[0]).strip()
        if not key:
            raise InputError(f"label CSV {labels_csv}, line {i}: empty key in column {key_column!r}.")
        labels = {c: str(v).strip() for c, v in zip(label_columns, rec[1:])}
        if key in table and table[key] != labels:
            raise InputError(f"label CSV {labels_csv}: lines {first_line[key]} and {i} give the same key different "
                             "labels.")
        table[key] = labels
        first_line.setdefault(key, i)
    return table, first_line


def _key_getter(key: str):
    if key in DICOM_KEYS:
        return lambda h, rel: h.identifier(key)
    if key == "path":
        return lambda h, rel: rel
    if key.startswith("regex:"):
        pattern = re.compile(key[len("regex:"):])

        def get(h, rel):
            m = pattern.search(rel)
            if not m:
                return ""
            if "key" in pattern.groupindex:
                return m.group("key") or ""
            return (m.group(1) if pattern.groups else m.group(0)) or ""

        return get
    raise ValueError(f"unknown key {key!r}; expected one of {list(DICOM_KEYS)}, 'path' or 'regex:PATTERN'.")


def ingest(
    root: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    key: str = "SOPInstanceUID",
    label_column: str | Sequence[str] = "label",
    out: str | os.PathLike = "manifest.jsonl",
    *,
    salt: str | None = None,
    salt_env: str | None = "ATTOK_SALT",
    salt_file: str | os.PathLike | None = None,
    csv_key_column: str | None = None,
    frames: str | int = "middle",
    series_slices: str | int = "all",
    absolute_paths: bool = False,
    pseudonymise_report_paths: bool = True,
    unlabelled: str = "skip",
    verify: bool = True,
    use_dicomdir: bool = True,
    file_timeout: float | None = 30.0,
    private_map: str | os.PathLike | None = None,
) -> IngestReport:
    """Scan ``root``, join labels and write/extend the manifest ``out``, its report and its private path map (see
    the module doc).

    Args:
        root: archive folder.
        labels_csv: label table (None: no labels; every row has ``label`` "").
        key: join key (``SOPInstanceUID`` ... ``AccessionNumber``, ``path``, ``regex:PATTERN``).
        label_column: label column name(s) of the CSV; the first is the manifest's ``label``.
        out: manifest path, ``.jsonl`` or ``.csv``.
        salt / salt_env / salt_file: where the secret salt comes from (:func:`resolve_salt`); required.
        csv_key_column: the CSV column holding the key (default: ``key``'s name, ``"key"`` for regex).
        frames: frame rule for multi-frame files.
        series_slices: slice rule for the single-frame files of a CT/MR/PT/NM series (``"all"`` keeps all).
        absolute_paths: the private map holds absolute paths (default: relative to ``root``).
        pseudonymise_report_paths: kept for compatibility; files are always named by their key.
        unlabelled: ``"skip"`` (default when a CSV is given) or ``"keep"`` files without a label row.
        verify: decode each new row's frame(s) and skip files that fail, with the full reason (default); False is
            the header-only scan (``--header-only``).
        use_dicomdir: take the file list from ``root/DICOMDIR`` when present.
        file_timeout: seconds per file (header scan and decoding), main thread only.
        private_map: where the key-to-path map goes (default ``<out stem>.paths.private.json``).

    Returns:
        the :class:`IngestReport` (also written to ``<out stem>.report.json``).

    Raises:
        MissingSaltError: no salt. ValueError: bad arguments, unreadable/empty label CSV, salt differing from the
            one the existing manifest was written with.
    """
    del pseudonymise_report_paths  # always on
    t0 = time.perf_counter()
    salt = resolve_salt(salt, salt_env, str(salt_file) if salt_file else None)
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"ingest: root {root} is not a folder.")
    out = Path(out).resolve()
    if out.suffix.lower() not in (".jsonl", ".csv"):
        raise ValueError(f"ingest: the manifest must end in .jsonl or .csv, got {out.name}.")
    if unlabelled not in ("skip", "keep"):
        raise ValueError(f"ingest: unlabelled must be 'skip' or 'keep', got {unlabelled!r}.")
    select_indices(3, frames)  # validate the rules early
    select_indices(3, series_slices)
    rep_path = report_path(out)
    map_path = Path(private_map).resolve() if private_map is not None else private_map_path(out)
    label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
    get_key = _key_getter(key)
    csv_key = csv_key_column or ("key" if key.startswith("regex:") else key)
    labels, label_lines = (_load_labels(labels_csv, csv_key, label_columns) if labels_csv is not None
                           else (None, {}))
    matched_labels: set[str] = set()

    check = salt_check(salt)
    existing: list[dict[str, Any]] = []
    paths: dict[str, str] = {}
    if out.exists():
        if rep_path.exists():
            try:
                old = json.loads(rep_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("salt_check") and old["salt_check"] != check:
                raise MissingSaltError(f"ingest: the salt differs from the one {out.name} was written with; use the "
                                       "same salt to extend it (or write a new manifest).")
        existing = read_manifest(out)
        if map_path.is_file():
            paths = dict(read_private_map(map_path)["files"])
        for r in existing:  # rows of older versions held the path itself: move it to the private map
            if r["image"] not in paths:
                old_path = str(r["image"])
                rel_old = Path(old_path).relative_to(root).as_posix() if Path(old_path).is_absolute() and \
                    Path(old_path).is_relative_to(root) else old_path
                r["image"] = file_key(rel_old, salt)
                paths[r["image"]] = old_path
    known_keys = {r["image"] for r in existing}
    known_instances = {r.get("instance_key") for r in existing}

    report = IngestReport(root=str(root), manifest=str(out), report=str(rep_path), private_map=str(map_path),
                          path_mode="absolute" if absolute_paths else "relative to root", salt_check=check,
                          label_rows=len(labels) if labels is not None else 0,
                          options={"key": key, "label_columns": label_columns, "frames": frames,
                                   "series_slices": series_slices, "unlabelled": unlabelled, "decode": verify,
                                   "labels_csv": Path(labels_csv).name if labels_csv else None})

    def rel_of(p: Path) -> str:
        # the path as found under root (a symlink stays the link's path, inside root)
        a = Path(os.path.abspath(p))
        try:
            return a.relative_to(root).as_posix()
        except ValueError:
            return a.as_posix()

    def skip(fkey: str, reason: str) -> None:
        report.skipped.append({"file": fkey, "reason": reason})

    dicomdir = root / "DICOMDIR"
    exclude = {out, rep_path, map_path}
    if use_dicomdir and dicomdir.is_file():
        try:
            files = dicomdir_files(dicomdir)
        except Exception:
            raise ValueError(f"ingest: {dicomdir} is not a readable DICOMDIR (use --no-dicomdir).") from None
    else:
        files = _walk(root, exclude)

    new_rows: list[dict[str, Any]] = []
    order: dict[int, tuple] = {}
    for p in files:
        rel = rel_of(p)
        fkey = file_key(rel, salt)
        if fkey in known_keys:
            report.kept += 1
            continue
        paths[fkey] = str(Path(os.path.abspath(p))) if absolute_paths else rel
        report.scanned += 1
        if not p.is_file():
            skip(fkey, "listed in DICOMDIR but missing")
            continue
        try:
            with time_limit(file_timeout, fkey):
                h = scan_dicom(p)
        except ImageReadError as e:
            skip(fkey, e.reason)
            continue
        except Exception as e:  # a guard: no single file may stop the run
            skip(fkey, f"unexpected error: {safe_reason(e)}")
            continue
        inst = pseudonymise(h.sop_instance_uid or f"path:{rel}", salt)
        if inst in known_instances:
            skip(fkey, "duplicate SOP instance (already in the manifest or earlier in this scan)")
            continue
        row_labels: dict[str, str] = {}
        k = ""
        if labels is not None:
            k = str(get_key(h, rel) or "").strip()
            if not k:
                report.files_without_label.append(fkey)
                if unlabelled == "skip":
                    skip(fkey, f"no {key.split(':')[0]} value to join the labels on")
                    continue
            elif k in labels:
                row_labels = labels[k]
                matched_labels.add(k)
            else:
                report.files_without_label.append(fkey)
                if unlabelled == "skip":
                    skip(fkey, f"no row in the label CSV for this file's {key.split(':')[0]}")
                    continue
        try:
            frame_idx = select_indices(h.n_frames, frames)
        except ValueError as e:
            skip(fkey, str(e))
            continue
        if verify:
            try:
                with time_limit(file_timeout, fkey):
                    verify_dicom_frames(p, frame_idx)
            except ImageReadError as e:
                skip(fkey, e.reason)
                continue
            except Exception as e:  # a guard: no single file may stop the run
                skip(fkey, f"pixel decoding failed: {safe_reason(e)}")
                continue
        known_instances.add(inst)
        known_keys.add(fkey)

        def pkey(value: str) -> str | None:
            return pseudonymise(value, salt) if value else None

        common = {
            "image": fkey,
            "n_frames": h.n_frames,
            "label": row_labels.get(label_columns[0], "") if row_labels else "",
            "labels": row_labels,
            "modality": h.modality,
            "photometric": h.photometric,
            "rows": h.rows,
            "columns": h.columns,
            "patient_key": pkey(h.patient_id),
            "study_key": pkey(h.study_instance_uid),
            "series_key": pkey(h.series_instance_uid),
            "instance_key": inst,
            "label_key": pseudonymise(f"label:{k}", salt) if row_labels else None,
        }
        for f in frame_idx:
            row = {"id": inst if len(frame_idx) == 1 else f"{inst}-f{f}", "frame": f, **common}
            order[id(row)] = (h.instance_number if h.instance_number is not None else 0, rel)
            new_rows.append(row)

    if str(series_slices) != "all":
        new_rows = _apply_series_rule(new_rows, order, series_slices, skip)
    if labels is not None:
        joined_before = {r.get("label_key") for r in existing} - {None, ""}
        report.unmatched_labels = [
            {"line": label_lines[k], "reason": "no file in the archive matched this row's key"}
            for k in sorted(labels, key=lambda k: label_lines[k])
            if k not in matched_labels and pseudonymise(f"label:{k}", salt) not in joined_before
        ]
    rows = existing + new_rows
    report.added = len(new_rows)
    report.rows = len(rows)
    write_private_map(map_path, root, paths, report.path_mode)
    write_manifest(out, rows)
    report.seconds = round(time.perf_counter() - t0, 3)
    atomic_write_text(rep_path, json.dumps(report.to_dict(), indent=2) + "\n")
    logger.info("ingest: %d scanned, %d kept, %d rows added, %d skipped, %d label rows matching no file, "
                "%d files matching no label", report.scanned, report.kept, report.added, len(report.skipped),
                len(report.unmatched_labels), len(report.files_without_label))
    return report


def _apply_series_rule(rows, order, rule, skip) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["modality"].upper() in VOLUME_MODALITIES and r["n_frames"] == 1 and r["series_key"]:
            groups.setdefault(r["series_key"], []).append(r)
    drop: set[int] = set()
    for members in groups.values():
        members.sort(key=lambda r: order[id(r)])
        keep = set(select_indices(len(members), rule))
        for i, r in enumerate(members):
            if i not in keep:
                drop.add(id(r))
                skip(r["image"], f"slice not selected by the series rule {rule!r}")
    return [r for r in rows if id(r) not in drop]


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m attok_monai.ingest",
        description="Scan a DICOM archive (headers only), join a label CSV and write a pseudonymised manifest.",
    )
    ap.add_argument("root", help="archive folder")
    ap.add_argument("--labels", help="label CSV")
    ap.add_argument("--key", default="SOPInstanceUID",
                    help="join key: SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID, AccessionNumber, path, "
                         "or regex:PATTERN over the relative path")
    ap.add_argument("--csv-key-column", help="CSV column with the key (default: the key's name; 'key' for regex)")
    ap.add_argument("--label-column", action="append", help="label column (repeat for several; default 'label')")
    ap.add_argument("--out", default="manifest.jsonl", help="manifest path (.jsonl or .csv)")
    ap.add_argument("--salt-env", default="ATTOK_SALT", help="environment variable holding the salt")
    ap.add_argument("--salt-file", help="file whose first line is the salt")
    ap.add_argument("--frames", default="middle", help="multi-frame rule: middle, first, all, every:K or an index")
    ap.add_argument("--series-slices", default="all", help="rule for CT/MR/PT/NM series: all, middle, every:K, ...")
    ap.add_argument("--absolute-paths", action="store_true", help="the private map holds absolute paths")
    ap.add_argument("--private-map", help="where the private key-to-path map goes "
                                          "(default: <manifest stem>.paths.private.json beside the manifest)")
    ap.add_argument("--pseudonymise-report-paths", action="store_true",
                    help="kept for compatibility: files are always named by their pseudonymised key")
    ap.add_argument("--keep-unlabelled", action="store_true", help="keep files without a label row")
    ap.add_argument("--header-only", action="store_true",
                    help="fast scan: read headers only, do not decode the pixels (undecodable files then enter the "
                         "manifest)")
    ap.add_argument("--verify", action="store_true", help="kept for compatibility: decoding is the default")
    ap.add_argument("--no-dicomdir", action="store_true", help="walk the folder even when ROOT/DICOMDIR exists")
    ap.add_argument("--file-timeout", type=float, default=30.0, help="seconds per file (0: no limit)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status (0 ok, 2 bad input)."""
    args = _build_parser().parse_args(argv)
    frames: str | int = int(args.frames) if re.fullmatch(r"-?\d+", args.frames) else args.frames
    try:
        rep = ingest(
            args.root, args.labels, key=args.key, label_column=args.label_column or ["label"], out=args.out,
            salt_env=args.salt_env, salt_file=args.salt_file, csv_key_column=args.csv_key_column, frames=frames,
            series_slices=args.series_slices, absolute_paths=args.absolute_paths,
            unlabelled="keep" if args.keep_unlabelled else "skip", verify=not args.header_only,
            use_dicomdir=not args.no_dicomdir, file_timeout=args.file_timeout or None, private_map=args.private_map,
        )
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"ingest: error: {e}", file=sys.stderr)
        return 2
    print(f"manifest: {rep.manifest} ({rep.rows} rows: {rep.kept} kept, {rep.added} added)")
    print(f"report:   {rep.report} ({rep.scanned} files scanned, {len(rep.skipped)} skipped)")
    print(f"private:  {rep.private_map} (key -> path map; holds paths that may identify patients: keep it beside "
          "the archive, never share it)")
    for reason, n in rep.to_dict()["skip_reasons"].items():
        print(f"  skipped {n:6d}: {reason}")
    if rep.label_rows:
        print(f"labels:   {rep.label_rows} rows, {len(rep.unmatched_labels)} matching no file (CSV lines in the "
              f"report), {len(rep.files_without_label)} file(s) matching no label row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
