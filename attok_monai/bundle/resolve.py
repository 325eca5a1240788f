"""Every bundle config combination, resolved the way MONAI reads it, as canonical JSON (a golden to compare against).

For each bundle folder and each documented combination (a workflow's ``configs/<workflow>.json`` plus any ``--extra``
files), the file list is the one the short command passes to MONAI (:func:`attok_monai.bundle.cli.bundle_run_args`,
the same list ``python -m monai.bundle run --config_file "['a.json','b.json']"`` reads). It is loaded with
``monai.bundle.ConfigParser.read_config`` and ``resolve_macro_and_relative_ids()`` (``%file#id`` macros pulled in,
relative ``@#id`` made absolute); nothing is instantiated and no ``$`` expression is evaluated. The result is written
as JSON with sorted keys, one file per combination::

    python -m attok_monai.bundle.resolve --out tests/data/resolved_configs            # write the goldens
    python -m attok_monai.bundle.resolve --out /tmp/new --bundles /tmp/old/bundles     # another checkout's bundles

``%`` macro paths are relative to the working directory, so resolution runs from the repository root (the folder
above ``--bundles``), as the README's commands do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["combinations", "resolve_files", "resolved", "canonical", "write_all", "main"]

REPO = Path(__file__).resolve().parents[2]
MAIN = ("train", "evaluate", "inference", "export")  # configs that run by themselves
NOT_EXTRA = {*MAIN, "metadata", "manifest_evaluate"}  # never merged over train
EVAL_EXTRAS = ("full", "dermamnist", "octmnist", "manifest_evaluate")  # data-source overrides evaluate also takes
COMBOS = (("baseline", "from_generalist"), ("train_qwen25vl", "multi_gpu_train"), ("train_qwen25vl", "baseline"))


def _is_bundle(folder: Path) -> bool:
    return (folder / "configs" / "metadata.json").is_file()


def combinations(bundles: Path) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """``(bundle, workflow, extras)`` for every bundle folder under ``bundles``: each workflow config alone, train with
    each override file (baseline, tokens_only, full, manifest, from_generalist, train_qwen25vl, multi_gpu_train ...),
    evaluate with each data-source override, and the documented multi-extra commands."""
    for folder in sorted(p for p in bundles.iterdir() if p.is_dir() and _is_bundle(p)):
        names = sorted(p.stem for p in (folder / "configs").glob("*.json"))
        for wf in MAIN:
            if wf in names:
                yield folder.name, wf, ()
        if "train" in names:
            for extra in names:
                if extra not in NOT_EXTRA:
                    yield folder.name, "train", (extra,)
            for combo in COMBOS:
                if all(c in names for c in combo):
                    yield folder.name, "train", combo
        if "evaluate" in names:
            for extra in EVAL_EXTRAS:
                if extra in names:
                    yield folder.name, "evaluate", (extra,)


def name_of(bundle: str, workflow: str, extras: tuple[str, ...]) -> str:
    """The golden's file name, e.g. ``fundus_dr__train+baseline.json``."""
    return f"{bundle}__{'+'.join((workflow, *extras))}.json"


def config_files(bundles: Path, bundle: str, workflow: str, extras: tuple[str, ...]) -> list[str]:
    """The config file list the short command hands to ``monai.bundle.run`` for this combination (export.json: the
    file itself)."""
    from attok_monai.bundle.cli import WORKFLOWS, bundle_run_args

    if workflow not in WORKFLOWS:  # export.json: read by attok_monai's export, not run by the short command
        return [str(bundles / bundle / "configs" / f"{n}.json") for n in (workflow, *extras)]
    argv = ["--config", str(bundles / bundle), workflow]
    for e in extras:
        argv += ["--extra", e]
    files = bundle_run_args(argv)["config_file"]
    return [files] if isinstance(files, str) else list(files)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _normalize(value: Any) -> Any:
    """Every string with MONAI's id separator: ``resolve_macro_and_relative_ids`` rewrites ``#`` as ``::`` in the
    strings a file holds, but not in the content a ``%file#id`` macro pulls in; the reference resolver normalises
    both the same way when it parses, so ``@train#sampler`` and ``@train::sampler`` are one reference."""
    from monai.bundle.reference_resolver import ReferenceResolver

    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return ReferenceResolver.normalize_id(value) if isinstance(value, str) else value


def resolve_files(files: list[str]) -> dict[str, Any]:
    """``ConfigParser.read_config(files)`` then ``resolve_macro_and_relative_ids()``: the dict MONAI parses (strings
    normalised, see :func:`_normalize`)."""
    from attok_monai.configs import read_config

    return _normalize(read_config(files if len(files) > 1 else files[0]).get())


def resolved(bundles: Path, bundle: str, workflow: str, extras: tuple[str, ...] = ()) -> dict[str, Any]:
    """One combination resolved from the repository root above ``bundles``."""
    bundles = bundles.resolve()
    with _cwd(bundles.parent):
        files = config_files(Path(bundles.name), bundle, workflow, extras)
        return resolve_files(files)


def canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(bundles: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for bundle, wf, extras in combinations(bundles):
        path = out / name_of(bundle, wf, extras)
        path.write_text(canonical(resolved(bundles, bundle, wf, extras)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attok_monai.bundle.resolve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=Path, default=REPO / "bundles", help="the bundles folder (default: this repo's)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the <bundle>__<workflow>+<extras>.json files")
    args = ap.parse_args(argv)
    written = write_all(args.bundles, args.out)
    print(f"wrote {len(written)} resolved configs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
