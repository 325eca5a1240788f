"""The standard MONAI load chain for 2D image files (JPEG, PNG, TIFF, BMP; DICOM and NIfTI through
:class:`MedicalFrameReader`).

``image_load_transforms(size=224)`` turns ``{"image": "/path/x.jpg", ...}`` into ``{"image": float32 tensor (C, S, S)
in [0, 1], ...}`` (``C`` = 3 by default): LoadImaged (PIL, rows first) -> EnsureChannelFirstd -> :class:`ToChannelsd`
(grey/grey+alpha/RGBA -> RGB, or -> 1 grey channel) -> resize keeping the aspect ratio (longest side to ``S``) and
zero-pad to ``S x S`` -> ScaleIntensityRanged ([0, 255] -> [0, 1], clipped) -> EnsureTyped float32.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import PILReader
from monai.data.image_reader import ImageReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SpatialPadd,
)

__all__ = ["ToChannelsd", "image_load_transforms", "pil_standard_mode", "pil_reader", "MedicalFrameReader"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def pil_standard_mode(image: Any) -> Any:
    """PIL converter: palette, bilevel, CMYK and YCbCr images become RGB(A)/L; grey (incl. 16-bit), grey+alpha, RGB and
    RGBA are kept as they are (channels are handled by :class:`ToChannelsd`). Module-level, so picklable."""
    mode = getattr(image, "mode", None)
    if mode in ("P", "PA"):
        return image.convert("RGBA")
    if mode == "1":
        return image.convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    return image


def pil_reader() -> PILReader:
    """A PIL reader that returns arrays rows first ((H, W) or (H, W, C), like numpy/PIL), not MONAI's (W, H)."""
    return PILReader(converter=pil_standard_mode, reverse_indexing=False)


class MedicalFrameReader(ImageReader):
    """A MONAI ``ImageReader`` for the files PIL cannot read: DICOM (any or no suffix; one frame, windowed) and NIfTI
    (one slice), through :func:`attok_monai.data.load2d.read_image_2d`, so an image table may mix them with
    PNG/JPEG. The data come rows first, channels last ((H, W) or (H, W, 3)) in [0, 255], like the PIL reader's
    8-bit output, so the rest of the chain (channels, resize, ``[0, 255] -> [0, 1]``) treats every format alike.
    Unreadable files raise :class:`~attok_monai.data.image2d.ImageReadError` naming the file and the reason."""

    def verify_suffix(self, filename: Any) -> bool:
        from attok_monai.data.image2d import PIL_SUFFIXES, suffix_of

        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return all(suffix_of(str(n)) not in PIL_SUFFIXES for n in names)

    def read(self, data: Any, **kwargs: Any) -> list[tuple[np.ndarray, dict]]:
        from attok_monai.data.load2d import read_image_2d

        names = data if isinstance(data, (list, tuple)) else [data]
        return [read_image_2d(str(n)) for n in names]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        arr, _ = (img[0] if isinstance(img, list) else img)
        a = np.asarray(arr, dtype=np.float32) * 255.0  # (C, H, W) in [0, 1] -> [0, 255]
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
        meta = {"spatial_shape": np.asarray(a.shape[:2]), "original_channel_dim": float("nan") if a.ndim == 2 else -1,
                "affine": np.eye(3)}
        return a, meta


class ToChannelsd(MapTransform):
    """Make a channel-first image (C, H, W) have ``channels`` channels.

    ``channels=3``: 1 (grey) -> repeated to RGB; 2 (grey + alpha) -> grey repeated; 3 kept; 4 (RGBA) -> alpha
    dropped. ``channels=1``: 3/4 -> luminance (0.299 R + 0.587 G + 0.114 B); 2 -> grey; 1 kept.
    ``channels=None``: unchanged.

    Raises:
        ValueError: an image with another channel count, naming the key and the shape.
    """

    def __init__(self, keys: KeysCollection, channels: int | None = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (None, 1, 3):
            raise ValueError(f"ToChannelsd: channels must be 1, 3 or None, got {channels!r}.")
        self.channels = channels

    def convert(self, img: Any, key: Hashable = "image") -> Any:
        if self.channels is None:
            return img
        if isinstance(img, np.ndarray):
            img = torch.as_tensor(img)
        c = img.shape[0]
        if c == self.channels:
            return img
        if self.channels == 3:
            if c in (1, 2):
                return img[:1].repeat(3, *([1] * (img.ndim - 1)))
            if c == 4:
                return img[:3]
        else:
            if c == 2:
                return img[:1]
            if c in (3, 4):
                w = torch.tensor(_LUMA, dtype=torch.float32, device=img.device).view(3, *([1] * (img.ndim - 1)))
                return (img[:3].float() * w).sum(0, keepdim=True)
        raise ValueError(
            f"ToChannelsd: {key!r} has shape {tuple(img.shape)} (channels first); expected 1, 2, 3 or 4 channels."
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.convert(d[key], key)
        return d


def image_load_transforms(
    keys: KeysCollection = "image",
    size: int | None = 224,
    channels: int | None = 3,
    reader: ImageReader | type | str | Sequence[ImageReader | type | str] | None = None,
    intensity_range: tuple[float, float] | None = (0.0, 255.0),
    resize: str = "pad",
    track_meta: bool = False,
) -> Compose:
    """The load chain for 2D images listed in a data list.

    Args:
        keys: the image key(s).
        size: output side ``S``; ``None`` keeps the native size.
        channels: 3 (RGB, default), 1 (grey) or ``None`` (as stored). See :class:`ToChannelsd`.
        reader: extra MONAI reader(s) tried before the PIL reader (those whose ``verify_suffix`` accepts the file),
            e.g. a DICOM reader; JPEG/PNG/TIFF/BMP always go to :func:`pil_reader`.
        intensity_range: the stored range ``(a_min, a_max)`` mapped to [0, 1] and clipped (``(0, 65535)`` for 16-bit
            files); ``None``: per-image min-max scaling to [0, 1].
        resize: ``"pad"`` (default): longest side to ``S`` keeping the aspect ratio, then zero-pad (centred) to
            ``S x S``; ``"pad_or_crop"``: no scaling, centre pad or crop to ``S x S``; ``"stretch"``: resize to
            ``S x S`` ignoring the aspect ratio.
        track_meta: keep MONAI MetaTensors (``True``) or return plain tensors (``False``, default).

    Returns:
        a :class:`monai.transforms.Compose` mapping ``{"image": path}`` to ``{"image": float32 (C, S, S) in [0, 1]}``.
    """
    readers: list[Any] = [MedicalFrameReader(), pil_reader()]  # PIL for its suffixes, DICOM/NIfTI for the rest
    if reader is not None:
        readers += list(reader) if isinstance(reader, (list, tuple)) else [reader]  # the last is tried first
    chain: list[Any] = [
        LoadImaged(keys, reader=tuple(readers), image_only=True),
        EnsureChannelFirstd(keys),
        ToChannelsd(keys, channels=channels),
    ]
    # min-max scaling sees the image before padding; a fixed range is applied (and clipped) after resizing, so the
    # output stays inside [0, 1] whatever the interpolation does
    if intensity_range is None:
        chain.append(ScaleIntensityd(keys, minv=0.0, maxv=1.0))
    if size is not None:
        if resize == "pad":
            chain += [
                Resized(keys, spatial_size=size, size_mode="longest", mode="bilinear", anti_aliasing=True),
                SpatialPadd(keys, spatial_size=(size, size), mode="constant"),
            ]
        elif resize == "pad_or_crop":
            chain.append(ResizeWithPadOrCropd(keys, spatial_size=(size, size), mode="constant"))
        elif resize == "stretch":
            chain.append(Resized(keys, spatial_size=(size, size), mode="bilinear", anti_aliasing=True))
        else:
            raise ValueError(
                f"image_load_transforms: resize must be 'pad', 'pad_or_crop' or 'stretch', got {resize!r}."
            )
    a_min, a_max = intensity_range if intensity_range is not None else (0.0, 1.0)  # min-max: only clip here
    chain.append(ScaleIntensityRanged(keys, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True))
    chain.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=track_meta))
    return Compose(chain)
