"""Where the running bundle is, and the snapshot of its configs beside a run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["find_bundle_root", "snapshot_configs"]


def find_bundle_root(default: str = ".") -> str:
    """The bundle folder of the running config: ``--bundle_root`` wins (a config override), else the parent of
    the ``configs`` folder named by ``--config_file`` on the command line, else ``default``.

    Why not MONAI's own: MONAI 1.6 sets no ``bundle_root`` from ``--config_file`` (model-zoo bundles write
    ``"bundle_root": "."`` and expect to be run from inside the bundle folder); the README's command runs from the
    repository root, so the folder is read off the command line here. Our short CLI and tests pass ``bundle_root``
    explicitly, which wins."""
    argv = sys.argv
    for i, a in enumerate(argv):
        val = None
        if a == "--config_file" and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith("--config_file="):
            val = a.split("=", 1)[1]
        if val:
            first = val.strip("[]").split(",")[0].strip().strip("'\"")
            cfg = Path(first).resolve()
            return str(cfg.parent.parent if cfg.parent.name == "configs" else cfg.parent)
    return default


def snapshot_configs(bundle_root: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Copy the bundle's ``configs/*.json`` into ``output_dir/configs`` (logged with the run's artifacts)."""
    src = Path(bundle_root) / "configs"
    dst = Path(output_dir) / "configs"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.json"):
        shutil.copy2(f, dst / f.name)
