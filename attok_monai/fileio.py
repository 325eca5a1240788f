"""Atomic file writes: a file is complete or absent (temp file in the same folder, then ``os.replace``)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "rows_to_csv", "write_rows"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it to ``path`` (permissions ``mode``,
    default 0644; 0600 for private files). On any error the temp file is removed and ``path`` is left as it was.

    The temp file has ``path``'s own name, in a temp folder beside it (``.<name>.<random>.tmp/<name>``): writers that
    record their file name (``torch.save`` names its zip records after it) write the same bytes on every run, so a
    model saved twice from the same weights has the same checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = os.path.join(folder, path.name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.rmdir(folder)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Write ``text`` (UTF-8) to ``path`` completely or not at all (permissions ``mode``)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    atomic_write(path, write, mode)


def rows_to_csv(fields: Sequence[str], rows: Sequence[dict]) -> str:
    """CSV text with a header row."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_rows(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Write result rows atomically: CSV for a ``.csv`` path (columns of the first row), JSON otherwise."""
    if str(path).endswith(".csv"):
        atomic_write_text(path, rows_to_csv(list(rows[0]) if rows else ["id"], rows))
    else:
        atomic_write_text(path, json.dumps(list(rows), indent=2))
