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


def tiny_attok(config=None, **overrides):
    """A tiny compact AttTokGPTv for unit tests of the model: 3 radiology attributes (ct, mri, lung), 1-channel 16 px
    images, a 32-wide 2-head LM, seed 0; ``config``/``overrides`` are AttTokConfig keys."""
    from attok_monai.attributes import AttributeVocabulary
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.networks.builders import build_compact_attok

    vocab = AttributeVocabulary.from_label_map("rad", {0: "ct", 1: "mri", 2: "lung"})
    templates = InstructionTemplates("radiology", vocab.names, ["what is this {modality} image?"], ["which of {options}?"])
    return build_compact_attok(
        vocab, templates, vision={"in_channels": 1, "img_size": 16, "widths": [8, 8, 8, 8], "grid": 2},
        llm={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2},
        seed=0, config=config, **overrides,
    )
