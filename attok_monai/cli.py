"""``attok-monai`` console script: ``attok-monai ingest ...`` and ``attok-monai bundle run ...``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: attok-monai {ingest|bundle} ...")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "ingest":
        from attok_monai.ingest import main as ingest_main

        return int(ingest_main(rest) or 0)
    if cmd == "bundle":
        from attok_monai.bundle.cli import main as bundle_main

        return bundle_main(rest)
    print(f"attok-monai: unknown command {cmd!r}; expected ingest or bundle.", file=sys.stderr)
    return 2
