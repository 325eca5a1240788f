"""Rerun every benchmark that writes docs/benchmarks.md (long: the bundle ablations take hours on 2 CPU cores).

    ATTOK_DATA_ROOT=../shared/data python benchmarks/run_all.py [--skip-bundles] [--generalist_dir G/model]

With ``--generalist_dir`` (a compact generalist's model folder) it also trains every missing row of issue 21's table
(the commands ``starts_table.py --commands`` prints; resumable; a row whose runs started from another generalist is
skipped with the reason), rewrites that table and runs the linear feature probe.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-bundles", action="store_true", help="only the cost benchmarks (minutes, not hours)")
    ap.add_argument("--generalist_dir", help="also issue 21's table and the feature probe, from this generalist")
    args = ap.parse_args()
    steps = [["bench_acc.py"], ["bench_dicom.py", "--n", "10000"], ["kernel_fingerprint.py"]]
    if not args.skip_bundles:
        steps.append(["bench_bundles.py", "--bundles", "all", "--seeds", "0", "1", "2"])
    for step in steps:
        print(f"[run_all] {' '.join(step)}", flush=True)
        subprocess.run([sys.executable, str(HERE / step[0]), *step[1:]], check=True)
    if args.generalist_dir:
        g = args.generalist_dir
        if not args.skip_bundles:
            sys.path.insert(0, str(HERE))
            import starts_table

            for row in starts_table.missing():
                why = starts_table.foreign_start(row, g)
                if why:  # bench_bundles would refuse: a result set holds the runs of one generalist
                    print(f"[run_all] skipped {row.state} {row.variant}: {why} (starts_table.py --commands G={g} "
                          "prints the command for a new tag)", flush=True)
                    continue
                print(f"[run_all] {row.command(g)}", flush=True)
                subprocess.run([sys.executable, *row.argv(g)], check=True, cwd=HERE.parent)
        for step in (["starts_table.py"], ["probe_features.py", "--generalist_dir", g]):
            print(f"[run_all] {' '.join(step)}", flush=True)
            subprocess.run([sys.executable, str(HERE / step[0]), *step[1:]], check=True)


if __name__ == "__main__":
    main()
