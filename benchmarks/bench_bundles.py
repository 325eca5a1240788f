"""AttTok ablations per bundle: baseline, attribute tokens alone (``tokens``), +ACC, +ACM, +All over seeds, on the splits that are present.

Each (bundle, variant, seed) run is a real ``python -m monai.bundle run`` of the bundle's ``configs/train.json`` with
overrides, in a subprocess; its final validation ``metrics.json`` is collected. Finished runs are recorded in
``benchmarks/.state/<bundle>.json`` and skipped on rerun (resume after a stop). Every run also logs to MLflow as usual.
Bundles whose data are absent are skipped, and the doc says so.

    python benchmarks/bench_bundles.py --bundles fundus_dr --seeds 0 1 2          # docs/results_fundus.md
    python benchmarks/bench_bundles.py --bundles all                               # docs/benchmarks.md table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attok_monai.fileio import atomic_write_text  # noqa: E402
from attok_monai.provenance import AVX2_KERNEL_PINS  # noqa: E402
from benchmarks._report import hardware, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / "benchmarks" / ".state"
VARIANTS = {
    "baseline": {"use_attribute_tokens": False, "use_acc": False, "use_acm": False},
    "tokens": {"use_attribute_tokens": True, "use_acc": False, "use_acm": False},  # configs/tokens_only.json
    "acc": {"use_attribute_tokens": True, "use_acc": True, "use_acm": False},
    "acm": {"use_attribute_tokens": True, "use_acc": False, "use_acm": True},
    "all": {"use_attribute_tokens": True, "use_acc": True, "use_acm": True},
}
LABELS = {"baseline": "baseline (plain-text IT)", "tokens": "tokens only", "acc": "+ACC", "acm": "+ACM", "all": "+All (AttTok)"}
# MedMNIST v2 ResNet-18 published test accuracy (Yang et al. 2023, Table 3), keyed by the dataset a run trained on:
# only a run on that dataset (or, for HAM10000, on its images) is set next to it.
RESNET18 = {  # dataset: (ResNet-18 (28) acc, ResNet-18 (224) acc or None, note)
    "retinamnist": (52.4, None, ""),
    "dermamnist": (73.5, 75.4, ""),
    "octmnist": (74.3, None, ""),
    "pneumoniamnist": (85.4, None, ""),
    "pathmnist": (90.7, None, ""),
    "ham10000": (73.5, 75.4, " (DermaMNIST = the same HAM10000 images, split at random **by image**; this split is "
                             "**by lesion**, harder and free of leakage between images of one lesion)"),
}
METRICS = [
    ("open_accuracy", "open acc"), ("closed_accuracy", "closed acc"), ("open_macro_f1", "macro-F1"),
    ("open_balanced_accuracy", "bal. acc"), ("auc", "AUC"), ("retrieval_accuracy", "retrieval acc"),
]


def default_data_root() -> str:
    """``$ATTOK_DATA_ROOT``, else ``<repo>/data`` when it exists, else ``../shared/data`` beside the repository (the
    Makefile's default)."""
    if os.environ.get("ATTOK_DATA_ROOT"):
        return os.environ["ATTOK_DATA_ROOT"]
    local = REPO / "data"
    return str(local if local.is_dir() else (REPO.parent / "shared" / "data").resolve())


def bundles_available() -> list[str]:
    return sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "train.json").is_file())


def config_files(bundle: str, extras: Sequence[str] = ()) -> list[Path]:
    """``configs/train.json`` of ``bundle`` followed by ``configs/<extra>.json`` for each extra (e.g. ``octmnist``).

    Raises:
        FileNotFoundError: an extra config the bundle does not have (the message names the file).
    """
    files = [REPO / "bundles" / bundle / "configs" / f"{name}.json" for name in ("train", *extras)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{bundle}: no config {f.relative_to(REPO)}")
    return files


def train_config(bundle: str, extras: Sequence[str] = ()) -> dict:
    """The bundle's ``configs/train.json`` with the extras' top-level keys over it (epochs, dataset name)."""
    merged: dict = {}
    for f in config_files(bundle, extras):
        merged.update(json.loads(f.read_text()))
    return merged


def final_epoch(bundle: str, overrides: Sequence[str] = (), extras: Sequence[str] = ()) -> int:
    """The epoch count a run will train for: ``epochs=N`` among the ``key=value`` overrides, else the merged config's
    (what ``--final-val-only`` sets ``--val_interval`` to, so validation runs after the last epoch)."""
    given = {k: v for k, _, v in (pair.partition("=") for pair in overrides)}
    return int(given.get("epochs", train_config(bundle, extras)["epochs"]))


def _latest_run_dir(bundle: str, name: str) -> Path | None:
    """The newest run folder of ``name`` that completed: its final metrics written and its model saved at the end."""
    runs = [r for r in (REPO / "bundles" / bundle / "runs").glob(f"{name}_*")
            if (r / "model" / "model.pt").exists() and (r / "val" / "metrics.json").exists()]
    return max(runs, key=os.path.getmtime) if runs else None


def _run_metrics(run: Path) -> dict:
    return json.loads((run / "val" / "metrics.json").read_text())["metrics"]


def run_name(bundle: str, variant: str, seed: int, tag: str = "") -> str:
    """A benchmark run's name (its run folder prefix and log name); ``tag`` names a result set run with overrides, so
    its runs are never taken for the default runs (or the other way round) when resuming."""
    return f"{bundle}_bench_{tag + '_' if tag else ''}{variant}_s{seed}"


def run_extras(bundle: str, variant: str, seed: int, tag: str = "") -> dict:
    """Per-class F1 (the run's ``val/per_class.csv``) and mean training samples/s over epochs (the trainer's epoch
    log lines ``samples_per_s: x`` written by ``RunStatsHandler``) of a finished benchmark run."""
    name = run_name(bundle, variant, seed, tag)
    out: dict = {}
    run = _latest_run_dir(bundle, name)
    if run is not None and (run / "val" / "per_class.csv").exists():
        import csv

        with open(run / "val" / "per_class.csv", newline="") as f:
            out["per_class_f1"] = {row["class"]: float(row["f1"]) for row in csv.DictReader(f)}
    log = STATE / "logs" / f"{name}.log"
    if log.exists():
        import re

        rates = [float(x) for x in re.findall(r"samples_per_s: ([0-9.]+)", log.read_text(errors="ignore"))]
        if rates:
            out["samples_per_s"] = statistics.mean(rates)
    return out


def _finished_run(bundle: str, name: str) -> dict | None:
    """Metrics of a run of ``name`` that completed (its model folder was saved at the end), if any."""
    run = _latest_run_dir(bundle, name)
    if run is None:
        return None
    out = _run_metrics(run)
    out["wall_time_s"] = (run / "model" / "model.pt").stat().st_mtime - (run / "configs").stat().st_mtime
    return out


def start_of(pairs: Sequence[str]) -> dict | None:
    """The generalist a result set starts from, when ``generalist_dir=G`` is among the ``key=value`` overrides:
    ``{"generalist_run": <its card's run name>, "generalist_md5": <MD5 of G/model.pt>}`` (None for a start from
    scratch). Each result records it, so a result set never mixes runs started from two generalists: two pre-training
    runs with the same settings need not give the same weights (another code version, another thread count)."""
    from attok_monai.provenance import file_md5

    given = {k: v for k, _, v in (pair.partition("=") for pair in pairs)}
    if "generalist_dir" not in given:
        return None
    folder = Path(given["generalist_dir"])
    weights, card = folder / "model.pt", folder / "generalist.json"
    if not weights.is_file() or not card.is_file():
        raise SystemExit(f"--override generalist_dir={folder}: expected a compact generalist's model folder "
                         "(model.pt and generalist.json).")
    return {"generalist_run": json.loads(card.read_text()).get("run_name"), "generalist_md5": file_md5(weights)}


def other_starts(results: dict, start: dict | None) -> set[str]:
    """The starts (as sorted JSON; ``"null"``: not recorded) of the recorded ``results`` other than ``start``. Two
    starts are one when their weights are (the same ``generalist_md5``): a generalist retrained with the same command
    on the same CPU kind is the same start under another run name."""
    def weights(s: dict | None) -> str | None:
        return s.get("generalist_md5") if isinstance(s, dict) else None

    return {json.dumps(r.get("start"), sort_keys=True) for r in results.values()
            if isinstance(r, dict) and weights(r.get("start")) != weights(start)}


def check_same_start(state_file: Path, results: dict, start: dict | None) -> None:
    """Refuse to add runs to a result set whose recorded runs started elsewhere (another generalist, or one not
    recorded: results written before starts were recorded)."""
    other = other_starts(results, start)
    if other:
        raise SystemExit(
            f"{state_file.name}: its recorded runs started from {', '.join(sorted(other))} (null: not recorded), "
            f"this command from {json.dumps(start, sort_keys=True)}; a result set holds runs of one start: use "
            "another --tag (or --fresh to drop the recorded runs)."
        )


def override_args(pairs: list[str]) -> list[str]:
    """``["epochs=10", "image_size=64"]`` -> ``["--epochs", "10", "--image_size", "64"]`` (MONAI CLI overrides).

    ``key=value`` rather than ``--key value`` because argparse would read ``--key`` as an option of the benchmark.
    """
    out: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or key.startswith("-"):
            raise SystemExit(f"--override: expected key=value (e.g. epochs=10), got {pair!r}")
        out += [f"--{key}", value]
    return out


def recorded_overrides(overrides: list[str]) -> list[str]:
    """The ``--override key=value`` items a run is recorded with, beside its result: every one but
    ``generalist_dir`` (a path on the machine that ran it; the record's ``start`` names the generalist by run and
    MD5)."""
    return [o for o in overrides if o.partition("=")[0] != "generalist_dir"]


def record_result(state_file: Path, key: str, result: dict) -> dict:
    """Add one run's ``result`` under ``key`` to ``state_file`` and return the whole state. The file is re-read under
    an exclusive lock first, so two benchmark commands that add runs to one result set (e.g. different seeds of
    one bundle, side by side) keep each other's runs instead of the last writer's copy winning."""
    import fcntl

    state_file.parent.mkdir(parents=True, exist_ok=True)
    with open(state_file.with_name(f".{state_file.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(state_file.read_text()) if state_file.exists() else {}
        results[key] = result
        atomic_write_text(state_file, json.dumps(results, indent=2))
    return results


def pin_kernels(mode: str, environ: dict[str, str] | None = None, machine: str | None = None) -> dict[str, str]:
    """``mode`` ``"avx2"``: set :data:`attok_monai.provenance.AVX2_KERNEL_PINS` in ``environ`` (default
    ``os.environ``, which every run inherits) on an x86-64 ``machine`` (default: this one), keeping a variable the
    user set; ``"native"`` or another machine: nothing. Returns the variables it set."""
    env = os.environ if environ is None else environ
    machine = (platform.machine() if machine is None else machine).lower()
    if mode != "avx2" or machine not in ("x86_64", "amd64"):
        return {}
    added = {k: v for k, v in AVX2_KERNEL_PINS.items() if not env.get(k)}
    env.update(added)
    return added


def run_command(bundle: str, variant: str, seed: int, extra: Sequence[str], name: str,
                extra_configs: Sequence[str] = ()) -> list[str]:
    """The ``python -m monai.bundle run`` command of one configuration (``extra``: more ``--key value`` overrides).
    Every override names a key of the merged configs (the bundles refuse one that does not:
    :mod:`attok_monai.bundle.overrides`), so t-SNE is switched off only where the config has it."""
    files = config_files(bundle, extra_configs)
    cfg = str(files[0]) if len(files) == 1 else str([str(f) for f in files])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", cfg, "--seed", str(seed),
           "--bundle_name", name, "--resume", "False",
           "--ckpt_dir", str(REPO / "bundles" / bundle / "runs" / name / "models")]
    if "tsne" in train_config(bundle, extra_configs):  # the classification bundles' t-SNE; vqa_rad has none
        cmd += ["--tsne", "False"]
    for k, v in VARIANTS[variant].items():
        cmd += [f"--{k}", str(v)]
    return cmd + list(extra)


def run_one(bundle: str, variant: str, seed: int, extra: list[str], log_dir: Path, threads: int | None = None,
            tag: str = "", extra_configs: Sequence[str] = ()) -> dict:
    """Train one configuration; return its final validation metrics and wall time (samples/s: :func:`run_extras`;
    ``tag``: :func:`run_name`; ``extra_configs``: :func:`config_files`)."""
    name = run_name(bundle, variant, seed, tag)
    done = _finished_run(bundle, name)
    if done is not None:
        return done
    cmd = run_command(bundle, variant, seed, extra, name, extra_configs)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    t0 = time.perf_counter()
    env = os.environ.copy()
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {log}")
    run = _latest_run_dir(bundle, name)
    if run is None:
        raise RuntimeError(f"{name}: no metrics.json and saved model written; see {log}")
    metrics = _run_metrics(run)
    metrics["wall_time_s"] = wall
    return metrics


def fmt(values: list[float], pct: bool = True) -> str:
    vals = [v * 100 if pct else v for v in values if v == v]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def command_line(args: argparse.Namespace, bundle: str, data_root: str) -> str:
    """The shell command that reproduces ``bundle``'s runs of this invocation, as the report shows it; override
    values are shell-quoted (``data_file=$...`` expressions hold ``$``, spaces and parentheses)."""
    return (f"ATTOK_DATA_ROOT={shlex.quote(data_root)} python benchmarks/bench_bundles.py --bundles {bundle} "
            f"--seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs}"
            + (" --final-val-only" if args.final_val_only else "")
            + (f" --threads {args.threads}" if args.threads else "")
            + (f" --extra {' '.join(args.extra)}" if args.extra else "")
            + (f" --override {' '.join(map(shlex.quote, args.override))}" if args.override else "")
            + (f" --tag {args.tag}" if args.tag else ""))


def run_hardware(results: dict, seeds: Sequence[int]) -> str:
    """The hardware the counted runs (``seeds``) recorded, each distinct line once; runs that recorded none (run
    before runs recorded it) are counted, not guessed: the machine writing the report need not be the one that
    trained them."""
    runs = [r for k, r in results.items() if isinstance(r, dict) and int(k.rsplit("/", 1)[-1]) in seeds]
    seen = sorted({r["hardware"] for r in runs if r.get("hardware")})
    unknown = sum(1 for r in runs if not r.get("hardware"))
    parts = ["; ".join(seen)] if seen else []
    if unknown:
        parts.append(f"not recorded for {unknown} of {len(runs)} runs (run before runs recorded it)")
    return ", ".join(parts) if parts else "no runs"


def applies(variant: str, key: str) -> bool:
    """Whether metric ``key`` is defined for ``variant``: book retrieval needs trained attribute tokens (a baseline's
    a_k are the untrained keyword rows; runs recorded before the evaluator dropped it there still carry a value)."""
    return not key.startswith("retrieval") or VARIANTS[variant]["use_attribute_tokens"]


def table(bundle: str, results: dict, seeds: list[int]) -> str:
    head = "| variant | " + " | ".join(m[1] for m in METRICS) + " | wall time (s) | train samples/s | seeds |"
    lines = [head, "|" + "---|" * (len(METRICS) + 4)]
    for variant in VARIANTS:
        runs = [results[f"{variant}/{s}"] for s in seeds if f"{variant}/{s}" in results]
        if not runs:
            continue
        cells = [fmt([r.get(key, float("nan")) for r in runs]) if applies(variant, key) else "n/a"
                 for key, _ in METRICS]
        wall = fmt([r["wall_time_s"] for r in runs], pct=False)
        rate = fmt([r.get("samples_per_s", float("nan")) for r in runs], pct=False)
        lines.append(f"| {LABELS[variant]} | " + " | ".join(cells) + f" | {wall} | {rate} | {len(runs)} |")
    return "\n".join(lines)


def per_class_table(results: dict, seeds: list[int]) -> str:
    """Per-class F1 of the open-ended answers (paper Table 7 reports it for derma), mean ± std over seeds."""
    classes: list[str] = []
    for r in results.values():
        for c in r.get("per_class_f1", {}):
            if c not in classes:
                classes.append(c)
    if not classes:
        return ""
    variants = [v for v in VARIANTS if any(f"{v}/{s}" in results for s in seeds)]
    lines = ["| class | " + " | ".join(LABELS[v] for v in variants) + " |", "|---|" + "---|" * len(variants)]
    for c in classes:
        cells = [fmt([results[f"{v}/{s}"].get("per_class_f1", {}).get(c, float("nan"))
                      for s in seeds if f"{v}/{s}" in results]) for v in variants]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "Per-class F1 of the open-ended answers (%):\n\n" + "\n".join(lines)


def verdict(bundle: str, results: dict, seeds: list[int], extras: Sequence[str] = ()) -> str:
    def mean(variant: str, key: str) -> float | None:
        vals = [results[f"{variant}/{s}"][key] for s in seeds if key in results.get(f"{variant}/{s}", {})]
        return statistics.mean(vals) * 100 if vals else None

    out = []
    for key, label in (("open_accuracy", "open-ended accuracy"), ("open_macro_f1", "open-ended macro-F1")):
        base, full = mean("baseline", key), mean("all", key)
        if base is not None and full is not None:
            gain = full - base
            out.append(f"- +All vs baseline, {label}: {full:.1f} vs {base:.1f} ({gain:+.1f} points); "
                       f"target >= +2.0: **{'met' if gain >= 2 else 'missed'}**.")
    dataset = train_config(bundle, extras).get("dataset_name", "")
    full = mean("all", "open_accuracy")
    if dataset in RESNET18 and full is not None:
        r28, r224, note = RESNET18[dataset]
        refs = f"ResNet-18 (28x28) **test** accuracy {r28}" + (f" (ResNet-18 (224): {r224})" if r224 else "")
        out.append(f"- +All vs published MedMNIST v2 {refs}: {full:.1f} on **val** (test split withheld here; not "
                   f"the same split){note}; target >= {r28}: **{'met' if full >= r28 else 'missed'}**.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundles", nargs="+", default=["fundus_dr"], help="bundle names or 'all'")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--override", nargs="*", default=[],
                    help="config overrides for every run as key=value (e.g. epochs=10); the table then no longer shows "
                         "the default training")
    ap.add_argument("--extra", nargs="*", default=[],
                    help="bundle configs merged over train.json, e.g. octmnist or dermamnist (the MedMNIST versions); "
                         "the result set is tagged with their names unless --tag is given")
    ap.add_argument("--tag", default="", help="name of a result set run with --override: own run names, state file "
                                               "and results-doc section; docs/benchmarks.md keeps the default runs")
    ap.add_argument("--fresh", action="store_true", help="ignore recorded results")
    ap.add_argument("--report-only", action="store_true", help="write the docs from the recorded runs, train nothing")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with --threads threads)")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads per run (default: torch's default)")
    ap.add_argument("--doc", default=None, help="results file (default docs/results_<bundle>.md for one bundle)")
    ap.add_argument("--final-val-only", action="store_true",
                    help="validate after the last epoch only (--val_interval = the bundle's epochs): same training procedure, "
                         "less time; another random stream (validation draws a loader seed)")
    ap.add_argument("--kernels", choices=("avx2", "native"), default="avx2",
                    help="avx2 (default): pin torch's, MKL's and oneDNN's CPU code paths to AVX2 in every run "
                         "(attok_monai.provenance.AVX2_KERNEL_PINS, on x86-64; a variable already set is kept), so a "
                         "run on any x86-64 CPU with AVX2 or newer gives the bits the recorded runs got; native: "
                         "whatever the CPU offers (AVX-512 gives other bits)")
    args = ap.parse_args()
    pin_kernels(args.kernels)  # before this process's first tensor operation (hardware() reads the pinned ISA)
    args.tag = args.tag or "_".join(args.extra)
    bundles = bundles_available() if args.bundles == ["all"] else args.bundles
    data_root = default_data_root()
    os.environ["ATTOK_DATA_ROOT"] = data_root  # the bundle runs inherit it
    for bundle in bundles:
        override = override_args(args.override)
        if args.final_val_only:
            override += ["--val_interval", str(final_epoch(bundle, args.override, args.extra))]
        state_file = STATE / (f"{bundle}_{args.tag}.json" if args.tag else f"{bundle}.json")
        results = {} if args.fresh or not state_file.exists() else json.loads(state_file.read_text())
        skipped = None
        todo = [] if args.report_only else [
            (v, s) for v in args.variants for s in args.seeds if f"{v}/{s}" not in results
        ]
        start = start_of(args.override) if todo else None
        if todo:
            check_same_start(state_file, results, start)
        for v, s in [(v, s) for v in args.variants for s in args.seeds if f"{v}/{s}" in results]:
            print(f"[bench] {bundle} {v}/{s}: done earlier, skipped")
            recorded = results[f"{v}/{s}"]
            if "per_class_f1" not in recorded or math.isnan(recorded.get("samples_per_s", math.nan)):
                recorded.update(run_extras(bundle, v, s, args.tag))  # recorded before these were collected

        def work(job: tuple[str, int], bundle: str = bundle, override: list[str] = override,
                 ) -> tuple[str, dict | None, str | None]:
            variant, seed = job
            print(f"[bench] {bundle} {variant}/{seed}: training ...", flush=True)
            try:
                return f"{variant}/{seed}", run_one(bundle, variant, seed, override, STATE / "logs",
                                                    args.threads, args.tag, args.extra), None
            except RuntimeError as e:
                log = STATE / "logs" / f"{run_name(bundle, variant, seed, args.tag)}.log"
                log_text = log.read_text(errors="ignore")
                if "FileNotFoundError" in log_text and ("put" in log_text or "not found" in log_text.lower()):
                    return f"{variant}/{seed}", None, f"data not found under ATTOK_DATA_ROOT={data_root}"
                raise e

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for key, res, why in pool.map(work, todo):
                if why:
                    skipped = why
                    print(f"[bench] {bundle}: skipped ({why})")
                    continue
                variant, seed = key.split("/")
                results = record_result(state_file, key, {**res, **run_extras(bundle, variant, int(seed), args.tag),
                                                          "start": start, "overrides": recorded_overrides(args.override),
                                                          "hardware": hardware()})
                print(f"[bench] {bundle} {key}: open acc {res['open_accuracy']:.3f} ({res['wall_time_s']:.0f} s)",
                      flush=True)
        if skipped and args.tag:  # a tagged set that never ran leaves the docs alone
            print(f"### {bundle} ({args.tag})\n\nSkipped: {skipped}.")
            continue
        if skipped:
            body = f"### {bundle}\n\nSkipped: {skipped}."
        else:
            shown_root = os.path.relpath(data_root, REPO) if os.path.isabs(data_root) else data_root
            cmd = command_line(args, bundle, shown_root)
            training = (f"the bundle's CPU training with {', '.join(args.override)}" if args.override
                        else "the bundle's default CPU training")
            body = (f"### {bundle}{' (' + args.tag + ')' if args.tag else ''}: AttTok ablation on the validation "
                    f"split\n\n"
                    f"Hardware: {run_hardware(results, args.seeds)}. Command: `{cmd}`. Mean ± std over the seeds counted in the last "
                    f"column (of {args.seeds}); every run is {training} (`configs/train.json`), "
                    f"scored on `val` after the last epoch; train samples/s is the mean of the per-epoch training throughput "
                    f"(also in each run's MLflow metrics). Wall time and samples/s depend on what else shared the "
                    f"CPU ({args.jobs} run(s) at a time, {args.threads or 'default'} thread(s) each): compare them "
                    f"within a row, not as a speed claim.\n\n"
                    + table(bundle, results, args.seeds) + "\n\n" + verdict(bundle, results, args.seeds, args.extra))
            per_class = per_class_table(results, args.seeds)
            if per_class:
                body += "\n\n" + per_class
            if results:
                atomic_write_text(state_file, json.dumps(results, indent=2))
        section = f"bundle_{bundle}" + (f"_{args.tag}" if args.tag else "")
        if not args.tag:  # docs/benchmarks.md holds the default runs only
            write_section(section, body)
        if args.doc or len(bundles) == 1 or args.tag:
            doc = Path(args.doc) if args.doc else REPO / "docs" / f"results_{bundle.split('_')[0]}.md"
            write_section(section, body, doc=doc, header=(
                f"# Results: {bundle}\n\nAttTok ablations of the `{bundle}` bundle, measured by "
                "`benchmarks/bench_bundles.py` (every number comes from a run recorded in "
                "`benchmarks/.state/` and in MLflow).\n"))
        print(body)


if __name__ == "__main__":
    main()
