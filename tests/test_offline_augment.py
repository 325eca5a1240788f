"""Offline class-balanced augmentation (paper appendix A.2) on the real RetinaMNIST train split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require

from attok_monai.data.medmnist import available_splits, load_medmnist_split, medmnist_datalist
from attok_monai.data.offline_augment import balanced_augment, class_counts, main


@pytest.fixture(scope="module")
def retina(data_root: Path) -> Path:
    return require(data_root / "medmnist" / "retinamnist.npz")


def test_cli_on_real_retinamnist(retina: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "retinamnist_balanced.npz"
    n = 150
    assert (
        main(["--input", str(retina), "--output", str(out), "--split", "train", "--per-class", str(n), "--seed", "0"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "before: {0: 486, 1: 128, 2: 206, 3: 194, 4: 66}" in printed
    assert f"after: {{0: {n}, 1: {n}, 2: {n}, 3: {n}, 4: {n}}}" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp file left

    assert available_splits(out) == available_splits(retina) == ["train", "val"]
    src_x, src_y = load_medmnist_split(retina, "train")
    x, y = load_medmnist_split(out, "train")
    assert x.shape == (5 * n, 28, 28, 3) and x.dtype == np.uint8 and y.dtype == src_y.dtype and y.shape == (5 * n, 1)
    assert class_counts(y, 5) == {c: n for c in range(5)}
    # val untouched, byte for byte
    for split_part in (0, 1):
        assert np.array_equal(
            load_medmnist_split(out, "val")[split_part], load_medmnist_split(retina, "val")[split_part]
        )
    # provenance: originals are exact copies, copies come from the same class, class 4 (66 < n) was filled up
    with np.load(out) as npz:
        source, augmented = npz["train_source_index"], npz["train_augmented"]
    assert np.array_equal(y[:, 0], src_y[source, 0])
    assert np.array_equal(x[~augmented], src_x[source[~augmented]])
    assert not np.array_equal(x[augmented], src_x[source[augmented]])
    is4 = y[:, 0] == 4
    assert (~augmented[is4]).sum() == 66 and augmented[is4].sum() == n - 66
    assert len(set(source[is4 & ~augmented])) == 66
    counts = np.bincount(source[is4], minlength=len(src_y))[src_y[:, 0] == 4]
    assert counts.min() >= 2 and counts.max() <= 3  # each original used as evenly as possible
    assert not augmented[y[:, 0] == 0].any()  # 486 >= n: a random subset of originals
    # the file loads with the reader; copies are grouped with their source image
    items = medmnist_datalist(out, "train")
    assert len(items) == 5 * n and items[0]["id"] == "retinamnist_balanced/train/00000"
    assert items[0]["group"] == f"retinamnist_balanced/train/src{source[0]:05d}"
    assert len(medmnist_datalist(out, "val")) == 120


def test_seed_reproducible_and_no_hflip(retina: Path):
    x, y = load_medmnist_split(retina, "train")
    a = balanced_augment(x, y, 80, seed=3)
    b = balanced_augment(x, y, 80, seed=3)
    c = balanced_augment(x, y, 80, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["source_index"], c["source_index"])
    # crop_scale 1 and no flip: nothing to change, the "augmented" copies equal their sources
    d = balanced_augment(x, y, 80, seed=0, crop_scale=1.0, hflip=False, keep_originals=False)
    assert d["augmented"].all() and np.array_equal(d["images"], x[d["source_index"]])
    # flip only: every copy is its source or its mirror image, and both occur
    e = balanced_augment(x, y, 80, seed=0, crop_scale=1.0, hflip=True, keep_originals=False)
    src = x[e["source_index"]]
    same = (e["images"] == src).all(axis=(1, 2, 3))
    mirrored = (e["images"] == src[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all() and same.sum() > 50 and mirrored.sum() > 50


def test_grey_images_and_fragment(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    y = np.repeat([[0], [1]], [24, 6], axis=0).astype(np.uint8)
    r = balanced_augment(x, y, 12, seed=1, fragment="chest_xray_train")
    assert r["images"].shape == (24, 28, 28) and r["images"].dtype == np.uint8
    assert class_counts(r["labels"], 2) == {0: 12, 1: 12} and r["augmented"].sum() == 6


def test_errors(retina: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    x = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="class 2 has no image"):
        balanced_augment(x, np.array([0, 1, 0, 1]), 3, num_classes=3)
    with pytest.raises(ValueError, match="single-label"):
        balanced_augment(x, np.eye(4, dtype=np.uint8), 3)
    assert main(["--input", str(retina), "--output", str(tmp_path / "o.npz"), "--split", "test"]) == 1
    assert "it has: ['train', 'val']" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
