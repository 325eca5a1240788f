"""vqa_rad bundle: baseline (plain-text answers) vs +All (AttTok) over seeds, next to the question-only floor.

Each (variant, seed) run is a real ``python -m monai.bundle run`` of ``bundles/vqa_rad/configs/train.json`` through
:func:`benchmarks.bench_bundles.run_one` (same subprocess, overrides and log layout as the classification bundles),
scored on the held-out-by-image validation part at the last epoch. Finished runs are recorded in
``benchmarks/.state/vqa_rad.json`` and skipped on rerun (resume after a stop). Every run logs to MLflow
(``--mlflow_tracking_uri``, default ``sqlite:///benchmarks/.state/mlruns_vqa.db``).

    ATTOK_DATA_ROOT=/path/to/data python benchmarks/bench_vqa.py --seeds 0 1 2      # docs/results_vqa.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._report import hardware, write_section  # noqa: E402
from benchmarks.bench_bundles import LABELS, STATE, default_data_root, final_epoch, fmt, override_args, run_one  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "vqa_rad"
DOC = REPO / "docs" / "results_vqa.md"
METRICS = [("closed_accuracy", "closed acc"), ("open_accuracy", "open exact match"),
           ("open_token_f1", "open token F1"), ("overall_accuracy", "overall acc")]
# MEVF (Nguyen et al., MICCAI 2019), VQA-RAD *test* split, pretrained MAML + CDAE encoders: closed / open accuracy
MEVF = {"closed_accuracy": 75.1, "open_accuracy": 43.9}


def table(results: dict, variants: list[str], seeds: list[int]) -> str:
    lines = ["| model | " + " | ".join(m[1] for m in METRICS) + " | wall time (s) | seeds |",
             "|" + "---|" * (len(METRICS) + 3)]
    qo = None
    for variant in variants:
        runs = [results[f"{variant}/{s}"] for s in seeds if f"{variant}/{s}" in results]
        if not runs:
            continue
        qo = qo or runs[0]
        cells = [fmt([r.get(k, float("nan")) for r in runs]) for k, _ in METRICS]
        wall = fmt([r["wall_time_s"] for r in runs], pct=False)
        lines.append(f"| {LABELS[variant]} | " + " | ".join(cells) + f" | {wall} | {len(runs)} |")
    if qo is not None:
        cells = [fmt([qo.get(f"question_only_{k}", float("nan"))]) for k, _ in METRICS]
        lines.append("| question-only baseline (same val part) | " + " | ".join(cells) + " | — | — |")
    lines.append("| MEVF (MICCAI 2019), VQA-RAD **test**, pretrained; not comparable | "
                 f"{MEVF['closed_accuracy']} | {MEVF['open_accuracy']} | — | — | — | — |")
    return "\n".join(lines)


def verdict(results: dict, variants: list[str], seeds: list[int]) -> str:
    out = []
    for variant in variants:
        for s in seeds:
            r = results.get(f"{variant}/{s}")
            if r is None:
                continue
            m, q = r["overall_accuracy"] * 100, r["question_only_overall_accuracy"] * 100
            out.append(f"- {LABELS[variant]} seed {s}: overall {m:.1f} vs question-only {q:.1f} "
                       f"({m - q:+.1f} points): **{'beats' if m > q else 'does not beat'}** the question-only floor.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["baseline", "all"], choices=list(LABELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--override", nargs="*", default=[],
                    help="config overrides for every run as key=value (e.g. image_size=64); use with --tag")
    ap.add_argument("--mlflow_tracking_uri", default=f"sqlite:///{STATE / 'mlruns_vqa.db'}")
    ap.add_argument("--fresh", action="store_true", help="ignore recorded results")
    ap.add_argument("--final-val-only", action="store_true",
                    help="validate after the last epoch only (--val_interval = the bundle's epochs): same training procedure, "
                         "less time; another random stream (validation draws a loader seed)")
    ap.add_argument("--report-only", action="store_true", help="write the doc section from the recorded runs, train nothing")
    ap.add_argument("--tag", default="", help="name of a separate result set (own state file and doc section), e.g. "
                                               "for runs with --override")
    args = ap.parse_args()
    os.environ["ATTOK_DATA_ROOT"] = default_data_root()  # the bundle runs inherit it
    STATE.mkdir(parents=True, exist_ok=True)
    name = BUNDLE + (f"_{args.tag}" if args.tag else "")
    state_file = STATE / f"{name}.json"
    results = {} if args.fresh or not state_file.exists() else json.loads(state_file.read_text())
    extra = ["--mlflow_tracking_uri", args.mlflow_tracking_uri, *override_args(args.override)]
    if args.final_val_only:
        extra += ["--val_interval", str(final_epoch(BUNDLE, args.override))]
    for variant in args.variants:
        for seed in args.seeds:
            key = f"{variant}/{seed}"
            if key in results:
                print(f"[bench] {BUNDLE} {key}: done earlier, skipped")
                continue
            if args.report_only:
                print(f"[bench] {BUNDLE} {key}: not recorded, left out (--report-only)")
                continue
            print(f"[bench] {BUNDLE} {key}: training ...", flush=True)
            results[key] = run_one(BUNDLE, variant, seed, extra, STATE / "logs", tag=args.tag)
            state_file.write_text(json.dumps(results, indent=2))
            r = results[key]
            print(f"[bench] {key}: overall {r['overall_accuracy']:.3f} closed {r['closed_accuracy']:.3f} open "
                  f"{r['open_accuracy']:.3f} (question-only {r['question_only_overall_accuracy']:.3f}; "
                  f"{r['wall_time_s']:.0f} s)", flush=True)
    cmd = f"python benchmarks/bench_vqa.py --variants {' '.join(args.variants)} --seeds {' '.join(map(str, args.seeds))}"
    if args.final_val_only:
        cmd += " --final-val-only"
    if args.override:
        cmd += " --override " + " ".join(args.override)
    if args.tag:
        cmd += f" --tag {args.tag}"
    first = next(iter(results.values()), {})
    body = (f"Hardware: {hardware()}. Command: `{cmd}`. Mean ± std over the seeds listed (one number when one seed); "
            f"the bundle's CPU training (`configs/train.json`"
            + (f" with {', '.join(args.override)}" if args.override else ", defaults") + "), scored at the last epoch on the validation "
            f"part held out by image ({first.get('n', '?')} questions: {first.get('n_closed', '?')} closed, "
            f"{first.get('n_open', '?')} open). Percent.\n\n"
            + table(results, args.variants, args.seeds) + "\n\n" + verdict(results, args.variants, args.seeds))
    write_section(f"bench_{name}", body, doc=DOC)
    print(body)


if __name__ == "__main__":
    main()
