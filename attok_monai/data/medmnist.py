"""MedMNIST v2 / MedMNIST+ ``.npz`` files as MONAI-style data lists.

A MedMNIST file holds ``{split}_images`` (uint8, (N, H, W) grey or (N, H, W, 3) RGB) and ``{split}_labels``
((N, 1) class index, or (N, K) multi-label) for the splits ``train``, ``val`` and ``test`` (Yang et al., Sci Data
2023, doi 10.1038/s41597-022-01721-8). The 28x28 files are ``<name>.npz``; the MedMNIST+ sizes 64/128/224 are
``<name>_<size>.npz``. A file may lack a split (e.g. a copy whose test split was withheld): that split is reported
as absent, never invented.

Example::

    path = ensure_medmnist("retinamnist", root="/data/medmnist", download=False)
    items = medmnist_datalist(path, "val")     # [{"image": uint8 (28, 28, 3), "label": 0, "id": ...}, ...]
    xform = medmnist_transforms(channels=3, size=64)
    xform(items[0])["image"].shape            # torch.Size([3, 64, 64]), float32 in [0, 1]
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.apps.utils import check_hash
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform, Resized, ScaleIntensityRanged, Transform

from attok_monai.errors import require_flag

__all__ = [
    "MEDMNIST_INFO",
    "MEDMNIST_SIZES",
    "SPLITS",
    "SplitNotFoundError",
    "ToChannelFirst",
    "ToChannelFirstd",
    "available_splits",
    "ensure_medmnist",
    "load_medmnist_split",
    "medmnist_datalist",
    "medmnist_file_info",
    "medmnist_transforms",
    "parse_medmnist_name",
]

SPLITS = ("train", "val", "test")
MEDMNIST_SIZES = (28, 64, 128, 224)
_ZENODO = "https://zenodo.org/records/10519652/files"


def _files(name: str, md5: Mapping[int, str]) -> dict[int, dict[str, str]]:
    out = {}
    for size, digest in md5.items():
        file = f"{name}.npz" if size == 28 else f"{name}_{size}.npz"
        out[size] = {"file": file, "url": f"{_ZENODO}/{file}?download=1", "md5": digest}
    return out


# URLs and MD5s as in MedMNIST v3.0 ``medmnist/info.py`` (https://github.com/MedMNIST/MedMNIST, Zenodo record
# 10519652, which also serves the v2 28x28 files with the same MD5s as record 6496656). Label names exactly as in
# MedMNIST's ``label`` dicts; keys are the class indices stored in ``{split}_labels``.
MEDMNIST_INFO: dict[str, dict[str, Any]] = {
    "retinamnist": {
        "python_class": "RetinaMNIST",
        "description": "DeepDRiD fundus photographs, 5-level diabetic retinopathy grading (ordinal).",
        "task": "ordinal-regression",
        "labels": {0: "0", 1: "1", 2: "2", 3: "3", 4: "4"},
        "n_channels": 3,
        "n_samples": {"train": 1080, "val": 120, "test": 400},
        "license": "CC BY 4.0",
        "files": _files(
            "retinamnist",
            {
                28: "bd4c0672f1bba3e3a89f0e4e876791e4",
                64: "afda852cc34dcda56f86ad2b2457dbcc",
                128: "e48e916a24454daf90583d4e6efb1a18",
                224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
            },
        ),
    },
    "dermamnist": {
        "python_class": "DermaMNIST",
        "description": "HAM10000 dermatoscopic images, 7 diagnostic categories.",
        "task": "multi-class",
        "labels": {
            0: "actinic keratoses and intraepithelial carcinoma",
            1: "basal cell carcinoma",
            2: "benign keratosis-like lesions",
            3: "dermatofibroma",
            4: "melanoma",
            5: "melanocytic nevi",
            6: "vascular lesions",
        },
        "n_channels": 3,
        "n_samples": {"train": 7007, "val": 1003, "test": 2005},
        "license": "CC BY-NC 4.0",
        "files": _files(
            "dermamnist",
            {
                28: "0744692d530f8e62ec473284d019b0c7",
                64: "b70a2f5635c6199aeaa28c31d7202e1f",
                128: "2defd784463fa5243564e855ed717de1",
                224: "8974907d8e169bef5f5b96bc506ae45d",
            },
        ),
    },
    "octmnist": {
        "python_class": "OCTMNIST",
        "description": "Retinal OCT B-scans (Kermany et al. 2018), 4 diagnosis categories.",
        "task": "multi-class",
        "labels": {0: "choroidal neovascularization", 1: "diabetic macular edema", 2: "drusen", 3: "normal"},
        "n_channels": 1,
        "n_samples": {"train": 97477, "val": 10832, "test": 1000},
        "license": "CC BY 4.0",
        "files": _files(
            "octmnist",
            {
                28: "c68d92d5b585d8d81f7112f81e2d0842",
                64: "e229e9440236b774d9f0dfef9d07bdaf",
                128: "0a97e76651ace45c5d943ee3f65b63ae",
                224: "abc493b6d529d5de7569faaef2773ba3",
            },
        ),
    },
    "pneumoniamnist": {
        "python_class": "PneumoniaMNIST",
        "description": "Paediatric chest X-rays, pneumonia against normal.",
        "task": "binary-class",
        "labels": {0: "normal", 1: "pneumonia"},
        "n_channels": 1,
        "n_samples": {"train": 4708, "val": 524, "test": 624},
        "license": "CC BY 4.0",
        "files": _files(
            "pneumoniamnist",
            {
                28: "28209eda62fecd6e6a2d98b1501bb15f",
                64: "8f4eceb4ccffa70c672198ea285246c6",
                128: "05b46931834c231683c68f40c47b2971",
                224: "d6a3c71de1b945ea11211b03746c1fe1",
            },
        ),
    },
    "pathmnist": {
        "python_class": "PathMNIST",
        "description": "NCT-CRC-HE-100K colorectal H&E patches (test: CRC-VAL-HE-7K), 9 tissue types.",
        "task": "multi-class",
        "labels": {
            0: "adipose",
            1: "background",
            2: "debris",
            3: "lymphocytes",
            4: "mucus",
            5: "smooth muscle",
            6: "normal colon mucosa",
            7: "cancer-associated stroma",
            8: "colorectal adenocarcinoma epithelium",
        },
        "n_channels": 3,
        "n_samples": {"train": 89996, "val": 10004, "test": 7180},
        "license": "CC BY 4.0",
        "files": _files(
            "pathmnist",
            {
                28: "a8b06965200029087d5bd730944a56c1",
                64: "55aa9c1e0525abe5a6b9d8343a507616",
                128: "ac42d08fb904d92c244187169d1fd1d9",
                224: "2c51a510bcdc9cf8ddb2af93af1eadec",
            },
        ),
    },
}
for _info in MEDMNIST_INFO.values():  # the 28x28 file at the top level, as in MedMNIST's info.py
    _info.update(file=_info["files"][28]["file"], url=_info["files"][28]["url"], md5=_info["files"][28]["md5"])


class SplitNotFoundError(KeyError):
    """A split that the file does not have; the message lists the splits it has."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


_NAME_RE = re.compile(r"^(?P<name>[a-z0-9]+?)(?:_(?P<size>28|64|128|224))?$")


def parse_medmnist_name(name: str, size: int | None = None) -> tuple[str, int]:
    """Split ``"retinamnist_224"`` into ``("retinamnist", 224)``; ``size`` is used when the name has no suffix.

    Raises:
        ValueError: unknown dataset, unknown size, or a suffix that contradicts ``size``.
    """
    m = _NAME_RE.match(name.lower())
    if m is None or m.group("name") not in MEDMNIST_INFO:
        raise ValueError(f"unknown MedMNIST dataset {name!r}; known: {sorted(MEDMNIST_INFO)} (optional _64/_128/_224)")
    base, suffix = m.group("name"), m.group("size")
    if suffix is not None:
        if size is not None and size != 28 and int(suffix) != size:
            raise ValueError(f"MedMNIST name {name!r} says size {suffix} but size={size} was asked for")
        size = int(suffix)
    size = 28 if size is None else int(size)
    if size not in MEDMNIST_SIZES:
        raise ValueError(f"MedMNIST size must be one of {MEDMNIST_SIZES}, got {size}")
    return base, size


def medmnist_file_info(name: str, size: int | None = None) -> dict[str, str]:
    """``{"file", "url", "md5"}`` of the official file of dataset ``name`` at ``size`` (28, 64, 128 or 224)."""
    base, size = parse_medmnist_name(name, size)
    return dict(MEDMNIST_INFO[base]["files"][size])


def _download(url: str, dst: Path, md5: str) -> None:
    """MONAI's ``download_url``: download into its own temp folder, check the MD5 there, then move to ``dst`` (a
    temp name beside the final file, renamed by the caller: MONAI's move across file systems is a copy that could
    be seen half-done, and it leaves nothing on a hash mismatch). Raises ``HashCheckError`` (a ``ValueError``) on a
    wrong MD5 and ``OSError``/``RuntimeError`` when offline."""
    from monai.apps.utils import download_url

    download_url(url, dst, hash_val=md5, hash_type="md5", progress=False)


def ensure_medmnist(
    name: str,
    root: str | os.PathLike,
    size: int = 28,
    download: bool = True,
    verify_md5: bool = False,
) -> Path:
    """Return the path of the MedMNIST file ``name`` (optionally ``_<size>``) under ``root``, downloading it if asked.

    A present file is returned as is (shared copies may have their test split withheld, so their MD5 differs from
    the official one); ``verify_md5=True`` checks it. An absent file is downloaded (when ``download``) to a temporary
    file in ``root``, checked against the official MD5 and renamed, so the file is complete or absent.

    Raises:
        FileNotFoundError: the file is absent and ``download`` is False or the download failed (no network); the
            message says where to put the file and where to get it.
        ValueError: MD5 mismatch of a downloaded file (it is removed), or of a present file with ``verify_md5``.
        InputError: ``download`` is not a bool (e.g. the text ``"false"`` from MONAI's command line).
    """
    require_flag(download, "download")  # the text "false" from MONAI's CLI would be truthy
    info = medmnist_file_info(name, size)
    root = Path(root)
    path = root / info["file"]
    if path.is_file():
        if verify_md5 and not check_hash(path, info["md5"], "md5"):
            raise ValueError(f"{path}: MD5 differs from the official {info['md5']} ({info['url']})")
        return path
    how = (
        f"Put the official file at {path}: download {info['url']} (MD5 {info['md5']}), "
        f"e.g. `wget -O '{path}' '{info['url']}'`, or call ensure_medmnist(..., download=True) with network access."
    )
    if not download:
        raise FileNotFoundError(f"MedMNIST file not found: {path} (download=False). {how}")
    from monai.apps.utils import HashCheckError

    created = [d for d in (root, *root.parents) if not d.exists()]  # deepest first
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{info['file']}.{os.getpid()}.part"
    done = False
    try:
        try:
            _download(info["url"], tmp, info["md5"])
        except HashCheckError as e:
            raise ValueError(
                f"downloaded {info['url']} has the wrong MD5, expected {info['md5']}; nothing was written to {path}"
            ) from e
        except (OSError, RuntimeError) as e:  # URLError, timeouts, DNS failures: offline
            raise FileNotFoundError(f"MedMNIST file not found: {path}; download failed ({e}). {how}") from e
        os.replace(tmp, path)
        done = True
    finally:
        tmp.unlink(missing_ok=True)
        if not done:  # a failed download leaves no folder it made behind (e.g. ../shared/data/medmnist offline)
            for d in created:
                try:
                    d.rmdir()
                except OSError:  # not empty (another process wrote there) or not ours to remove
                    break
    return path


# ---------------------------------------------------------------------------------------------------------------
# reading


def _memmap_member(path: Path, member: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npy`` member of an ``.npz``; ``None`` when it is compressed or not mappable."""
    if member.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(member.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


@lru_cache(maxsize=8)
def _load_arrays(path: str, mtime_ns: int, size: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of an ``.npz``: memory-mapped when stored uncompressed, otherwise read once (cached)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        members = {m.filename: m for m in zf.infolist()}
        for key in keys:
            arr = _memmap_member(Path(path), members[f"{key}.npy"])
            if arr is None:
                with zf.open(f"{key}.npy") as f:
                    arr = np.lib.format.read_array(f, allow_pickle=False)
            out[key] = arr
    return out


def _npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e


def available_splits(path: str | os.PathLike) -> list[str]:
    """Splits present in a MedMNIST ``.npz`` (both ``{split}_images`` and ``{split}_labels``): train, val, test
    first, then any other split in file order."""
    keys = _npz_keys(Path(path))
    found = [k[: -len("_images")] for k in keys if k.endswith("_images") and f"{k[: -len('_images')]}_labels" in keys]
    return [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]


def load_medmnist_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one split: images uint8 (N, H, W) or (N, H, W, 3); labels (N, K) integer.

    Raises:
        SplitNotFoundError: (a ``KeyError``) the split is absent; the message lists the splits the file has.
        ValueError: malformed arrays (dtype, rank, mismatched lengths).
    """
    path = Path(path)
    splits = available_splits(path)
    if split not in splits:
        raise SplitNotFoundError(
            f"{path}: split {split!r} is not in this file (no '{split}_images'/'{split}_labels'); "
            f"it has: {splits or 'no splits'}"
        )
    st = path.stat()
    arrays = _load_arrays(str(path.resolve()), st.st_mtime_ns, st.st_size, (f"{split}_images", f"{split}_labels"))
    # plain ndarray views (a memory map stays a memory map underneath, but prints and pickles as an array)
    images, labels = arrays[f"{split}_images"].view(np.ndarray), arrays[f"{split}_labels"].view(np.ndarray)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(
            f"{path}: '{split}_images' must be uint8 (N,H,W) or (N,H,W,3), got {images.dtype} {images.shape}"
        )
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise ValueError(
            f"{path}: '{split}_labels' must be integer (N, K) with N={len(images)}, got {labels.dtype} {labels.shape}"
        )
    return images, labels


def medmnist_datalist(
    path_or_root: str | os.PathLike,
    split: str,
    name: str | None = None,
    size: int = 28,
    download: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """A MONAI-style data list of one split of a MedMNIST file.

    Args:
        path_or_root: an ``.npz`` file, or a folder holding ``<name>[_<size>].npz`` (then ``name`` is needed and the
            file is found with :func:`ensure_medmnist`).
        split: ``"train"``, ``"val"`` or ``"test"`` (any split the file has).
        name: dataset name used for ``id`` (default: the file stem, e.g. ``retinamnist``); with a folder, the MedMNIST
            dataset to open.
        size: image size of the file to open when ``path_or_root`` is a folder.
        download: with a folder, download the official file if absent.
        limit: keep only the first ``limit`` items (quick runs).

    Returns:
        items ``{"image": uint8 (H, W) or (H, W, 3) array (a view, memory-mapped when the file is uncompressed),
        "label": int (single-label) or list[int] (multi-label), "id": "<name>/<split>/<index:05d>", "split": split}``,
        plus ``"group"`` (the source image of an augmented copy) when the file has ``{split}_source_index``.
    """
    path = Path(path_or_root)
    if path.is_dir():
        if name is None:
            raise ValueError(f"{path} is a folder: give the MedMNIST dataset name (one of {sorted(MEDMNIST_INFO)})")
        path = ensure_medmnist(name, path, size=size, download=download)
    elif not path.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    images, labels = load_medmnist_split(path, split)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    tag = name or path.stem
    n = len(images) if limit is None else min(limit, len(images))
    width = max(5, len(str(max(n - 1, 0))))
    source = None
    if f"{split}_source_index" in _npz_keys(path):
        st = path.stat()
        source = _load_arrays(str(path.resolve()), st.st_mtime_ns, st.st_size, (f"{split}_source_index",))
        source = source[f"{split}_source_index"]
    multi = labels.shape[1] > 1
    items = []
    for i in range(n):
        item: dict[str, Any] = {
            "image": images[i],
            "label": [int(v) for v in labels[i]] if multi else int(labels[i, 0]),
            "id": f"{tag}/{split}/{i:0{width}d}",
            "split": split,
        }
        if source is not None:
            item["group"] = f"{tag}/{split}/src{int(source[i]):0{width}d}"
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------------------------------
# transforms

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion


class ToChannelFirst(Transform):
    """(H, W) or (H, W, C) image -> channel-first (channels, H, W), same dtype.

    Grey images are replicated to ``channels=3``; RGB images become grey with BT.601 weights when ``channels=1``.
    Already channel-first tensors (MONAI convention) are not supported: this reads raw npz/PIL-style arrays.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, channels: int = 3) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels

    def __call__(self, img: Any) -> Any:
        if img.ndim == 2:
            img = img[None]
        elif img.ndim == 3 and img.shape[-1] in (1, 3):
            img = np.moveaxis(img, -1, 0) if isinstance(img, np.ndarray) else img.movedim(-1, 0)
        else:
            raise ValueError(f"expected an image (H, W) or (H, W, 1|3), got shape {tuple(img.shape)}")
        c = img.shape[0]
        if c == self.channels:
            return img
        if self.channels == 3:  # grey -> RGB
            return np.repeat(img, 3, axis=0) if isinstance(img, np.ndarray) else img.repeat(3, 1, 1)
        weights = np.asarray(_LUMA, dtype=np.float32)[:, None, None]
        if isinstance(img, np.ndarray):
            return (img.astype(np.float32) * weights).sum(0, keepdims=True)
        return (img.float() * torch.as_tensor(weights, device=img.device)).sum(0, keepdim=True)


class ToChannelFirstd(MapTransform):
    """Dictionary version of :class:`ToChannelFirst`."""

    backend = ToChannelFirst.backend

    def __init__(self, keys: KeysCollection, channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToChannelFirst(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


def medmnist_transforms(
    keys: KeysCollection = "image",
    channels: int = 3,
    size: int | Sequence[int] | None = None,
    augment: str | os.PathLike | Sequence[Any] | None = None,
    track_meta: bool = False,
) -> Compose:
    """Load chain for npz arrays: uint8 (H, W[, 3]) -> float32 (channels, H, W) in [0, 1], optionally resized.

    Steps: :class:`ToChannelFirstd` -> ``ScaleIntensityRanged`` (0..255 -> 0..1, clipped) -> ``Resized`` to
    ``size`` (bilinear with anti-aliasing, so values stay in [0, 1]) -> ``augment`` (a transform fragment name or
    path for :func:`attok_monai.data.transforms.load_transform_fragment`, or a list of transforms) ->
    ``EnsureTyped(float32)``.

    Args:
        keys: keys of the image(s) in the item.
        channels: 3 (grey replicated) or 1 (RGB to grey).
        size: output spatial size (int for square); ``None`` keeps the file's size.
        augment: optional training augmentation appended after the resize.
        track_meta: return ``MetaTensor`` (True) or plain ``torch.Tensor`` (False).
    """
    xforms: list[Any] = [
        ToChannelFirstd(keys, channels=channels),
        ScaleIntensityRanged(keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    if size is not None:
        spatial = (size, size) if isinstance(size, int) else tuple(size)
        xforms.append(Resized(keys, spatial_size=spatial, mode="bilinear", anti_aliasing=True))
    if augment is not None:
        if isinstance(augment, (str, os.PathLike)):
            from attok_monai.data.transforms import load_transform_fragment

            augment = load_transform_fragment(augment)
        xforms.extend(augment)
    xforms.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=track_meta))
    return Compose(xforms)
