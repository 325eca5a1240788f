"""Linear probe of visual features: how well the mean visual token (before ACC) of a frozen model separates each
set's classes on its validation part, for the compact generalist, a random initialisation of the same architecture,
and the trained baselines that ``bench_bundles.py`` left (from scratch and from the generalist).

A logistic regression (scikit-learn, standardised inputs) is fitted on the features of the bundle's training part,
read with the validation transforms (no augmentation), and scored on its validation part. It says whether a start's
features are better than a random start's before any fine-tuning, and whether fine-tuning improved them. Nothing
here trains a model; the probes take a few minutes on 2 CPU cores.

    python benchmarks/probe_features.py --generalist_dir G/model                     # writes docs/benchmarks.md
    python benchmarks/probe_features.py --generalist_dir G/model --bundles fundus_dr --tags gen_fv --print
    python benchmarks/probe_features.py --generalist_dir G2/model --label "class-balanced generalist" --tags --print
    python benchmarks/probe_features.py --report-only                               # the doc from the recorded probes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import hardware, write_section  # noqa: E402
from bench_bundles import default_data_root, run_name  # noqa: E402

from attok_monai.fileio import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATE = Path(__file__).resolve().parent / ".state"
SECTION = "feature_probe"
CLASSIFICATION = ("fundus_dr", "derma_isic", "oct_retina", "xray_pneumonia", "pathology_lung")
#: the baseline result sets of issue 21's table (starts_table.ROWS): from scratch, then from the generalist
DEFAULT_TAGS = {"fundus_dr": ("merged", "gen_new"), "derma_isic": ("study", "gen_new")}


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 ) -> tuple[float, float]:
    """(accuracy, macro-F1), in %, of a logistic regression fitted on standardised ``x_train`` (N, d) with labels
    ``y_train`` (N,) and scored on ``x_val`` (M, d), ``y_val`` (M,)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=3000).fit(scale.transform(x_train), y_train)
    pred = clf.predict(scale.transform(x_val))
    return 100 * accuracy_score(y_val, pred), 100 * f1_score(y_val, pred, average="macro")


def find_run(bundle: str, tag: str, seed: int = 0, variant: str = "baseline", root: Path = REPO) -> Path | None:
    """The model folder of the newest benchmark run ``<bundle>_bench_<tag>_<variant>_s<seed>_<time>``, or None."""
    runs = sorted((root / "bundles" / bundle / "runs").glob(f"{run_name(bundle, variant, seed, tag)}_2*/model"))
    runs = [r for r in runs if (r / "model.pt").is_file()]
    return runs[-1] if runs else None


def _parser(bundle: str, split: str, generalist_dir: str | None):
    from attok_monai.configs import read_config

    files = [REPO / "bundles" / bundle / "configs" / "train.json"]
    if generalist_dir:
        files.append(REPO / "bundles" / bundle / "configs" / "from_generalist.json")
    p = read_config(files)
    p.update({"output_dir": tempfile.mkdtemp(prefix="probe_"), "val_split": split, "use_attribute_tokens": False,
              "use_acc": False, "use_acm": False, "bundle_root": str(REPO / "bundles" / bundle)})
    if generalist_dir:
        p["generalist_dir"] = generalist_dir
    return p


@torch.no_grad()
def features(net: torch.nn.Module, loader: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) mean visual tokens before ACC and (N,) class indices over ``loader``'s batches."""
    from attok_monai.engines.domain import mean_visual_token
    from attok_monai.engines.steps import _first_attributes

    net.eval()
    xs, ys = [], []
    for batch in loader:
        xs.append(mean_visual_token(net, batch["image"].float()).numpy())
        ys += [a[0] for a in _first_attributes(batch)]
    return np.concatenate(xs), np.asarray(ys)


def probe_bundle(bundle: str, generalist_dir: str, tags: Iterable[str], seed: int = 0, label: str = "generalist",
                 ) -> dict[str, list[float]]:
    """{start: [val accuracy, val macro-F1]} for the generalist (frozen; its row is ``"<label>, frozen"``), a random
    initialisation and every tag's trained baseline (seed ``seed``) that has a model folder."""
    from attok_monai.bundle.model_folder import load_pretrained

    train_loader = _parser(bundle, "train", generalist_dir).get_parsed_content("validate#dataloader")
    val_loader = _parser(bundle, "val", generalist_dir).get_parsed_content("validate#dataloader")

    def score(net: torch.nn.Module) -> list[float]:
        return [round(v, 2) for v in linear_probe(*features(net, train_loader), *features(net, val_loader))]

    out: dict[str, list[float]] = {}
    torch.manual_seed(seed)
    out[f"{label}, frozen"] = score(_parser(bundle, "val", generalist_dir).get_parsed_content("network"))
    torch.manual_seed(seed)
    out["random initialisation"] = score(_parser(bundle, "val", None).get_parsed_content("network"))
    for tag in tags:
        run = find_run(bundle, tag, seed)
        if run is not None:
            out[f"baseline trained, `{tag}` seed {seed}"] = score(load_pretrained(run))
    return out


HARDWARE = "_hardware"  # state key: {bundle: {row: the hardware line of the machine that probed it}}


def table(results: dict[str, dict[str, list[float]]], machines: dict[str, dict[str, str]] | None = None) -> str:
    """The markdown table of ``results`` ({bundle: {row: [accuracy, macro-F1]}}), with the machine each row was
    probed on (``machines``; rows probed before rows recorded it say so): a random initialisation, and a generalist
    trained on another CPU kind, differ by machine."""
    machines = machines or {}
    lines = ["| set | features of | probe accuracy | probe macro-F1 | probed on |", "|---|---|---|---|---|"]
    for bundle, rows in results.items():
        if bundle == HARDWARE:
            continue
        on = machines.get(bundle, {})
        lines += [f"| {bundle} | {name} | {acc:.1f} | {f1:.1f} | {on.get(name, 'not recorded (before 2026-12-03)')} |"
                  for name, (acc, f1) in rows.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generalist_dir", help="the compact generalist's model folder (required unless --report-only)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the doc section from the recorded probes, probe nothing")
    ap.add_argument("--bundles", nargs="+", default=list(CLASSIFICATION))
    ap.add_argument("--tags", nargs="*", default=None,
                    help="bench_bundles result sets whose trained baselines to probe as well (default: the baselines of "
                         "issue 21's table, from scratch and from the generalist)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="generalist",
                    help="the generalist's row name (another generalist, e.g. 'class-balanced generalist', gets its "
                         "own row instead of replacing the default one's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--print", action="store_true", help="print the table instead of writing the doc (the probes are "
                    "recorded in benchmarks/.state/feature_probe.json either way)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ATTOK_DATA_ROOT", default_data_root())
    state = STATE / "feature_probe.json"
    if not args.report_only and not args.generalist_dir:
        ap.error("--generalist_dir is required unless --report-only")
    new: dict[str, dict[str, list[float]]] = {}
    for bundle in [] if args.report_only else args.bundles:
        tags = args.tags if args.tags is not None else DEFAULT_TAGS.get(bundle, ("defaults", "gen"))
        new[bundle] = probe_bundle(bundle, args.generalist_dir, tags, args.seed, args.label)
        print(bundle, json.dumps(new[bundle]), flush=True)
    # read the state only now, so rows another probe recorded meanwhile (a second generalist's) are kept
    results = json.loads(state.read_text()) if state.is_file() else {}
    machines, this_machine = results.setdefault(HARDWARE, {}), hardware()
    for bundle, rows in new.items():
        results[bundle] = {**results.get(bundle, {}), **rows}
        machines[bundle] = {**machines.get(bundle, {}), **dict.fromkeys(rows, this_machine)}
    atomic_write_text(state, json.dumps(results, indent=1))
    if args.print:
        print(table({b: results[b] for b in args.bundles}, machines))
        return
    write_section(SECTION, (
        "### Linear probe of the starts' visual features\n\n"
        "Command: `python benchmarks/probe_features.py --generalist_dir <generalist>/model`. A logistic regression on "
        "the mean visual token (before ACC) of each frozen model, fitted on the set's training part (validation "
        "transforms) and scored on its validation part, in %. Trained baselines: seed 0 of the result sets named. "
        "The last column names the machine each row was probed on.\n\n" + table(results, results.get(HARDWARE))
    ))


if __name__ == "__main__":
    main()
