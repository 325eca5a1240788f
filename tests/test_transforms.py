"""Every transforms/*.json fragment parses with MONAI ConfigParser and keeps (C, H, W) float32 in [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandomizableTrait

from attok_monai.data.transforms import fragment_names, load_transform_fragment, resolve_fragment

REPO = Path(__file__).resolve().parents[1]
FRAGMENTS = sorted((REPO / "transforms").glob("*.json"))
NO_FLIP = {"oct_train", "chest_xray_train"}


def test_fragments_present():
    names = {p.stem for p in FRAGMENTS}
    assert {"fundus_train", "derma_train", "pathology_train", "oct_train", "chest_xray_train"} <= names
    assert names <= set(fragment_names())


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.stem)
def test_fragment_structure(path: Path):
    items = json.loads(path.read_text())
    assert isinstance(items, list) and len(items) >= 3
    targets = [it["_target_"] for it in items]
    assert all(t.startswith("monai.transforms.") for t in targets)
    assert all(it["keys"] == "image" for it in items)
    assert targets[-2:] == ["monai.transforms.ScaleIntensityRanged", "monai.transforms.EnsureTyped"]
    assert items[-2]["clip"] is True
    if path.stem in NO_FLIP:  # OCT B-scans and chest X-rays have an orientation
        assert not any("Flip" in t or "Rotate90" in t for t in targets)
    else:
        assert any(t == "monai.transforms.RandFlipd" for t in targets)


def _run(chain: Compose, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    chain.set_random_state(seed=seed)
    g = torch.Generator().manual_seed(seed)
    return chain({"image": torch.rand(shape, generator=g)})["image"]


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.stem)
def test_fragment_keeps_shape_dtype_range(path: Path):
    transforms = load_transform_fragment(path)
    assert any(isinstance(t, RandomizableTrait) for t in transforms)
    chain = Compose(transforms)
    changed = 0
    for shape in [(3, 28, 28), (3, 64, 64), (1, 28, 28)]:
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            x = torch.rand(shape, generator=g)
            chain.set_random_state(seed=seed)
            out = chain({"image": x.clone()})["image"]
            assert tuple(out.shape) == shape and out.dtype == torch.float32
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
            changed += int(not torch.allclose(torch.as_tensor(out), x))
    assert changed >= 6  # it does augment


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.stem)
def test_fragment_all_branches_fire(path: Path):
    """Every random transform applied (prob 1) to a near-saturated image: still shape/dtype/range-safe."""
    transforms = load_transform_fragment(path)
    for t in transforms:
        if hasattr(t, "prob"):
            t.prob = 1.0
    chain = Compose(transforms)
    for seed in range(3):
        x = torch.clamp(torch.rand(3, 28, 28) * 0.2 + 0.85, 0, 1)  # shifts/noise push it past 1
        chain.set_random_state(seed=seed)
        out = chain({"image": x})["image"]
        assert tuple(out.shape) == (3, 28, 28) and out.dtype == torch.float32
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_same_seed_same_output():
    a = _run(Compose(load_transform_fragment("pathology_train")), (3, 28, 28), 7)
    b = _run(Compose(load_transform_fragment("pathology_train")), (3, 28, 28), 7)
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_bundle_macro_splices_fragment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)
    parser = ConfigParser(
        {
            "augment": "%transforms/derma_train.json",
            "train": {"_target_": "Compose", "transforms": "$@augment"},
        }
    )
    out = parser.get_parsed_content("train")({"image": torch.rand(3, 28, 28)})["image"]
    assert out.shape == (3, 28, 28) and out.dtype == torch.float32


def test_unknown_fragment_and_bad_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="available: .*fundus_train"):
        resolve_fragment("no_such_chain")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"_target_": "monai.transforms.Identityd"}))
    with pytest.raises(ValueError, match="JSON list"):
        load_transform_fragment(bad)
    assert resolve_fragment("bad", search_dirs=[tmp_path]) == bad
