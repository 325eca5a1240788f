"""Cross-validation tables: rows scored on held-out folds of a training part (``--cv_folds K --cv_fold k``), paired
by fold (issue 21, round 22); with ``--folds 0``, rows scored on the official validation part, paired by seed.

Reads the runs that ``bench_bundles.py`` recorded in ``benchmarks/.state/<state>.json``. A run counts for fold k only
if its record's ``overrides`` name ``cv_folds=K`` and ``cv_fold=k`` (the fold is read from the record, never guessed
from the seed). Prints markdown:

1. per row, over folds: open accuracy, macro-F1, balanced accuracy and book retrieval (mean ± standard deviation over
   folds; the folds are equal parts of one training part, so the mean is the pooled score over every held image);
2. paired by fold: each named difference per fold, its mean, standard error and how many folds are above zero;
3. with ``--official DIR``: the same runs' models scored on the official validation part, read from
   ``DIR/off_<label>_f<fold>.json`` (``diagnose_attok.py --val --model_dir <run>/model --out ...``, the run's overrides
   without ``cv_folds``): accuracy per row and the pairs' differences, paired by fold.

A row is ``label=state:variant``, or ``label=state:variant,state2:variant`` for repetitions of the same folds with
other seeds (pooled: the pairs pair run i of one row with run i of the other, per fold); a pair is ``a-b`` of two
labels.

    python benchmarks/cv_table.py --rows baseline=fundus_dr_cv5:baseline tokens=fundus_dr_cv5:tokens \\
        all=fundus_dr_cv5:all --pairs tokens-baseline all-baseline all-tokens
    python benchmarks/cv_table.py --task vqa --rows baseline=vqa_rad_cv5:baseline all=vqa_rad_cv5:all \\
        --pairs all-baseline
    python benchmarks/cv_table.py --folds 0 --rows e=derma_isic_r29_e:baseline al=derma_isic_r29_al:baseline \\
        --pairs al-e
    python benchmarks/cv_table.py --folds 0 --keys 0 1 2 --rows e=oct_retina_gen_cb2:baseline  # seeds 0-2 only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics as st
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STATE = Path(__file__).resolve().parent / ".state"
MEASURES = (("open acc", "open_accuracy"), ("macro-F1", "open_macro_f1"), ("bal. acc", "open_balanced_accuracy"),
            ("retrieval", "retrieval_accuracy"))
# vqa_rad's records: open and closed questions scored apart (exact match), and overall
VQA_MEASURES = (("open acc", "open_accuracy"), ("closed acc", "closed_accuracy"), ("overall", "overall_accuracy"),
                ("open token F1", "open_token_f1"))
# per task: (the row table's measures, the two measures the pairs are listed in)
TASKS = {"classification": (MEASURES, MEASURES[:2]), "vqa": (VQA_MEASURES, VQA_MEASURES[:2])}


def fold_of(record: dict) -> tuple[int, int] | None:
    """``(cv_folds, cv_fold)`` from a run record's ``overrides``; ``None`` for a run that did not cross-validate."""
    over = dict(o.partition("=")[::2] for o in record.get("overrides") or [])
    folds, fold = int(over.get("cv_folds", 0) or 0), int(over.get("cv_fold", 0) or 0)
    return (folds, fold) if folds else None


def defined(variant: str, record: dict) -> dict:
    """``record`` without the measures ``variant`` does not define: book retrieval for a variant without attribute
    tokens (``bench_bundles.applies``; records of a baseline made before the evaluator dropped it carry a value). A
    variant ``bench_bundles`` does not define (another script's result set) keeps every measure."""
    from bench_bundles import VARIANTS, applies

    if variant not in VARIANTS:
        return record
    return {k: v for k, v in record.items() if not isinstance(v, (int, float)) or applies(variant, k)}


def read_row(state: str, variant: str, folds: int, state_dir: Path = STATE) -> dict[int, dict]:
    """``{fold: record}`` of ``variant``'s runs in ``state`` that held out a fold of ``folds``. Two runs of one fold
    in one result set are refused (which would count?). ``folds=0``: ``{seed: record}`` of the runs that did not
    cross-validate (scored on the official validation part), the seed read from the record's key."""
    path = state_dir / f"{state}.json"
    if not path.is_file():
        return {}
    out: dict[int, dict] = {}
    for key, rec in json.loads(path.read_text()).items():
        if key.partition("/")[0] != variant or not isinstance(rec, dict):
            continue
        rec = defined(variant, rec)
        f = fold_of(rec)
        if folds == 0:
            if f is None:
                out[int(key.partition("/")[2])] = rec
            continue
        if f is None or f[0] != folds:
            continue
        if f[1] in out:
            raise ValueError(f"{path}: two runs of {variant} hold out fold {f[1]} of {folds}")
        out[f[1]] = rec
    return out


def read_spec(where: str, folds: int, state_dir: Path = STATE) -> dict:
    """The runs of a row ``state:variant[,state:variant...]``: ``{fold: record}`` for one result set, ``{(i, fold):
    record}`` over several (``i``: the result set's place in the list, so repetition i pairs with repetition i)."""
    sources = []
    for part in where.split(","):
        state, _, variant = part.partition(":")
        if not (state and variant):
            raise ValueError(f"row {where!r}: expected state:variant[,state:variant...]")
        sources.append(read_row(state, variant, folds, state_dir))
    if len(sources) == 1:
        return sources[0]
    return {(i, k): rec for i, src in enumerate(sources) for k, rec in src.items()}


def only(recs: dict, keys: set[int] | None) -> dict:
    """A row's runs whose seed (``--folds 0``) or fold is in ``keys`` (None: all of them); for a pooled row, the fold
    of each ``(i, fold)`` key."""
    if keys is None:
        return recs
    return {k: r for k, r in recs.items() if (k[1] if isinstance(k, tuple) else k) in keys}


def _shown(keys) -> str:
    """The runs of a row: its folds, or ``n runs`` for a pooled row."""
    keys = sorted(keys)
    if keys and isinstance(keys[0], tuple):
        return f"{len(keys)} runs"
    return ",".join(map(str, keys)) or "none"


def mean_sd(xs: list[float]) -> str:
    return f"{st.mean(xs):.1f} ± {st.pstdev(xs):.1f}" if xs else "-"


def paired(a: dict[int, dict], b: dict[int, dict], key: str) -> list[float]:
    """Per fold (both rows scored it), ``100 * (a - b)`` of ``key``, in fold order."""
    return [100 * (a[k][key] - b[k][key]) for k in sorted(set(a) & set(b))
            if isinstance(a[k].get(key), (int, float)) and isinstance(b[k].get(key), (int, float))]


def signed(diffs: list[float]) -> str:
    """The differences as the tables list them: ``+1.9, -0.5, ...``."""
    return ", ".join(f"{d:+.1f}" for d in diffs)


def summary(diffs: list[float]) -> str:
    """``mean (se) k/n``: the mean difference, its standard error over folds and the folds above zero."""
    if not diffs:
        return "-"
    se = st.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return f"{st.mean(diffs):+.1f} ({se:.1f}) {sum(d > 0 for d in diffs)}/{len(diffs)}"


def _cells(recs: dict, measures) -> list[str]:
    """A row's ``mean ± SD`` of each measure over its runs (runs without the measure left out)."""
    return [mean_sd([100 * r[k] for r in recs.values() if isinstance(r.get(k), (int, float))]) for _, k in measures]


def _pair_lines(rows: dict, pairs: list[tuple[str, str]], measures) -> list[str]:
    """One line per pair: per measure, the per-fold differences and their summary."""
    out = []
    for a, b in pairs:
        cells = [paired(rows[a], rows[b], k) for _, k in measures]
        out.append(f"| {a} - {b} | " + " | ".join(f"{signed(d)} | {summary(d)}" for d in cells) + " |")
    return out


def tables(rows: dict[str, dict[int, dict]], pairs: list[tuple[str, str]], task: str = "classification",
           unit: str = "fold") -> str:
    """The row table (mean ± SD over folds of each of the task's measures) and, for ``pairs``, the per-fold
    differences in the task's two pair measures (classification: open accuracy and macro-F1; vqa: open and closed
    accuracy). ``held out`` counts the runs' validation samples (images; question-answer pairs for vqa). ``unit``
    names what the rows' runs are keyed and paired by in the headers: ``"fold"``, or ``"seed"`` (``--folds 0``)."""
    measures, pair_measures = TASKS[task]
    lines = ["| row | " + " | ".join(m for m, _ in measures) + f" | runs ({unit}s) | held out |",
             "|---|" + "---|" * (len(measures) + 2)]
    for label, recs in rows.items():
        n = sum(int(r.get("num_samples", 0)) for r in recs.values())
        lines.append(f"| {label} | " + " | ".join(_cells(recs, measures)) + f" | {_shown(recs)} | {n} |")
    if pairs:
        head = " | ".join(f"{m} per {unit} | {m}: mean (se) above 0" for m, _ in pair_measures)
        lines += ["", f"| difference | {head} |", "|---|" + "---|" * (2 * len(pair_measures))]
        lines += _pair_lines(rows, pairs, pair_measures)
    return "\n".join(lines)


def read_official(folder: Path, rows: dict[str, dict[int, dict]]) -> dict[str, dict[int, dict]]:
    """``{label: {fold: scores}}`` (fractions, as in the records) from ``off_<label>_f<fold>.json``, for the folds the
    row has runs of (rows of one result set; a pooled row is read through its parts' labels). A file is either
    ``diagnose_attok.py --val``'s output (``{"val": {"prob_accuracy": %, "images": n}}``: the class decision's accuracy
    as ``open_accuracy``) or an evaluate run's ``metrics.json`` (``{"metrics": {...}}``, e.g. vqa_rad's
    ``evaluate --split val``: its scores as they are)."""
    out: dict[str, dict[int, dict]] = {}
    for label, recs in rows.items():
        out[label] = {}
        for k in recs:
            path = folder / f"off_{label}_f{k}.json"
            if path.is_file():
                data = json.loads(path.read_text())
                if "val" in data:
                    out[label][k] = {"open_accuracy": data["val"]["prob_accuracy"] / 100,
                                     "num_samples": data["val"]["images"]}
                else:
                    out[label][k] = dict(data["metrics"])
    return out


def official_table(rows: dict[str, dict[int, dict]], pairs: list[tuple[str, str]], task: str = "classification") -> str:
    """The same models on the official validation part: per row the mean ± SD over the folds' models, and the pairs'
    per-fold differences (classification: the decision's accuracy; vqa: open and closed accuracy)."""
    measures = (("accuracy", "open_accuracy"),) if task == "classification" else TASKS[task][1]
    lines = ["| row (official validation part) | " + " | ".join(m for m, _ in measures) + " | models (folds) | held out |",
             "|---|" + "---|" * (len(measures) + 2)]
    for label, recs in rows.items():
        n = "/".join(map(str, sorted({int(r.get("num_samples", 0)) for r in recs.values()}))) or "-"
        lines.append(f"| {label} | " + " | ".join(_cells(recs, measures)) + f" | {_shown(recs)} | {n} |")
    if pairs:
        head = " | ".join(f"{m} per fold's model | {m}: mean (se) above 0" for m, _ in measures)
        lines += ["", f"| difference (official validation part) | {head} |", "|---|" + "---|" * (2 * len(measures))]
        lines += _pair_lines(rows, pairs, measures)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", required=True,
                    help="label=state:variant[,state:variant...] (state: benchmarks/.state/<state>.json)")
    ap.add_argument("--pairs", nargs="*", default=[], help="a-b: label a minus label b, paired by fold")
    ap.add_argument("--folds", type=int, default=5,
                    help="the runs' cv_folds; 0: runs on the official validation part, paired by seed")
    ap.add_argument("--keys", type=int, nargs="+", default=None,
                    help="only these seeds (with --folds 0) or folds, e.g. the table's seeds 0 1 2 of a result set "
                         "that holds more")
    ap.add_argument("--task", choices=sorted(TASKS), default="classification",
                    help="the records' measures: classification bundles, or vqa (vqa_rad: open and closed questions)")
    ap.add_argument("--official", default=None,
                    help="a folder of diagnose_attok.py --val outputs off_<label>_f<fold>.json (official validation)")
    args = ap.parse_args()
    rows = {}
    for spec in args.rows:
        label, _, where = spec.partition("=")
        if not (label and where) or "-" in label:
            raise SystemExit(f"--rows {spec!r}: expected label=state:variant (no '-' in the label)")
        rows[label] = only(read_spec(where, args.folds), set(args.keys) if args.keys else None)
    pairs = [tuple(p.split("-", 1)) for p in args.pairs]
    for a, b in pairs:
        if a not in rows or b not in rows:
            raise SystemExit(f"--pairs {a}-{b}: both labels must be in --rows ({', '.join(rows)})")
    print(tables(rows, pairs, args.task, "seed" if args.folds == 0 else "fold"))
    if args.official:
        print()
        single = {label: recs for label, recs in rows.items() if not any(isinstance(k, tuple) for k in recs)}
        print(official_table(read_official(Path(args.official), single),
                             [(a, b) for a, b in pairs if a in single and b in single], args.task))


if __name__ == "__main__":
    main()
