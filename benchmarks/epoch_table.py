"""Tables of validation accuracy by epoch, from ``diagnose_attok.py --val --checkpoint`` outputs (issue 21, round 21).

Reads, in one folder, ``val_<answer>_s<seed>_ep<epoch>.json`` (one epoch's checkpoint scored on validation) and
``avg_<answer>_s<seed>_<first>-<last>.json`` (the weight average of those epochs' checkpoints), and prints markdown:

1. per run, the accuracy at every epoch, the mean of the last ``--last`` epochs and their spread (population standard
   deviation): how far the last epoch's number moves from one epoch to the next at the end of the lr schedule;
2. per answer, over seeds: the last epoch (what the benchmark tables report), the mean of the last epochs, and the
   weight average, as mean ± standard deviation over seeds;
3. paired per seed: the differences between answers under each of the three readings.

    python benchmarks/epoch_table.py /tmp/epochs --answers baseline pm tokens acc acm all --last 4 \\
        --pairs tokens-baseline all-baseline all-tokens tokens-pm
"""

from __future__ import annotations

import argparse
import json
import re
import statistics as st
from pathlib import Path

VAL_RE = re.compile(r"^val_(?P<answer>[a-z0-9]+)_s(?P<seed>\d+)_ep(?P<epoch>\d+)\.json$")
AVG_RE = re.compile(r"^avg_(?P<answer>[a-z0-9]+)_s(?P<seed>\d+)_(?P<first>\d+)-(?P<last>\d+)\.json$")


def read_scores(folder: Path) -> tuple[dict[tuple[str, int], dict[int, float]], dict[tuple[str, int], float]]:
    """``(curves, averages)``: ``curves[(answer, seed)][epoch]`` and ``averages[(answer, seed)]`` (accuracy, %)."""
    curves: dict[tuple[str, int], dict[int, float]] = {}
    averages: dict[tuple[str, int], float] = {}
    for path in sorted(folder.glob("*.json")):
        for pattern, is_val in ((VAL_RE, True), (AVG_RE, False)):
            m = pattern.match(path.name)
            if not m:
                continue
            acc = float(json.loads(path.read_text())["val"]["prob_accuracy"])
            key = (m["answer"], int(m["seed"]))
            if is_val:
                curves.setdefault(key, {})[int(m["epoch"])] = acc
            else:
                averages[key] = acc
    return curves, averages


def mean_sd(xs: list[float]) -> str:
    return f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f}" if len(xs) > 1 else (f"{xs[0]:.1f}" if xs else "-")


def tables(curves, averages, answers: list[str], last: int, pairs: list[tuple[str, str]]) -> str:
    epochs = max((max(c) for c in curves.values()), default=0)  # a run still being scored is left out
    complete = {k: [c[e] for e in range(1, epochs + 1)] for k, c in curves.items() if sorted(c) == list(range(1, epochs + 1))}
    lines = [f"| answer | seed | accuracy at epoch 1 ... {epochs} | mean of the last {last} | their spread |",
             "|---|---|---|---|---|"]
    for answer in answers:
        for (a, seed), c in sorted(complete.items()):
            if a == answer:
                tail = c[-last:]
                lines.append(f"| {a} | {seed} | {' '.join(f'{x:.1f}' for x in c)} | {st.mean(tail):.1f} | "
                             f"{st.pstdev(tail):.1f} |")
    spreads = [st.pstdev(c[-last:]) for c in complete.values()]
    if spreads:
        lines.append(f"\nSpread over the last {last} epochs, mean over {len(spreads)} runs: {st.mean(spreads):.1f}.")
    readings = {"last epoch": lambda k: complete[k][-1], f"mean of the last {last}": lambda k: st.mean(complete[k][-last:]),
                "weight average": lambda k: averages[k]}
    have = {"last epoch": complete, f"mean of the last {last}": complete, "weight average": averages}
    lines += ["", "| answer | seeds | " + " | ".join(readings) + " |", "|---|---|" + "---|" * len(readings)]
    for answer in answers:
        seeds = sorted(s for a, s in complete if a == answer)
        if seeds:
            cells = [mean_sd([f((answer, s)) for s in seeds if (answer, s) in have[name]]) for name, f in readings.items()]
            lines.append(f"| {answer} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    lines += ["", "| paired per seed | seeds | " + " | ".join(readings) + " |", "|---|---|" + "---|" * len(readings)]
    for b, a in pairs:
        seeds = sorted(s for (x, s) in complete if x == a and (b, s) in complete)
        if not seeds:
            continue
        cells = []
        for name, f in readings.items():
            d = [f((b, s)) - f((a, s)) for s in seeds if (a, s) in have[name] and (b, s) in have[name]]
            cells.append(f"{st.mean(d):+.1f} ({', '.join(f'{x:+.1f}' for x in d)})" if d else "-")
        lines.append(f"| {b} − {a} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--answers", nargs="+", default=["baseline", "pm", "tokens", "acc", "acm", "all"])
    ap.add_argument("--last", type=int, default=4, help="how many final epochs to average (default 4)")
    ap.add_argument("--pairs", nargs="*", default=["tokens-baseline", "all-baseline", "all-tokens", "tokens-pm"],
                    help="b-a: b minus a, paired per seed")
    args = ap.parse_args()
    if args.last < 1:
        raise SystemExit("--last must be >= 1")
    pairs = []
    for p in args.pairs:
        if p.count("-") != 1:
            raise SystemExit(f"--pairs: {p!r} is not b-a")
        pairs.append(tuple(p.split("-")))
    curves, averages = read_scores(args.folder)
    if not curves:
        raise SystemExit(f"{args.folder}: no val_<answer>_s<seed>_ep<epoch>.json files")
    print(tables(curves, averages, args.answers, args.last, pairs))


if __name__ == "__main__":
    main()
