"""DICOM for 2D images: a header-only scan for ingestion and a pydicom pixel reader to (C, H, W) float32 in [0, 1].

Reading one frame (:func:`read_dicom_frame`), in this order:

1. full read with ``pydicom.dcmread(force=True)``; a missing Transfer Syntax UID is inferred from the encoding
   the file was read with (native data only);
2. decode the chosen frame (``pydicom.pixels`` decoders; compressed syntaxes through the installed plugins,
   e.g. ``pylibjpeg`` + ``pylibjpeg-libjpeg`` / ``-openjpeg`` / ``-rle``). YBR_FULL / YBR_FULL_422 / YBR_RCT /
   YBR_ICT come back as RGB;
3. PALETTE COLOR -> RGB through the palette (``apply_color_lut``), scaled by the LUT entry depth;
   RGB -> scaled by ``2**BitsStored - 1`` (hues kept);
4. grey: Modality LUT / Rescale Slope+Intercept (``apply_modality_lut``), then the first VOI LUT or window
   (``apply_voi_lut``) when present (values of enhanced multi-frame functional groups are used for the chosen
   frame), then per-image min-max to [0, 1]; MONOCHROME1 (or MONOCHROME2 with Presentation LUT Shape INVERSE)
   is inverted so that 1 is always bright.

Frame rule for multi-frame files (reader default): ``"middle"`` = frame ``n // 2``; see
:func:`attok_monai.data.image2d.select_indices` for the others. A single-frame file ignores the rule except for
explicit out-of-range indices.

Errors are :class:`~attok_monai.data.image2d.ImageReadError` naming the file and the reason; no header value
(names, IDs, dates, UIDs) is ever put in a message, a log or the image metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from attok_monai.data.image2d import (
    PIL_SUFFIXES,
    Frame2DReader,
    FrameRule,
    ImageReadError,
    safe_reason,
    select_index,
    suffix_of,
    to_unit_image,
)

__all__ = [
    "DicomHeader", "quiet_pydicom", "scan_dicom", "read_dicom_frame", "verify_dicom_frames", "PydicomReader2D",
    "is_dicomdir", "dicomdir_files",
]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS_LE = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00"}
_PIXEL_TAGS_BE = {b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"UN", b"OV"}
_NOT_DICOM_SUFFIXES = set(PIL_SUFFIXES) | {".nii", ".nii.gz", ".npz", ".npy", ".json", ".csv", ".txt", ".md"}


@contextlib.contextmanager
def quiet_pydicom():
    """Silence pydicom's warnings and log records inside the block: their text can quote header values."""
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


@dataclass
class DicomHeader:
    """What the header-only scan keeps of one DICOM file.

    The identifier fields (``sop_instance_uid`` ... ``patient_id``) hold raw header values: they are only ever
    pseudonymised or compared, never written or printed (``repr`` hides them).
    """

    path: str
    modality: str = ""
    rows: int = 0
    columns: int = 0
    n_frames: int = 1
    samples_per_pixel: int = 1
    photometric: str = ""
    bits_stored: int = 0
    transfer_syntax: str = ""
    instance_number: int | None = None
    body_part: str = ""
    sop_instance_uid: str = field(default="", repr=False)
    series_instance_uid: str = field(default="", repr=False)
    study_instance_uid: str = field(default="", repr=False)
    accession_number: str = field(default="", repr=False)
    patient_id: str = field(default="", repr=False)

    def identifier(self, keyword: str) -> str:
        """Raw value of ``SOPInstanceUID`` / ``SeriesInstanceUID`` / ``StudyInstanceUID`` / ``AccessionNumber`` /
        ``PatientID`` ("" when absent)."""
        attr = {
            "SOPInstanceUID": "sop_instance_uid",
            "SeriesInstanceUID": "series_instance_uid",
            "StudyInstanceUID": "study_instance_uid",
            "AccessionNumber": "accession_number",
            "PatientID": "patient_id",
        }.get(keyword)
        if attr is None:
            raise ValueError(f"unknown DICOM key {keyword!r}; expected one of SOPInstanceUID, SeriesInstanceUID, "
                             "StudyInstanceUID, AccessionNumber, PatientID.")
        return getattr(self, attr)


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # a malformed element: treat as absent
        return ""
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str, default: int | None = 0) -> int | None:
    try:
        value = ds.get(keyword, None)
        return default if value in (None, "") else int(value)
    except Exception:
        return default


def is_dicomdir(ds: Dataset) -> bool:
    """Whether a dataset is a DICOMDIR (media storage directory)."""
    meta = getattr(ds, "file_meta", None)
    sop = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return sop == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds


def _read_header(path: Path) -> tuple[Dataset, int | None, bytes]:
    """dcmread(stop_before_pixels) and the bytes at the stop position (the pixel element header, if any)."""
    with open(path, "rb") as f:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            if not any(k in ds for k in ("SOPInstanceUID", "SOPClassUID", "Rows")):
                raise ImageReadError(path, "not a DICOM file (no DICM preamble and no DICOM image elements)") from None
        pos = f.tell()
        head = f.read(12)
    return ds, pos, head


def scan_dicom(path: str | os.PathLike) -> DicomHeader:
    """Header-only scan of one file (pixel data are not read; only the pixel element's header is checked).

    Raises:
        ImageReadError: the file is empty, not DICOM, a DICOMDIR, has no pixel data, no Rows/Columns, or its
            native pixel data are shorter than Rows x Columns x frames x samples needs (truncated file).
    """
    with quiet_pydicom():
        return _scan_dicom(path)


def _scan_dicom(path: str | os.PathLike) -> DicomHeader:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageReadError(path, f"cannot stat the file: {e.strerror}") from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with quiet_pydicom():
            ds, pos, head = _read_header(path)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(path, f"unreadable DICOM header: {safe_reason(e)}") from None
    if is_dicomdir(ds):
        raise ImageReadError(path, "DICOMDIR (media directory, no image)")
    meta = getattr(ds, "file_meta", None)
    tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    deflated = tsyntax == _DEFLATED
    tag = head[:4]
    if not deflated and tag not in _PIXEL_TAGS_LE and tag not in _PIXEL_TAGS_BE:
        raise ImageReadError(path, "no pixel data (not an image object)")
    h = DicomHeader(
        path=str(path),
        modality=_text(ds, "Modality"),
        rows=_int(ds, "Rows") or 0,
        columns=_int(ds, "Columns") or 0,
        n_frames=_int(ds, "NumberOfFrames", 1) or 1,
        samples_per_pixel=_int(ds, "SamplesPerPixel", 1) or 1,
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        bits_stored=_int(ds, "BitsStored") or 0,
        instance_number=_int(ds, "InstanceNumber", None),
        body_part=_text(ds, "BodyPartExamined").upper(),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        accession_number=_text(ds, "AccessionNumber"),
        patient_id=_text(ds, "PatientID"),
    )
    h.transfer_syntax = tsyntax
    if h.rows <= 0 or h.columns <= 0:
        raise ImageReadError(path, "pixel data without valid Rows/Columns")
    if h.n_frames < 1:
        raise ImageReadError(path, "invalid NumberOfFrames")
    # pixel element header: tag (4) + [VR (2) + reserved (2)] + length (4)
    little = tag in _PIXEL_TAGS_LE
    explicit = head[4:6] in _LONG_VRS
    raw_len = head[8:12] if explicit else head[4:8]
    if not deflated and len(raw_len) == 4 and pos is not None:  # a deflated stream has no file offsets
        length = struct.unpack("<I" if little else ">I", raw_len)[0]
        value_start = pos + (12 if explicit else 8)
        if length != 0xFFFFFFFF:  # native (not encapsulated)
            if size - value_start < length:
                raise ImageReadError(path, "truncated file (shorter than its Pixel Data length)")
            bits_alloc = _int(ds, "BitsAllocated") or 0
            if bits_alloc:
                n_px = h.rows * h.columns * h.n_frames
                per_px = 2 if h.photometric == "YBR_FULL_422" else h.samples_per_pixel
                expected = (n_px * per_px * bits_alloc + 7) // 8
                if length < expected:
                    raise ImageReadError(path, "truncated pixel data (shorter than Rows x Columns x frames needs)")
    return h


def dicomdir_files(dicomdir: str | os.PathLike) -> list[Path]:
    """Files referenced by IMAGE-like records of a DICOMDIR, resolved against its folder (existing or not)."""
    dicomdir = Path(dicomdir)
    ds = pydicom.dcmread(dicomdir, force=True)
    out: list[Path] = []
    for rec in ds.get("DirectoryRecordSequence", []):
        ref = rec.get("ReferencedFileID", None)
        if ref is None:
            continue
        parts = [str(p) for p in ref] if isinstance(ref, (list, tuple, pydicom.multival.MultiValue)) else [str(ref)]
        out.append(dicomdir.parent.joinpath(*parts))
    return out


# ---------------------------------------------------------------------------------------------- pixel reading
def _ensure_transfer_syntax(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        raise ValueError("no Transfer Syntax UID and unknown encoding")
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )


def _frame_lut_view(ds: Dataset, index: int) -> Dataset:
    """A dataset with the Modality LUT/VOI values that apply to frame ``index`` (enhanced multi-frame files keep
    them in the functional group sequences)."""
    view = Dataset()
    for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter",
               "WindowWidth", "VOILUTFunction", "VOILUTSequence", "PixelRepresentation", "BitsStored",
               "BitsAllocated", "PhotometricInterpretation"):
        if kw in ds:
            setattr(view, kw, ds[kw].value)
    groups = []
    try:
        if "PerFrameFunctionalGroupsSequence" in ds and index < len(ds.PerFrameFunctionalGroupsSequence):
            groups.append(ds.PerFrameFunctionalGroupsSequence[index])
        if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
            groups.append(ds.SharedFunctionalGroupsSequence[0])
    except Exception:
        groups = []
    for seq_kw, kws in (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
                        ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction"))):
        for g in groups:
            seq = g.get(seq_kw)
            if seq:
                for kw in kws:
                    if kw in seq[0] and kw not in view:
                        setattr(view, kw, seq[0][kw].value)
                break
    return view


def _decode(ds: Dataset, index: int | None) -> tuple[np.ndarray, str]:
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import as_pixel_options

    tsyntax = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise ValueError(f"transfer syntax {tsyntax.name} is not supported by the installed decoders") from None
    arr, meta = decoder.as_array(ds, index=index, validate=True, as_rgb=True, **as_pixel_options(ds))
    pi = str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).upper()
    return arr, pi


def dataset_frame_to_image(ds: Dataset, frame: FrameRule | None = None) -> tuple[np.ndarray, int, int]:
    """Decode one frame of a full dataset: ``((C, H, W) float32 in [0, 1], frame index, number of frames)``.

    Raises:
        ValueError / pydicom errors: the caller wraps them in :class:`ImageReadError`.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ValueError("no pixel data")
    _ensure_transfer_syntax(ds)
    n = _int(ds, "NumberOfFrames", 1) or 1
    idx = select_index(n, frame)
    arr, pi = _decode(ds, idx if n > 1 else None)
    if n > 1 and arr.ndim == (4 if _int(ds, "SamplesPerPixel", 1) > 1 else 3):
        arr = arr[0]
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        try:
            lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception:
            lut_bits = 16 if rgb.dtype.itemsize > 1 else 8
        return to_unit_image(rgb, color=True, max_value=float(2 ** lut_bits - 1)), idx, n
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if pi.startswith("YBR") and pi not in ("YBR_RCT", "YBR_ICT"):
            arr = convert_color_space(arr, pi, "RGB")
        bits = _int(ds, "BitsStored") or 8 * arr.dtype.itemsize
        max_value = float(2 ** bits - 1) if np.issubdtype(arr.dtype, np.integer) else None
        return to_unit_image(arr, color=True, max_value=max_value), idx, n
    view = _frame_lut_view(ds, idx)
    out = arr
    if not np.issubdtype(arr.dtype, np.floating):
        out = apply_modality_lut(out, view)
        if ("WindowCenter" in view and "WindowWidth" in view) or "VOILUTSequence" in view:
            out = apply_voi_lut(out, view, index=0)
    invert = pi == "MONOCHROME1" or (pi == "MONOCHROME2" and _text(ds, "PresentationLUTShape").upper() == "INVERSE")
    return to_unit_image(out, color=False, invert=invert), idx, n


def read_dicom_frame(path: str | os.PathLike, frame: FrameRule | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one frame of a DICOM file as ``(C, H, W)`` float32 in [0, 1] (C = 1 grey, 3 colour).

    Args:
        path: the DICOM file.
        frame: frame index or rule for multi-frame files (None = ``"middle"``).

    Returns:
        ``(image, meta)`` with ``meta`` = ``{"frame", "n_frames", "modality", "body_part", "photometric",
        "spatial_shape"}``
        (no identifying header values).

    Raises:
        ImageReadError: naming the file and the reason.
    """
    with quiet_pydicom():
        return _read_dicom_frame(path, frame)


def _read_dicom_frame(path: str | os.PathLike, frame: FrameRule | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:  # no DICM preamble: a raw data set, or not DICOM at all
            ds = pydicom.dcmread(path, force=True)
            if not any(k in ds for k in ("SOPInstanceUID", "SOPClassUID", "Rows")):
                raise ImageReadError(path, "not a DICOM file (no DICM preamble and no DICOM image elements)") from None
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except Exception as e:
        raise ImageReadError(path, f"unreadable DICOM: {safe_reason(e)}") from None
    if is_dicomdir(ds):
        raise ImageReadError(path, "DICOMDIR (media directory, no image)")
    try:
        img, idx, n = dataset_frame_to_image(ds, frame)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(path, f"pixel decoding failed: {safe_reason(e)}") from None
    meta = {
        "frame": idx,
        "n_frames": n,
        "modality": _text(ds, "Modality"),
        "body_part": _text(ds, "BodyPartExamined").upper(),
        "photometric": _text(ds, "PhotometricInterpretation").upper(),
        "spatial_shape": np.asarray(img.shape[1:]),
    }
    return img, meta


def verify_dicom_frames(path: str | os.PathLike, frames: Sequence[int]) -> None:
    """Decode the given frames of a DICOM file (the file read once), as a check that they can be read.

    Raises:
        ImageReadError: naming the file and the full reason (every line of a decoder's message).
    """
    with quiet_pydicom():
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as e:
            raise ImageReadError(path, f"unreadable DICOM: {safe_reason(e)}") from None
        for f in frames:
            try:
                dataset_frame_to_image(ds, f)
            except ImageReadError:
                raise
            except Exception as e:
                raise ImageReadError(path, f"pixel decoding failed: {safe_reason(e)}") from None


class PydicomReader2D(Frame2DReader, ImageReader):
    """MONAI ``ImageReader`` returning one 2D frame of a DICOM file as channel-first float32 in [0, 1].

    ``LoadImage(reader=PydicomReader2D(frame="middle"))`` and ``LoadImaged(keys="image", reader=...)`` give a
    ``MetaTensor`` of shape ``(C, H, W)``, C = 1 (grey) or 3 (RGB). Several files given together are stacked
    along the channel axis (they must have the same ``H, W``).

    Args:
        frame: frame index or rule for multi-frame files (see :func:`read_dicom_frame`); None = ``"middle"``.
        timeout: seconds per file before :class:`ImageReadError` (main thread only; None = no limit).
    """

    def __init__(self, frame: FrameRule | None = None, timeout: float | None = None) -> None:
        super().__init__()
        self.frame = frame
        self.timeout = timeout

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(suffix_of(n) not in _NOT_DICOM_SUFFIXES for n in names)

    def _default_frame(self) -> FrameRule | None:
        return self.frame

    def _read_one(self, path: str | os.PathLike, frame: FrameRule | None) -> tuple[np.ndarray, dict]:
        return read_dicom_frame(path, frame)
