"""Shared pieces of the 2D image readers: the error type, the slice/frame selection rule, the conversion of a
decoded array to the data contract's channel-first float32 image in [0, 1], a per-file time guard and the
PIL reader for PNG/JPEG/TIFF/BMP.

Selection rule (``select_indices``), used for multi-frame DICOM, DICOM series and NIfTI volumes alike:
``"middle"`` -> ``[n // 2]``; ``"first"`` -> ``[0]``; ``"all"`` -> ``range(n)``; ``"every:K"`` -> ``0, K, 2K, ...``;
an ``int`` -> that index (negative counts from the end).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "ImageReadError",
    "FrameRule",
    "select_indices",
    "select_index",
    "to_unit_image",
    "read_pil_2d",
    "time_limit",
    "safe_reason",
    "Frame2DReader",
    "PIL_SUFFIXES",
]

FrameRule = int | str
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ImageReadError(RuntimeError):
    """A file could not be turned into a 2D image. ``path`` names the file, ``reason`` says why (no header values)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def safe_reason(exc: BaseException, limit: int = 600) -> str:
    """``ExceptionType: message`` with every line of the message kept (joined by `` | ``; decoder errors list one
    line per plugin tried), quoted substrings blanked out (quoted text in library messages may be a header value or
    a path) and shortened to ``limit`` characters."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", " | ".join(lines))
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def select_indices(n: int, rule: FrameRule = "middle") -> list[int]:
    """Indices picked from ``n`` frames/slices by ``rule`` (see the module docstring).

    Raises:
        ValueError: for ``n < 1``, an unknown rule or an index out of range.
    """
    if n < 1:
        raise ValueError(f"select_indices: no frames (n={n}).")
    if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool):
        i = int(rule)
        if not -n <= i < n:
            raise ValueError(f"frame/slice index {i} out of range for {n} frame(s).")
        return [i % n]
    if isinstance(rule, str):
        r = rule.strip().lower()
        if r == "middle":
            return [n // 2]
        if r == "first":
            return [0]
        if r == "last":
            return [n - 1]
        if r == "all":
            return list(range(n))
        m = re.fullmatch(r"every:(\d+)", r)
        if m and int(m.group(1)) >= 1:
            return list(range(0, n, int(m.group(1))))
        if re.fullmatch(r"-?\d+", r):
            return select_indices(n, int(r))
    raise ValueError(
        f"unknown frame/slice rule {rule!r}; expected 'middle', 'first', 'last', 'all', 'every:K' or an int index."
    )


def select_index(n: int, rule: FrameRule | None) -> int:
    """The single index a reader uses: ``rule`` None means ``"middle"``; rules selecting several indices
    (``"all"``, ``"every:K"``) are refused here (they are for ingestion, one row per index)."""
    idx = select_indices(n, "middle" if rule is None else rule)
    if len(idx) != 1:
        raise ValueError(f"a reader needs one frame; rule {rule!r} selects {len(idx)}.")
    return idx[0]


def to_unit_image(arr: np.ndarray, color: bool, max_value: float | None = None, invert: bool = False) -> np.ndarray:
    """Convert a decoded 2D image to channel-first float32 in [0, 1].

    Args:
        arr: ``(H, W)`` grey or ``(H, W, 3|4)`` colour array (any numeric dtype).
        color: whether ``arr`` is colour (last axis = samples; an alpha channel is dropped).
        max_value: scale by this maximum (``x / max_value``, clipped) instead of per-image min-max. Used for
            colour images so that hues are kept; grey images default to per-image min-max.
        invert: ``1 - x`` afterwards (DICOM MONOCHROME1).

    Returns:
        ``(1, H, W)`` or ``(3, H, W)`` float32, finite, in [0, 1]. Non-finite input values are set to the finite
        minimum; a constant image gives zeros.
    """
    a = np.asarray(arr)
    if color:
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"expected a colour image (H, W, 3), got shape {a.shape}.")
        a = np.moveaxis(a[..., :3], -1, 0)
    else:
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ValueError(f"expected a 2D grey image (H, W), got shape {a.shape}.")
        a = a[None]
    a = a.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        if not finite.any():
            raise ValueError("no finite pixel value.")
        a = np.where(finite, a, a[finite].min())
    if max_value is not None and max_value > 0:
        out = np.clip(a / float(max_value), 0.0, 1.0)
    else:
        lo, hi = float(a.min()), float(a.max())
        out = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if invert:
        out = 1.0 - out
    return np.ascontiguousarray(out, dtype=np.float32)


def read_pil_2d(path: str | os.PathLike) -> np.ndarray:
    """Read PNG/JPEG/TIFF/BMP with PIL: ``(1|3, H, W)`` float32 in [0, 1] (8-bit and colour by the bit-depth
    maximum, 16/32-bit integer and float grey by per-image min-max; palette and alpha images become RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB" if mode not in ("LA",) else "L")
                mode = im.mode
            if mode == "1":
                im = im.convert("L")
                mode = "L"
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageReadError(path, f"not a readable image: {safe_reason(e)}") from None
    if mode == "RGB":
        return to_unit_image(arr, color=True, max_value=255.0)
    if mode == "L":
        return to_unit_image(arr, color=False, max_value=255.0)
    return to_unit_image(arr, color=False)


@contextlib.contextmanager
def time_limit(seconds: float | None, path: str | os.PathLike = "") -> Iterator[None]:
    """Raise :class:`ImageReadError` (``path``, "timed out") when the block runs longer than ``seconds``.

    Uses ``SIGALRM``: active only in the main thread of a POSIX process; elsewhere (or with ``seconds`` None/<=0)
    it does nothing.
    """
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _handler(signum, frame):  # noqa: ARG001
        raise ImageReadError(path, f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def suffix_of(path: str | os.PathLike) -> str:
    """Lower-case suffix, ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


class Frame2DReader:
    """Mixin for MONAI ``ImageReader`` subclasses that read one 2D frame (or slice) per file as ``(C, H, W)``.

    Subclasses set ``self.timeout`` and implement ``_read_one(path, frame) -> (array (C, H, W), meta)`` and
    ``_default_frame()``; ``read`` applies the per-file time limit (``frame`` keyword overrides the default) and
    ``get_data`` stacks several files of one size along the channel axis.
    """

    timeout: float | None = None

    def _read_one(self, path: str | os.PathLike, frame) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def _default_frame(self):
        return None

    def read(self, data, **kwargs) -> list[tuple]:
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        frame = kwargs.get("frame", self._default_frame())
        out = []
        for name in names:
            with time_limit(self.timeout, name):
                img, meta = self._read_one(name, frame)
            out.append((str(name), img, meta))
        return out

    def get_data(self, img: list[tuple]) -> tuple[np.ndarray, dict]:
        arrays = [a for _, a, _ in img]
        if len({a.shape[1:] for a in arrays}) > 1:
            raise ImageReadError(img[0][0], "files given together have different sizes")
        meta = dict(img[0][2])
        meta["original_channel_dim"] = 0
        meta["filename_or_obj"] = img[0][0]
        return (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)), meta
