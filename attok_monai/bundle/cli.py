"""The short bundle command (see the package docstring), on argparse.

Our own options (``--config``, the workflow, ``--extra``) are parsed by argparse, so ``-h`` works and a mistake gets
argparse's one-line message. Every other ``--key value`` (or ``--key=value``, or a bare ``--flag`` = True) is a MONAI
config override or ``monai.bundle.run`` argument, and its value is parsed the way MONAI's own fire-based CLI parses
it (``fire.parser.DefaultParseValue``: ``3`` -> int, ``[a,b]`` -> list, ``None`` -> None, which ``run`` then drops,
``none`` -> the string ``"none"``, which every optional path key of the bundles reads as "none"). One convenience on
top of fire: lower-case ``true``/``false`` are booleans, as in JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attok_monai.bundle.overrides import check_override_keys, scan_overrides

__all__ = ["bundle_run_args", "build_parser", "main", "WORKFLOWS"]

# the shared config base (attok_monai/configs, package data): its logging.conf serves a bundle without its own
SHARED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"

WORKFLOWS = ("train", "evaluate", "inference")
EPILOG = (
    "Every other --key value pair is passed to monai.bundle.run unchanged, parsed as MONAI's CLI parses it: config\n"
    "overrides (--epochs 20, --data_root D, --split test, --model_dir RUN/model, --resume latest, --checkpoint none)\n"
    "or run() arguments. Every bundle logs to MLflow by itself (one store per run: --mlflow_tracking_uri URI or\n"
    "MLFLOW_TRACKING_URI), so MONAI's --tracking mlflow is refused: it would add a second handler and store.\n"
    "Examples:\n"
    "  python -m attok_monai.bundle run --config bundles/fundus_dr --epochs 20\n"
    "  python -m attok_monai.bundle run --config bundles/fundus_dr evaluate --data_root /data/medmnist --split test\n"
    "  python -m attok_monai.bundle run --config bundles/fundus_dr --extra baseline\n"
    "A user error (missing or empty file, unknown label, bad column) is one line; --debug shows the traceback."
)


def _value(text: str) -> Any:
    """An override value as MONAI's fire-based CLI parses it (plus JSON's lower-case ``true``/``false``)."""
    from fire.parser import DefaultParseValue

    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return DefaultParseValue(text)


def build_parser() -> argparse.ArgumentParser:
    """``python -m attok_monai.bundle run --config BUNDLE_DIR [train|evaluate|inference] [--extra NAME ...]``."""
    top = argparse.ArgumentParser(
        prog="python -m attok_monai.bundle", description="Run a MONAI bundle by its folder (short form of "
        "python -m monai.bundle run --config_file BUNDLE/configs/<workflow>.json ...).",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="run")
    run = sub.add_parser(
        "run", help="run a bundle workflow", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run train.json, evaluate.json or inference.json of a bundle folder, merged with any --extra configs.",
    )
    run.add_argument("--config", required=True, metavar="BUNDLE_DIR", help="the bundle folder (holding configs/)")
    run.add_argument("workflow", nargs="?", choices=WORKFLOWS, help="which configs/<workflow>.json (default train)")
    run.add_argument("--workflow", dest="workflow_opt", choices=WORKFLOWS, help=argparse.SUPPRESS)
    run.add_argument("--extra", action="append", default=[], metavar="NAME",
                     help="also merge configs/NAME.json (repeatable), e.g. --extra baseline")
    run.add_argument("--debug", action="store_true", help="show the full traceback of an input error")
    return top


def _split(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Our own arguments (for argparse) and the overrides (for MONAI): ``--key value``, ``--key=value`` or a bare
    ``--flag`` (True, as fire reads it), values parsed by :func:`_value`. A token after an override key is its value,
    so argparse never mistakes an override's value for the workflow."""
    ours, raw = scan_overrides(argv, own_options=("--config", "--extra", "--workflow"), own_flags=("--debug", "--help"))
    overrides: dict[str, Any] = {k: True if v is None else _value(v) for k, v in raw.items()}  # bare flag: True (fire)
    return ours, overrides


def bundle_run_args(argv: list[str]) -> dict[str, Any]:
    """Turn the short command line (after ``run``) into ``monai.bundle.run`` keyword arguments.

    Raises:
        ValueError: a folder that is not a bundle, a missing config, or a malformed override.
        SystemExit: argparse's own errors (no ``--config``, an unknown workflow) and ``-h``.
    """
    ours, overrides = _split(argv)
    ns = build_parser().parse_args(["run", *ours])
    workflow = ns.workflow or ns.workflow_opt or "train"
    if "tracking" in overrides:
        raise ValueError(
            "--tracking is not needed: every bundle logs to MLflow by itself (set --mlflow_tracking_uri URI or "
            "MLFLOW_TRACKING_URI); MONAI's --tracking mlflow would add a second MLflow handler and store."
        )
    root = Path(ns.config)
    configs = root / "configs"
    main_cfg = configs / f"{workflow}.json"
    if not root.is_dir() or not configs.is_dir():
        raise ValueError(f"{root} is not a MONAI bundle folder: expected {configs}/ with {workflow}.json and metadata.json.")
    if not main_cfg.is_file():
        raise ValueError(f"bundle {root} has no {main_cfg.relative_to(root)} (workflow {workflow!r}).")
    config_files = [str(main_cfg)]
    for name in ns.extra:
        extra = configs / (name if name.endswith(".json") else f"{name}.json")
        if not extra.is_file():
            raise ValueError(f"bundle {root} has no extra config {extra.relative_to(root)}.")
        config_files.append(str(extra))
    check_override_keys(config_files, overrides)  # a mistyped key would be added to the config and ignored
    kwargs: dict[str, Any] = {"config_file": config_files[0] if len(config_files) == 1 else config_files}
    if (configs / "metadata.json").is_file():
        kwargs["meta_file"] = str(configs / "metadata.json")
    logging_file = configs / "logging.conf"
    kwargs["logging_file"] = str(logging_file if logging_file.is_file() else SHARED_CONFIGS / "logging.conf")
    kwargs["bundle_root"] = str(root.resolve())
    kwargs.update(overrides)
    return kwargs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] != "run":
        parser.parse_args(argv)  # prints help (-h) or argparse's usage error and exits
        return 2
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        kwargs = bundle_run_args(argv[1:])
    except ValueError as e:
        parser.exit(2, f"attok_monai.bundle: {e}\n")
    from monai.bundle import run

    from attok_monai.configs import install
    from attok_monai.errors import user_error

    install()  # the bundles' %attok_monai/configs/... macros resolve from any working directory
    try:
        run(**kwargs)
    except Exception as e:
        err = None if debug else user_error(e)
        if err is None:
            raise
        print(f"attok_monai.bundle: error: {err} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0
