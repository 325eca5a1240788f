"""What the class-balanced sampler costs in accuracy, and what a prior correction of the decision gives back.

A bundle trained with ``balanced_sampler: true`` (derma_isic; the paper tunes on class-balanced data, Appendix A.2)
learns p_bal(k | x), the class posterior under uniform class frequencies. On data with the training part's class
frequencies pi_k, the Bayes decision is argmax_k [log p_bal(k | x) + log pi_k] (logit adjustment; Menon et al., ICLR
2021). This script measures, from a run's ``val/predictions.csv``, the decision from the class probabilities
(``p_<attribute>``, the attribute-token softmax) and from the book retrieval (``retrieval_<attribute>``, cosines,
read as logits at ACM's tau) with and without the correction, against the majority-class rate (the training part's
most frequent class scored on the validation part; for a run trained without the sampler, which has nothing to
correct, the validation part's most frequent class). It trains nothing and changes no bundle: it says whether a
deploy-time prior correction is worth building.

    python benchmarks/prior_shift.py bundles/derma_isic/runs/<run> [<run> ...] [--doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import DOC, write_section  # noqa: E402
from bench_bundles import fmt  # noqa: E402

from attok_monai.attributes import AttributeVocabulary  # noqa: E402
from attok_monai.metrics import classification_metrics  # noqa: E402

SECTION = "prior_shift"
DECISIONS = ("answers", "answers + log prior", "retrieval", "retrieval + log prior")


def train_prior(settings: dict) -> np.ndarray:
    """(K,) training-part class frequencies from a run's ``settings.json`` (``split_classes_train``: ``"0:229,..."``)."""
    raw = settings.get("split_classes_train")
    if not raw:
        raise SystemExit("settings.json: no split_classes_train (expected a table bundle's run folder)")
    counts = dict(pair.split(":") for pair in raw.split(","))
    vec = np.array([float(counts.get(str(k), 0)) for k in range(len(counts))])
    return vec / vec.sum()


def decisions(run: Path) -> dict[str, dict[str, float]]:
    """Accuracy, balanced accuracy and macro-F1 of each decision rule on the run's validation predictions."""
    settings = json.loads((run / "settings.json").read_text())
    with open(run / "val" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    p_cols = [c for c in rows[0] if c.startswith("p_")]
    r_cols = [c for c in rows[0] if c.startswith("retrieval_")]
    clinical = AttributeVocabulary.coerce(run / "model" / "vocabulary.json").names  # the label column's names
    y = np.array([clinical.index(r["label"]) for r in rows])
    k = len(clinical)
    if settings.get("balanced_sampler"):  # trained at uniform class frequencies: shift to the training part's
        prior = train_prior(settings)
        shift, majority = np.log(prior) + np.log(k), int(prior.argmax())
    else:  # trained at the training part's frequencies already: nothing to correct
        shift, majority = np.zeros(k), int(np.bincount(y, minlength=k).argmax())
    probs = np.array([[float(r[c]) for c in p_cols] for r in rows])
    out = {}
    scores = {"answers": np.log(np.clip(probs, 1e-12, None))}
    if r_cols:
        tau = float(settings.get("tau", 1.0))
        scores["retrieval"] = np.array([[float(r[c]) for c in r_cols] for r in rows]) / tau
    for name, s in scores.items():
        for label, z in ((name, s), (f"{name} + log prior", s + shift)):
            m = classification_metrics(y, z.argmax(1), num_classes=k)
            out[label] = {key: m[key] for key in ("accuracy", "balanced_accuracy", "macro_f1")}
    out["majority rate"] = {"accuracy": float((y == majority).mean())}
    return out


def table(results: dict[str, dict]) -> str:
    lines = ["| decision | accuracy | balanced accuracy | macro-F1 | runs |", "|---|---|---|---|---|"]
    for d in (*DECISIONS, "majority rate"):
        got = [r[d] for r in results.values() if d in r]
        if not got:
            continue
        cells = [fmt([g[k] for g in got]) if k in got[0] else "-" for k in ("accuracy", "balanced_accuracy", "macro_f1")]
        lines.append(f"| {d} | {' | '.join(cells)} | {len(got)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with settings.json, val/, model/)")
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--print", action="store_true", help="print the table, write nothing")
    args = ap.parse_args()
    results = {run.name: decisions(run) for run in args.runs}
    md = table(results)
    if args.print:
        print(md)
        return
    bundle = args.runs[0].resolve().parent.parent.name  # bundles/<bundle>/runs/<run>
    head = (f"#### Prior correction of the decision: {bundle}\n\n"
            f"`python benchmarks/prior_shift.py <run folders>` on {len(results)} run(s) "
            f"({', '.join(sorted(results))}); validation split, mean ± std over the runs, in %. "
            "\"+ log prior\": the decision's logits plus log of the training part's class frequencies minus log of "
            "the frequencies the model was trained at (uniform with `balanced_sampler: true`); retrieval cosines "
            "read as logits at ACM's tau.\n\n")
    write_section(SECTION, head + md, doc=args.doc)
    print(md)


if __name__ == "__main__":
    main()
