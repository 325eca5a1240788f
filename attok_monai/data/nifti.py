"""NIfTI volumes (nibabel) as 2D slices, channel-first float32 in [0, 1].

Slice rule: a 3D volume ``(X, Y, Z)`` gives ``data[:, :, k]`` along ``axis`` (default the last spatial axis,
``-1`` = axis 2), with ``k`` chosen by ``slices`` (``"middle"`` = ``Z // 2`` by default; ``"all"``, ``"every:K"``,
``"first"`` or an int, see :func:`attok_monai.data.image2d.select_indices`). Volumes with more than three
dimensions use index 0 of every dimension after the third (the first time point). A 2D image is returned as it is.
The slice keeps the array's own axis order, ``(H, W) = (X, Y)``: no reorientation. Scaling (``scl_slope``) is
applied by nibabel; the slice is then min-max normalised to [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader

from attok_monai.data.image2d import (
    Frame2DReader,
    FrameRule,
    ImageReadError,
    safe_reason,
    select_index,
    select_indices,
    suffix_of,
    to_unit_image,
)

__all__ = ["nifti_slice_indices", "read_nifti_slice", "NiftiSliceReader", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _load(path: str | os.PathLike):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except Exception as e:
        raise ImageReadError(path, f"not a readable NIfTI file: {safe_reason(e)}") from None


def _axis_and_depth(shape: Sequence[int], axis: int) -> tuple[int, int]:
    spatial = min(len(shape), 3)
    if spatial < 3:
        return -1, 1
    ax = axis % 3
    return ax, int(shape[ax])


def nifti_slice_indices(path: str | os.PathLike, slices: FrameRule = "middle", axis: int = -1) -> list[int]:
    """Slice indices chosen by ``slices`` along ``axis`` (``[0]`` for a 2D image)."""
    img = _load(path)
    ax, depth = _axis_and_depth(img.shape, axis)
    return [0] if ax < 0 else select_indices(depth, slices)


def read_nifti_slice(
    path: str | os.PathLike, index: FrameRule | None = None, axis: int = -1
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2D slice: ``((1, H, W) float32 in [0, 1], meta)`` with ``meta = {"frame", "n_frames",
    "spatial_shape"}``.

    Args:
        path: ``.nii`` / ``.nii.gz`` file.
        index: slice index or rule (None = ``"middle"``).
        axis: the slicing axis among the first three (default -1 = the third).

    Raises:
        ImageReadError: naming the file and the reason.
    """
    img = _load(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ImageReadError(path, f"NIfTI image of shape {shape}: expected at least 2 dimensions")
    ax, depth = _axis_and_depth(shape, axis)
    try:
        k = 0 if ax < 0 else select_index(depth, index)
        sl: list[Any] = [slice(None)] * min(len(shape), 3) + [0] * max(len(shape) - 3, 0)
        if ax >= 0:
            sl[ax] = k
        data = np.asarray(img.dataobj[tuple(sl)])
        if data.dtype.names:  # RGB(A) structured dtype
            rgb = np.stack([data[n] for n in data.dtype.names[:3]], axis=-1)
            out = to_unit_image(rgb, color=True, max_value=255.0)
        else:
            out = to_unit_image(np.squeeze(data) if data.ndim > 2 else data, color=False)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(path, f"cannot take a 2D slice: {safe_reason(e)}") from None
    return out, {"frame": k, "n_frames": depth, "spatial_shape": np.asarray(out.shape[1:])}


class NiftiSliceReader(Frame2DReader, ImageReader):
    """MONAI ``ImageReader`` giving one 2D slice of a NIfTI volume as ``(1, H, W)`` float32 in [0, 1].

    Args:
        slice_index: slice index or rule (None = ``"middle"``), see :func:`read_nifti_slice`.
        axis: slicing axis among the first three (default -1).
        timeout: seconds per file (main thread only).
    """

    def __init__(self, slice_index: FrameRule | None = None, axis: int = -1, timeout: float | None = None) -> None:
        super().__init__()
        self.slice_index = slice_index
        self.axis = axis
        self.timeout = timeout

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(suffix_of(n) in NIFTI_SUFFIXES for n in names)

    def _default_frame(self) -> FrameRule | None:
        return self.slice_index

    def _read_one(self, path: str | os.PathLike, frame: FrameRule | None) -> tuple[np.ndarray, dict]:
        return read_nifti_slice(path, frame, self.axis)
