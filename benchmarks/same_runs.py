"""Does a rerun give the recorded run? Every metric of two runs that ``bench_bundles.py`` recorded, compared.

A row is one configuration and seed in two result sets (``benchmarks/.state/<bundle>_<tag>.json``): the one recorded
earlier and its rerun (another machine, another commit). It counts the metrics both record (accuracies, macro-F1,
per-class F1, AUC, ECE, retrieval; not wall time, throughput, hardware or the start) and those that differ.

    python benchmarks/same_runs.py --section rerun_r32 \\
        fundus_dr_r16:baseline/0=fundus_dr_r32_scr fundus_dr_gen_cb2:all/0=fundus_dr_r32_e
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_bundles import STATE, bundles_available  # noqa: E402

NOT_COMPARED = frozenset({"wall_time_s", "samples_per_s", "hardware", "start", "overrides"})


def compare(recorded: dict, rerun: dict) -> tuple[list[str], list[str]]:
    """``(metrics compared, metrics that differ)``: the keys either run records, less :data:`NOT_COMPARED`."""
    keys = sorted((set(recorded) | set(rerun)) - NOT_COMPARED)
    return keys, [k for k in keys if recorded.get(k) != rerun.get(k)]


def cpu_of(run: dict) -> str:
    """The CPU kind a run recorded (``family 25, model 1``; the CPU's name where the line has no such numbers), or
    ``not recorded``."""
    hw = run.get("hardware", "")
    kind = re.search(r"\((family \d+, model \d+)\)", hw)
    return kind.group(1) if kind else hw.split(", torch")[0] or "not recorded"


def row(pair: str, state: Path = STATE) -> str:
    """One table row for ``<recorded set>:<variant>/<seed>=<rerun set>``."""
    try:
        left, rerun_set = pair.split("=")
        recorded_set, key = left.split(":")
    except ValueError:
        sys.exit(f"{pair!r}: expected <recorded set>:<variant>/<seed>=<rerun set>")
    runs = []
    for name in (recorded_set, rerun_set):
        path = state / f"{name}.json"
        if not path.exists() or key not in (data := json.loads(path.read_text())):
            sys.exit(f"{path}: no run {key!r}")
        runs.append(data[key])
    keys, differ = compare(*runs)
    # result sets are <bundle>.json or <bundle>_<tag>.json (bench_bundles.py)
    bundle = max((b for b in bundles_available() if recorded_set == b or recorded_set.startswith(b + "_")),
                 key=len, default="?")
    second = "closed_accuracy" if "open_macro_f1" not in runs[1] else "open_macro_f1"
    measure = f"{100 * runs[1]['open_accuracy']:.1f} / {100 * runs[1][second]:.1f}"
    return (f"| {bundle} | {key} | `{recorded_set}` ({cpu_of(runs[0])}) | `{rerun_set}` ({cpu_of(runs[1])}) | "
            f"{measure} | {len(keys)} | {', '.join(differ) or 'none'} |")


def table(pairs: list[str], state: Path = STATE) -> str:
    head = ["| set | run | recorded (CPU) | rerun (CPU) | open acc / macro-F1 (vqa_rad: closed acc) | metrics "
            "compared | metrics that differ |", "|---|---|---|---|---|---|---|"]
    return "\n".join(head + [row(p, state) for p in pairs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="RECORDED:VARIANT/SEED=RERUN")
    ap.add_argument("--section", help="write the table to this section of docs/benchmarks.md (default: print it)")
    args = ap.parse_args()
    text = table(args.pairs)
    if args.section:
        from benchmarks._report import write_section

        write_section(args.section, text)
    print(text)


if __name__ == "__main__":
    main()
