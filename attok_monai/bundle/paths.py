"""Where the running bundle is, and the snapshot of its configs beside a run."""

from __future__ import annotations

import logging
import os
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
    """Write the bundle's ``configs/*.json`` into ``output_dir/configs`` (logged with the run's artifacts), each with
    its ``%file#id`` macros resolved: the shared base (``attok_monai/configs``) may change after the run, the
    snapshot must still say what the run used. A file whose macros cannot be resolved is copied as it is."""
    import json

    from attok_monai.configs import read_config
    from attok_monai.fileio import atomic_write_text

    src = Path(bundle_root) / "configs"
    dst = Path(output_dir) / "configs"
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.json")):
        text = f.read_text()
        if '"%' in text:
            try:
                parser = read_config(f)
                config = {k: v for k, v in parser.get().items() if k != parser.meta_key}
                text = json.dumps(config, indent=4) + "\n"
            except Exception as e:  # noqa: BLE001 - a snapshot never stops a run; the raw file is kept instead
                logging.getLogger(__name__).warning("config snapshot: %s keeps its macros (%s)", f.name, e)
        atomic_write_text(dst / f.name, text)
