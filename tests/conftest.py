"""Shared test fixtures. Real data comes from ``$ATTOK_DATA_ROOT`` or ``<repo>/../shared/data``; tests that need a
file skip cleanly when it is absent. Nothing here downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attok_monai.configs import install

REPO = Path(__file__).resolve().parents[1]

install()  # the bundles' %attok_monai/configs/... macros resolve from a test's own working directory too


def shared_data_root() -> Path:
    return Path(os.environ.get("ATTOK_DATA_ROOT", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    return shared_data_root()


def require(path: Path) -> Path:
    """Skip the calling test when ``path`` does not exist."""
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny models: as fast as two, and ~50x faster when the 2 cores are shared
    (use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
