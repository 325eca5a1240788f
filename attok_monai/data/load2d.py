"""One entry point for 2D images of any supported kind, and the dict transform that reads a data-list item's
``"frame"``.

``read_image_2d(path, frame)`` dispatches on the file name: ``.nii`` / ``.nii.gz`` -> NIfTI slice
(:mod:`attok_monai.data.nifti`); ``.png .jpg .jpeg .tif .tiff .bmp`` -> PIL; anything else (any or no extension)
-> DICOM (:mod:`attok_monai.data.dicom`). Every result is ``(C, H, W)`` float32 in [0, 1], C = 1 or 3.

Why beside MONAI's ``LoadImaged`` and not instead of it: MONAI's DICOM readers (``PydicomReader``, ``ITKReader``)
return the stored values of a whole series; a 2D model needs one frame of one file, windowed (VOI LUT / window
centre and width), with the photometric interpretation applied and a reason naming the file when it cannot be
decoded. Training's load chain reaches the same decoder through MONAI's own ``LoadImaged`` by the adapter
:class:`attok_monai.data.image_transforms.MedicalFrameReader`, so DICOM and NIfTI are decoded by one code path in
training and inference alike.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from attok_monai.data.dicom import read_dicom_frame
from attok_monai.data.image2d import PIL_SUFFIXES, FrameRule, ImageReadError, read_pil_2d, suffix_of, time_limit
from attok_monai.data.image2d import to_unit_image as _to_unit_image
from attok_monai.data.nifti import NIFTI_SUFFIXES, read_nifti_slice

__all__ = ["read_image_2d", "LoadDicomFramed", "array_to_image"]


def array_to_image(arr: np.ndarray) -> np.ndarray:
    """An in-memory image of the data contract (uint8 ``(H, W)`` / ``(H, W, 3)``, or any numeric 2D/HWC array)
    as ``(C, H, W)`` float32 in [0, 1] (uint8 by /255, others by per-image min-max)."""
    a = np.asarray(arr)
    color = a.ndim == 3 and a.shape[-1] in (3, 4)
    return _to_unit_image(a, color=color, max_value=255.0 if a.dtype == np.uint8 else None)


def read_image_2d(path: str | os.PathLike, frame: FrameRule | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a 2D image (DICOM frame, NIfTI slice, PNG/JPEG/TIFF) as ``((C, H, W) float32 in [0, 1], meta)``.

    Raises:
        ImageReadError: naming the file and the reason.
    """
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti_slice(path, frame)
    if suffix in PIL_SUFFIXES:
        img = read_pil_2d(path)
        return img, {"frame": 0, "n_frames": 1, "spatial_shape": np.asarray(img.shape[1:])}
    return read_dicom_frame(path, frame)


class LoadDicomFramed(MapTransform):
    """Load ``d[key]`` (a path of any kind :func:`read_image_2d` reads, or an in-memory array) as a ``MetaTensor``
    ``(C, H, W)`` float32 in [0, 1], using the item's own ``d[frame_key]`` (frame / slice index) when present.

    Args:
        keys: image keys (default ``"image"``).
        frame_key: item field with the frame index (missing or None -> ``default_frame``).
        default_frame: frame rule when the item has none (None = ``"middle"``).
        timeout: seconds per file before :class:`ImageReadError` (main thread only).
        allow_missing_keys: as in MONAI.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        frame_key: str | None = "frame",
        default_frame: FrameRule | None = None,
        timeout: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.default_frame = default_frame
        self.timeout = timeout

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame = d.get(self.frame_key) if self.frame_key else None
        if frame is None or (isinstance(frame, float) and np.isnan(frame)):
            frame = self.default_frame
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, (str, os.PathLike)):
                with time_limit(self.timeout, value):
                    img, meta = read_image_2d(value, frame)
                meta = {k: v for k, v in meta.items() if k != "spatial_shape"}
                meta["filename_or_obj"] = str(value)
            elif isinstance(value, (np.ndarray, torch.Tensor)):
                arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
                try:
                    img = array_to_image(arr)
                except ValueError as e:
                    raise ImageReadError(f"<array in item field {key!r}>", str(e)) from None
                meta = {}
            else:
                raise ImageReadError(f"<item field {key!r}>", f"expected a path or an array, got {type(value).__name__}")
            d[key] = MetaTensor(torch.from_numpy(img), meta=meta)
        return d
