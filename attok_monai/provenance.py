"""Where a run's code comes from: installed package versions and the git state of the source checkout."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["package_versions", "git_state"]


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """``{distribution name: installed version, or None when it is not installed}``."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def git_state() -> tuple[str, str]:
    """``(commit, dirty)`` of the checkout this package runs from: the HEAD commit and ``"True"``/``"False"`` for
    uncommitted changes to tracked files; ``("unknown", "unknown")`` outside a git checkout. Asked once a process."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown", "unknown"
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), str(bool(status.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
