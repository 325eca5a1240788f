"""MedMNIST reader, download guard and load chain, on the real shared files (skipped when absent)."""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require

from attok_monai.data.medmnist import (
    MEDMNIST_INFO,
    SplitNotFoundError,
    available_splits,
    ensure_medmnist,
    medmnist_datalist,
    medmnist_file_info,
    medmnist_transforms,
    parse_medmnist_name,
)

EXPECTED = {"retinamnist": (1080, 120, 5, 3), "pneumoniamnist": (4708, 524, 2, 1)}


@pytest.fixture(scope="module")
def medmnist_dir(data_root: Path) -> Path:
    return data_root / "medmnist"


# --- info -------------------------------------------------------------------------------------------------------


def test_info_matches_medmnist():
    assert set(MEDMNIST_INFO) == {"retinamnist", "dermamnist", "octmnist", "pneumoniamnist", "pathmnist"}
    sizes = {"retinamnist": 5, "dermamnist": 7, "octmnist": 4, "pneumoniamnist": 2, "pathmnist": 9}
    for name, info in MEDMNIST_INFO.items():
        assert sorted(info["labels"]) == list(range(sizes[name]))
        assert set(info["files"]) == {28, 64, 128, 224}
        for size, f in info["files"].items():
            assert re.fullmatch(r"[0-9a-f]{32}", f["md5"])
            assert f["url"] == f"https://zenodo.org/records/10519652/files/{f['file']}?download=1"
            assert f["file"] == (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    # spot checks against MedMNIST's info.py
    assert MEDMNIST_INFO["retinamnist"]["md5"] == "bd4c0672f1bba3e3a89f0e4e876791e4"
    assert MEDMNIST_INFO["pneumoniamnist"]["md5"] == "28209eda62fecd6e6a2d98b1501bb15f"
    assert medmnist_file_info("pathmnist_224")["md5"] == "2c51a510bcdc9cf8ddb2af93af1eadec"
    assert MEDMNIST_INFO["octmnist"]["labels"][2] == "drusen"
    assert MEDMNIST_INFO["pathmnist"]["labels"][8] == "colorectal adenocarcinoma epithelium"
    assert MEDMNIST_INFO["retinamnist"]["task"] == "ordinal-regression"
    assert len({f["md5"] for i in MEDMNIST_INFO.values() for f in i["files"].values()}) == 20


def test_parse_name():
    assert parse_medmnist_name("retinamnist") == ("retinamnist", 28)
    assert parse_medmnist_name("OCTMNIST_128") == ("octmnist", 128)
    assert parse_medmnist_name("dermamnist", 64) == ("dermamnist", 64)
    with pytest.raises(ValueError, match="unknown MedMNIST dataset"):
        parse_medmnist_name("chestmnist")
    with pytest.raises(ValueError, match="size"):
        parse_medmnist_name("retinamnist", 100)
    with pytest.raises(ValueError, match="says size 64"):
        parse_medmnist_name("retinamnist_64", 224)


# --- real files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_counts_and_items(medmnist_dir: Path, name: str):
    path = require(medmnist_dir / f"{name}.npz")
    n_train, n_val, n_classes, channels = EXPECTED[name]
    assert available_splits(path) == ["train", "val"]
    train, val = medmnist_datalist(path, "train"), medmnist_datalist(path, "val")
    assert (len(train), len(val)) == (n_train, n_val)
    shape = (28, 28, 3) if channels == 3 else (28, 28)
    for item in train[:50] + val[-50:]:
        assert type(item["image"]) is np.ndarray and item["image"].dtype == np.uint8 and item["image"].shape == shape
        assert isinstance(item["label"], int) and 0 <= item["label"] < n_classes
        assert item["split"] in ("train", "val") and "group" not in item
    assert {it["label"] for it in train} == set(range(n_classes))
    assert val[17]["id"] == f"{name}/val/00017"
    assert len({it["id"] for it in train + val}) == n_train + n_val
    # folder + name goes through ensure_medmnist (present file, no download)
    again = medmnist_datalist(medmnist_dir, "val", name=name, limit=3)
    assert [it["id"] for it in again] == [it["id"] for it in val[:3]]
    assert np.array_equal(again[2]["image"], val[2]["image"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_absent_test_split_is_reported(medmnist_dir: Path, name: str):
    path = require(medmnist_dir / f"{name}.npz")
    with pytest.raises(SplitNotFoundError) as err:
        medmnist_datalist(path, "test")
    msg = str(err.value)
    assert "'test'" in msg and "['train', 'val']" in msg and str(path) in msg
    assert isinstance(err.value, KeyError)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("channels", [3, 1])
def test_load_chain(medmnist_dir: Path, name: str, channels: int):
    path = require(medmnist_dir / f"{name}.npz")
    items = medmnist_datalist(path, "val", limit=8)
    chain = medmnist_transforms(channels=channels)
    for item in items:
        img = chain(item)["image"]
        assert isinstance(img, torch.Tensor) and img.dtype == torch.float32 and img.shape == (channels, 28, 28)
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    grey = medmnist_transforms(channels=3)(items[0])["image"]
    if EXPECTED[name][3] == 1:  # grey replicated, exact /255 scaling
        assert torch.equal(grey[0], grey[2])
        assert torch.allclose(grey[0], torch.as_tensor(items[0]["image"] / 255.0, dtype=torch.float32))
    big = medmnist_transforms(size=64)(items[0])["image"]
    assert big.shape == (3, 64, 64) and 0.0 <= float(big.min()) and float(big.max()) <= 1.0


def test_load_chain_with_fragment(medmnist_dir: Path):
    path = require(medmnist_dir / "retinamnist.npz")
    item = medmnist_datalist(path, "val", limit=1)[0]
    img = medmnist_transforms(size=32, augment="fundus_train")(item)["image"]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and 0 <= float(img.min()) <= float(img.max()) <= 1


def test_reader_rejects_bad_files(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((4, 28, 28), np.float32), train_labels=np.zeros((4, 1), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        medmnist_datalist(bad, "train")
    short = tmp_path / "short.npz"
    np.savez(short, val_images=np.zeros((4, 28, 28), np.uint8), val_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match="N=4"):
        medmnist_datalist(short, "val")
    notzip = tmp_path / "x.npz"
    notzip.write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        available_splits(notzip)
    with pytest.raises(FileNotFoundError):
        medmnist_datalist(tmp_path / "none.npz", "train")


def test_uncompressed_file_is_memory_mapped(tmp_path: Path):
    path = tmp_path / "dermamnist_64.npz"
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    labels = np.array([[0], [6], [3], [1], [2]], np.uint8)
    np.savez(path, test_images=imgs, test_labels=labels)
    items = medmnist_datalist(path, "test")
    assert [it["label"] for it in items] == [0, 6, 3, 1, 2] and items[4]["id"] == "dermamnist_64/test/00004"
    assert np.array_equal(items[3]["image"], imgs[3])
    assert isinstance(items[0]["image"].base, np.memmap) or isinstance(items[0]["image"].base.base, np.memmap)
    # multi-label files give lists
    np.savez(path, train_images=imgs, train_labels=np.eye(5, 3, dtype=np.uint8))
    assert medmnist_datalist(path, "train")[1]["label"] == [0, 1, 0]


# --- ensure_medmnist: never touches the network -----------------------------------------------------------------


def test_ensure_present_file_not_rejected(medmnist_dir: Path):
    path = require(medmnist_dir / "retinamnist.npz")

    def no_network(*args, **kwargs):
        raise AssertionError("must not download a present file")

    mp = pytest.MonkeyPatch()
    mp.setattr("monai.apps.utils._download_with_progress", no_network)
    try:
        assert ensure_medmnist("retinamnist", medmnist_dir) == path  # shared copy: MD5 differs, still accepted
        with pytest.raises(ValueError, match="differs from the official bd4c0672f1bba3e3a89f0e4e876791e4"):
            ensure_medmnist("retinamnist", medmnist_dir, verify_md5=True)
    finally:
        mp.undo()


def test_ensure_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(url, filepath, progress=True):  # MONAI's download_url's network call
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("monai.apps.utils._download_with_progress", offline)
    with pytest.raises(FileNotFoundError) as err:
        ensure_medmnist("octmnist", tmp_path, size=128)
    msg = str(err.value)
    target = tmp_path / "octmnist_128.npz"
    assert f"Put the official file at {target}" in msg
    assert "https://zenodo.org/records/10519652/files/octmnist_128.npz?download=1" in msg
    assert "0a97e76651ace45c5d943ee3f65b63ae" in msg and "download failed" in msg
    assert list(tmp_path.iterdir()) == []  # no partial file left
    # the folders a failed download made are removed too (make train offline must not leave ../shared/data/medmnist)
    with pytest.raises(FileNotFoundError):
        ensure_medmnist("octmnist", tmp_path / "shared" / "data" / "medmnist")
    assert list(tmp_path.iterdir()) == []

    def must_not_run(*a, **k):
        raise AssertionError("download=False must not download")

    monkeypatch.setattr("monai.apps.utils._download_with_progress", must_not_run)
    with pytest.raises(FileNotFoundError, match=r"download=False\)\. Put the official file at .*pneumoniamnist\.npz"):
        ensure_medmnist("pneumoniamnist", tmp_path / "nowhere", download=False)


def test_ensure_fake_download_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    payload = tmp_path / "payload.npz"
    np.savez(payload, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.array([[0], [1]], np.uint8))
    good_md5 = hashlib.md5(payload.read_bytes()).hexdigest()
    calls = []

    def fake_download(url, filepath, progress=True):  # MONAI's download_url's network call
        calls.append(url)
        shutil.copyfile(payload, filepath)

    monkeypatch.setattr("monai.apps.utils._download_with_progress", fake_download)
    root = tmp_path / "root"
    # wrong MD5 (the official one): rejected, nothing left behind
    with pytest.raises(ValueError, match="expected 28209eda62fecd6e6a2d98b1501bb15f"):
        ensure_medmnist("pneumoniamnist", root)
    assert not root.exists()  # nothing left behind, not even the folder the download made
    # right MD5: accepted and renamed into place
    monkeypatch.setitem(MEDMNIST_INFO["pneumoniamnist"]["files"][28], "md5", good_md5)
    path = ensure_medmnist("pneumoniamnist", root)
    assert path == root / "pneumoniamnist.npz" and path.read_bytes() == payload.read_bytes()
    assert [p.name for p in root.iterdir()] == ["pneumoniamnist.npz"]
    assert calls == [MEDMNIST_INFO["pneumoniamnist"]["url"]] * 2
    assert [it["label"] for it in medmnist_datalist(path, "train")] == [0, 1]
