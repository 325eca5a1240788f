"""Every fragment (package data ``attok_monai/configs/transforms/*.json``) parses with MONAI ConfigParser and keeps
(C, H, W) float32 in [0, 1]; the fragments are found through importlib.resources and ship in the wheel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandomizableTrait

from attok_monai.data.transforms import (
    default_fragment_dirs,
    fragment_names,
    load_transform_fragment,
    packaged_fragments,
    resolve_fragment,
)

REPO = Path(__file__).resolve().parents[1]
FRAGMENTS = sorted((REPO / "attok_monai" / "configs" / "transforms").glob("*.json"))
NO_FLIP = {"oct_train", "chest_xray_train"}


def test_fragments_present():
    names = {p.stem for p in FRAGMENTS}
    assert {"fundus_train", "derma_train", "pathology_train", "oct_train", "chest_xray_train"} <= names
    assert names <= set(fragment_names())


def test_fragments_found_as_package_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """By name through importlib.resources, from any working directory, with no ``transforms/`` folder around."""
    import importlib.resources

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATTOK_TRANSFORMS_DIR", raising=False)
    packaged = importlib.resources.files("attok_monai") / "configs" / "transforms"
    assert default_fragment_dirs() == [packaged_fragments()]
    assert set(fragment_names()) == {p.stem for p in FRAGMENTS}
    for name in fragment_names():
        assert resolve_fragment(name).read_text(encoding="utf-8") == (packaged / f"{name}.json").read_text(
            encoding="utf-8")
        assert load_transform_fragment(name)
    # your own folder first, the package's fragments still found
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "fundus_train.json").write_text(json.dumps([{"_target_": "monai.transforms.Identityd",
                                                                      "keys": "image"}]))
    monkeypatch.setenv("ATTOK_TRANSFORMS_DIR", str(tmp_path / "mine"))
    assert resolve_fragment("fundus_train") == tmp_path / "mine" / "fundus_train.json"
    assert load_transform_fragment("oct_train")


def test_wheel_ships_the_fragments(tmp_path: Path):
    """A non-editable wheel built from a copy of the package holds every fragment."""
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "attok_monai", src / "attok_monai",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheel"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = out.glob("attok_monai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"attok_monai/configs/transforms/{p.name}" for p in FRAGMENTS} <= names


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
            "augment": "%attok_monai/configs/transforms/derma_train.json",
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


def test_load_chain_reads_dicom_and_nifti_beside_png(tmp_path):
    """An image table may mix formats: the standard load chain reads a DICOM (no suffix too) and a NIfTI slice as it
    reads a PNG, to (C, S, S) in [0, 1]; the PNG path is unchanged."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    from attok_monai.data.image_transforms import image_load_transforms
    from attok_monai.data.load2d import read_image_2d
    from tests.test_dicom import _write_dicom

    ramp = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))  # (H=30, W=40)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    _write_dicom(tmp_path / "b.dcm", ramp.astype(np.uint16) * 4, bits_stored=12)
    (tmp_path / "c").write_bytes((tmp_path / "b.dcm").read_bytes())  # a DICOM without a suffix
    nib.save(nib.Nifti1Image(ramp.T.astype(np.float32)[..., None], np.eye(4)), str(tmp_path / "d.nii.gz"))
    chain = image_load_transforms(size=32, channels=3)
    out = {n: chain({"image": str(tmp_path / n)})["image"] for n in ("a.png", "b.dcm", "c", "d.nii.gz")}
    for name, img in out.items():
        assert tuple(img.shape) == (3, 32, 32) and img.dtype == torch.float32, name
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0, name
    for name in ("b.dcm", "c"):  # the DICOM frame as read_image_2d windows it, resized like the PNG
        assert torch.allclose(out[name], out["c"]), name
        unit = read_image_2d(tmp_path / name)[0]
        assert abs(float(out[name].max()) - float(unit.max())) < 0.01  # up to the resize's interpolation
    # rows first in every format: the chain keeps the orientation the reader gives (the ramp's direction)
    for name, img in out.items():
        unit = torch.as_tensor(read_image_2d(tmp_path / name)[0])
        along_w = float((unit[0, :, -1] - unit[0, :, 0]).abs().mean()) > float((unit[0, -1] - unit[0, 0]).abs().mean())
        grad_w = float((img[0, 16, -6] - img[0, 16, 5]).abs())
        grad_h = float((img[0, -6, 16] - img[0, 5, 16]).abs())
        assert (grad_w > grad_h) == along_w, name
