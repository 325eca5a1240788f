"""Paired difference of two vqa_rad rows on one question set, with a bootstrap over images (round 23).

Each row is a list of evaluate runs' ``predictions.csv`` (one per fold's model, the same questions in each, e.g. the
official validation part). Per question, the difference of the rows' mean ``correct`` over their runs; then the mean
over questions and its bootstrap over *images* (every question of a drawn image comes with it, since one image's
questions are not independent): standard error and 95% interval. Open questions by default.

    python benchmarks/vqa_bootstrap.py --a /tmp/offv/scrall_f{0,1,2,3,4}/predictions.csv \\
        --b /tmp/offv/scratch_f{0,1,2,3,4}/predictions.csv --questions ../shared/data/vqa_rad/VQA_RAD_train.json
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics as st
from collections.abc import Mapping, Sequence


def read_correct(paths: Sequence[str], answer_type: str = "open") -> list[dict[str, int]]:
    """``[{question id: correct (0/1)}]``, one dict per predictions file, questions of ``answer_type`` only."""
    out = []
    for p in paths:
        with open(p, newline="") as f:
            out.append({r["id"]: int(r["correct"]) for r in csv.DictReader(f) if r["answer_type"] == answer_type})
    return out


def image_bootstrap(a: Sequence[Mapping[str, int]], b: Sequence[Mapping[str, int]], image_of: Mapping[str, str],
                    draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """Mean paired difference (points) of rows ``a`` and ``b`` over the questions both score in every run, with its
    bootstrap over images: ``{"mean", "se", "low", "high", "questions", "images"}`` (``low``/``high``: the 2.5% and
    97.5% points). A question without an image in ``image_of`` is its own group."""
    ids = sorted(set.intersection(*(set(r) for r in (*a, *b))))
    if not ids:
        raise ValueError("vqa_bootstrap: the two rows share no question.")
    diff = {i: st.mean(r[i] for r in a) - st.mean(r[i] for r in b) for i in ids}
    groups: dict[str, list[float]] = {}
    for i in ids:
        groups.setdefault(image_of.get(i, i), []).append(diff[i])
    g = list(groups.values())
    rng = random.Random(seed)
    boots = []
    for _ in range(draws):
        drawn = [x for _ in g for x in rng.choice(g)]
        boots.append(100 * st.mean(drawn))
    boots.sort()
    return {"mean": 100 * st.mean(diff.values()), "se": st.pstdev(boots), "low": boots[int(0.025 * draws)],
            "high": boots[int(0.975 * draws) - 1], "questions": len(ids), "images": len(g)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", required=True, help="row a's predictions.csv files")
    ap.add_argument("--b", nargs="+", required=True, help="row b's predictions.csv files")
    ap.add_argument("--questions", required=True, help="VQA-RAD's question file (qid -> image_name)")
    ap.add_argument("--answer_type", default="open", choices=("open", "closed"))
    ap.add_argument("--draws", type=int, default=4000)
    args = ap.parse_args()
    with open(args.questions) as f:
        image_of = {f"vqa_rad_{r['qid']}": str(r["image_name"]) for r in json.load(f)}
    res = image_bootstrap(read_correct(args.a, args.answer_type), read_correct(args.b, args.answer_type), image_of,
                          args.draws)
    print(f"a - b: {res['mean']:+.1f} (bootstrap se over {res['images']} images {res['se']:.1f}; 95% "
          f"{res['low']:+.1f} to {res['high']:+.1f}; {res['questions']} {args.answer_type} questions)")


if __name__ == "__main__":
    main()
