"""NIfTI slices from nibabel's shipped test files."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import LoadImage, LoadImaged
from nibabel.testing import data_path

from attok_monai.data.image2d import ImageReadError
from attok_monai.data.load2d import LoadDicomFramed
from attok_monai.data.nifti import NiftiSliceReader, nifti_slice_indices, read_nifti_slice

FILES = {  # name: (array shape, expected slice (H, W), depth along the last spatial axis)
    "anatomical.nii": ((33, 41, 25), (33, 41), 25),
    "example4d.nii.gz": ((128, 96, 24, 2), (128, 96), 24),
    "example_nifti2.nii.gz": ((32, 20, 12, 2), (32, 20), 12),
    "functional.nii": ((17, 21, 3, 20), (17, 21), 3),
    "standard.nii.gz": ((4, 5, 7), (4, 5), 7),
    "row_major.dconn.nii": ((10, 10), (10, 10), 1),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_nibabel_files_give_expected_slices(name):
    path = f"{data_path}/{name}"
    _, hw, depth = FILES[name]
    img, meta = read_nifti_slice(path)
    assert img.shape == (1, *hw) and img.dtype == np.float32 and np.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 1
    assert meta["n_frames"] == depth and meta["frame"] == (depth // 2 if depth > 1 else 0)
    x = LoadImage(reader=NiftiSliceReader("first"))(path)
    assert tuple(x.shape) == (1, *hw)


def test_slice_rules_and_errors(tmp_path):
    import nibabel as nib

    path = f"{data_path}/anatomical.nii"
    assert nifti_slice_indices(path, "all") == list(range(25))
    assert nifti_slice_indices(path, "every:10") == [0, 10, 20]
    assert nifti_slice_indices(path, "middle", axis=0) == [16]
    vol = np.asanyarray(nib.load(path).dataobj).astype(np.float64)
    img, _ = read_nifti_slice(path, 3)
    s = vol[:, :, 3]
    assert np.allclose(img[0], (s - s.min()) / (s.max() - s.min()), atol=1e-5)
    img0, _ = read_nifti_slice(path, 5, axis=0)
    assert img0.shape == (1, 41, 25)
    d = LoadDicomFramed()({"image": path, "frame": 7})
    assert tuple(d["image"].shape) == (1, 33, 41) and int(d["image"].meta["frame"]) == 7
    d2 = LoadImaged("image", reader=NiftiSliceReader())({"image": path})
    assert tuple(d2["image"].shape) == (1, 33, 41)
    with pytest.raises(ImageReadError, match="out of range"):
        read_nifti_slice(path, 99)
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"nonsense" * 10)
    with pytest.raises(ImageReadError, match="bad.nii"):
        read_nifti_slice(bad)
