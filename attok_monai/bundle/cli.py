"""The short bundle command (see the package docstring)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

__all__ = ["bundle_run_args", "main", "WORKFLOWS"]

WORKFLOWS = ("train", "evaluate", "inference")
USAGE = (
    "usage: python -m attok_monai.bundle run --config BUNDLE_DIR [train|evaluate|inference] "
    "[--extra NAME ...] [--key value ...]\n"
    "  --extra NAME   also merge configs/NAME.json (e.g. --extra baseline for the ablation baseline)\n"
    "  --debug        show the full traceback of an input error (default: one short message)\n"
    "  other --key value pairs are passed to monai.bundle.run unchanged (config overrides, --tracking mlflow, ...)"
)


def _value(text: str) -> Any:
    """Parse an override the way MONAI's fire-based CLI does for simple literals."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def bundle_run_args(argv: list[str]) -> dict[str, Any]:
    """Turn the short command line (after ``run``) into ``monai.bundle.run`` keyword arguments.

    Raises:
        ValueError: no ``--config``, a folder that is not a bundle, or an unknown workflow.
    """
    bundle: str | None = None
    workflow = "train"
    extras: list[str] = []
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            key, eq, val = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ValueError(f"option --{key} needs a value.\n{USAGE}")
                val = argv[i + 1]
                i += 1
            if key == "config":
                bundle = val
            elif key == "extra":
                extras.append(val)
            elif key == "workflow":
                workflow = val
            else:
                overrides[key] = _value(val)
        elif arg in WORKFLOWS:
            workflow = arg
        else:
            raise ValueError(f"unexpected argument {arg!r}.\n{USAGE}")
        i += 1
    if bundle is None:
        raise ValueError(f"--config BUNDLE_DIR is required.\n{USAGE}")
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, got {workflow!r}.")
    root = Path(bundle)
    configs = root / "configs"
    main_cfg = configs / f"{workflow}.json"
    if not root.is_dir() or not configs.is_dir():
        raise ValueError(f"{root} is not a MONAI bundle folder: expected {configs}/ with {workflow}.json and metadata.json.")
    if not main_cfg.is_file():
        raise ValueError(f"bundle {root} has no {main_cfg.relative_to(root)} (workflow {workflow!r}).")
    config_files = [str(main_cfg)]
    for name in extras:
        extra = configs / (name if name.endswith(".json") else f"{name}.json")
        if not extra.is_file():
            raise ValueError(f"bundle {root} has no extra config {extra.relative_to(root)}.")
        config_files.append(str(extra))
    kwargs: dict[str, Any] = {"config_file": config_files[0] if len(config_files) == 1 else config_files}
    if (configs / "metadata.json").is_file():
        kwargs["meta_file"] = str(configs / "metadata.json")
    if (configs / "logging.conf").is_file():
        kwargs["logging_file"] = str(configs / "logging.conf")
    kwargs["bundle_root"] = str(root.resolve())
    kwargs.update(overrides)
    return kwargs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] != "run":
        print(f"unknown command {argv[0]!r}.\n{USAGE}", file=sys.stderr)
        return 2
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        kwargs = bundle_run_args(argv[1:])
    except ValueError as e:
        print(f"attok_monai.bundle: {e}", file=sys.stderr)
        return 2
    from monai.bundle import run

    from attok_monai.errors import user_error

    try:
        run(**kwargs)
    except Exception as e:
        err = None if debug else user_error(e)
        if err is None:
            raise
        print(f"attok_monai.bundle: error: {err} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0
