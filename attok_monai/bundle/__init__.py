"""Run a bundle by its folder: ``python -m attok_monai.bundle run --config bundles/<name> [train|evaluate|inference]``.

A thin front to ``monai.bundle.run``: it finds the bundle's ``configs/<workflow>.json``, ``metadata.json`` and
``logging.conf``, sets ``bundle_root`` to the folder and passes every other ``--key value`` override through
unchanged, so ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json`` resolves to the same
config.
"""

from .cli import bundle_run_args, main

__all__ = ["bundle_run_args", "main"]
