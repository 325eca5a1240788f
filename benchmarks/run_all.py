"""Rerun every benchmark that writes docs/benchmarks.md (long: the bundle ablations take hours on 2 CPU cores).

    ATTOK_DATA_ROOT=../shared/data python benchmarks/run_all.py [--skip-bundles]
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
    args = ap.parse_args()
    steps = [["bench_acc.py"], ["bench_dicom.py", "--n", "10000"]]
    if not args.skip_bundles:
        steps.append(["bench_bundles.py", "--bundles", "all", "--seeds", "0", "1", "2"])
    for step in steps:
        print(f"[run_all] {' '.join(step)}", flush=True)
        subprocess.run([sys.executable, str(HERE / step[0]), *step[1:]], check=True)


if __name__ == "__main__":
    main()
