"""The bundles' shared config base (package data): ``classification/*.json`` and ``logging.conf``.

A bundle config pulls a shared key with a MONAI macro, ``"%attok_monai/configs/classification/train.json#train#trainer"``.
MONAI reads a macro's file path relative to the working directory, so ``python -m monai.bundle run --config_file
bundles/...`` resolves them from the repository root. :func:`install` lets every process that uses attok_monai (the
short command ``python -m attok_monai.bundle``, the tests, the benchmarks, the compact generalist reading its source
bundles) resolve them from any directory: a macro file under ``attok_monai/configs/`` that the working directory does
not hold is read from this package instead (a path that exists is read as MONAI would).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

__all__ = ["ROOT", "MACRO_DIR", "locate", "install", "read_config"]

ROOT = Path(__file__).resolve().parent
MACRO_DIR = "attok_monai/configs/"


def locate(path: str | os.PathLike) -> str | os.PathLike:
    """``path`` itself, or this package's copy when ``path`` is ``attok_monai/configs/...`` and absent here."""
    text = Path(path).as_posix()
    if text.startswith(MACRO_DIR) and not Path(path).exists():
        return str(ROOT / text[len(MACRO_DIR):])
    return path


def install() -> None:
    """Make ``monai.bundle.ConfigParser.load_config_file`` (which reads ``%file#id`` macros) fall back to
    :func:`locate`. Idempotent; changes nothing for a path that exists."""
    from monai.bundle import ConfigParser

    current = ConfigParser.__dict__["load_config_file"]
    if getattr(current.__func__, "_attok_shared", False):
        return
    original = current.__func__

    def load_config_file(cls: Any, filepath: Any, **kwargs: Any) -> dict:
        return original(cls, locate(filepath) if isinstance(filepath, (str, os.PathLike)) else filepath, **kwargs)

    load_config_file._attok_shared = True  # type: ignore[attr-defined]
    load_config_file.__doc__ = original.__doc__
    ConfigParser.load_config_file = classmethod(load_config_file)  # type: ignore[method-assign]


def read_config(files: str | os.PathLike | Sequence[str | os.PathLike]) -> ConfigParser:
    """A ``monai.bundle.ConfigParser`` holding ``files`` (a list merges, later over earlier, as MONAI's
    ``--config_file``) with the shared base's ``%file#id`` macros pulled in and relative ids made absolute, from any
    working directory (:func:`install`). Nothing is instantiated; set overrides on the returned parser."""
    from monai.bundle import ConfigParser

    install()
    parser = ConfigParser()
    parser.read_config([str(f) for f in files] if isinstance(files, (list, tuple)) else str(files))
    parser.resolve_macro_and_relative_ids()
    return parser
