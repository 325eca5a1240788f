"""Offline class-balanced augmentation of a MedMNIST-format ``.npz`` (AttTok paper, appendix A.2).

GPTv training pipelines cannot augment online, so the paper balances classes offline: each class of the training
split is brought to ``per_class`` images by class-balanced sampling, and every augmented instance (random crop +
horizontal flip) is stored as a new image. The other splits are copied unchanged.

Command::

    python -m attok_monai.data.offline_augment --input retinamnist.npz --output retinamnist_balanced.npz \\
        --split train --per-class 500 --seed 0 [--no-hflip] [--crop-scale 0.8] [--fragment fundus_train]

The output has the usual ``{split}_images`` / ``{split}_labels`` plus ``{split}_source_index`` (int64: the index
in the input split each image comes from, so group-aware splits can keep copies of one image together) and
``{split}_augmented`` (bool). It is written to a temporary file next to the output and renamed: complete or absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, RandFlip, RandScaleCrop, Resize

from attok_monai.data.medmnist import (
    MEDMNIST_INFO,
    available_splits,
    load_medmnist_split,
    parse_medmnist_name,
)
from attok_monai.fileio import atomic_write

__all__ = ["balanced_augment", "class_counts", "crop_flip_transform", "main", "offline_augment"]


def class_counts(labels: np.ndarray, num_classes: int) -> dict[int, int]:
    """``{class index: count}`` of single-label ``labels`` ((N,) or (N, 1)) for classes ``0..num_classes-1``."""
    flat = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes)
    return {c: int(n) for c, n in enumerate(counts)}


def crop_flip_transform(
    spatial_size: Sequence[int], crop_scale: float = 0.8, hflip: bool = True, seed: int = 0
) -> Compose:
    """Random resized crop (+ left-right flip) on a channel-first float array (C, H, W), output size unchanged.

    The crop takes each side uniformly in ``[crop_scale, 1]`` of the image side at a random position, then resizes
    bilinearly back to ``spatial_size``; with ``hflip`` the result is mirrored left-right with probability 0.5.
    """
    if not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
    xforms = [
        RandScaleCrop(roi_scale=crop_scale, max_roi_scale=1.0, random_center=True, random_size=True),
        Resize(spatial_size=tuple(spatial_size), mode="bilinear"),
    ]
    if hflip:
        xforms.append(RandFlip(prob=0.5, spatial_axis=1))
    chain = Compose(xforms)
    chain.set_random_state(seed=seed)
    return chain


def _fragment_transform(fragment: str | os.PathLike, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    from attok_monai.data.transforms import load_transform_fragment

    chain = Compose(load_transform_fragment(fragment))
    chain.set_random_state(seed=seed)

    def apply(img: np.ndarray) -> np.ndarray:  # (C, H, W) 0..255 float -> same
        out = chain({"image": torch.as_tensor(img / 255.0, dtype=torch.float32)})["image"]
        return np.asarray(torch.as_tensor(out).detach().cpu()) * 255.0

    return apply


def balanced_augment(
    images: np.ndarray,
    labels: np.ndarray,
    per_class: int,
    num_classes: int | None = None,
    seed: int = 0,
    crop_scale: float = 0.8,
    hflip: bool = True,
    fragment: str | os.PathLike | None = None,
    keep_originals: bool = True,
) -> dict[str, np.ndarray]:
    """Class-balanced copy of one split: exactly ``per_class`` images of every class, shuffled.

    A class with at least ``per_class`` images gets a random subset of its originals (without replacement). A
    smaller class keeps all its originals and is filled up with augmented copies; the sources of the copies cycle
    through random permutations of the class, so every original is used as evenly as possible. With
    ``keep_originals=False`` all ``per_class`` images of every class are augmented copies.

    Args:
        images: uint8 (N, H, W) or (N, H, W, C).
        labels: integer (N,) or (N, 1) single-label class indices.
        per_class: images per class in the output.
        num_classes: classes ``0..num_classes-1`` (default ``labels.max() + 1``); each must have an image.
        seed: seeds the sampling and the augmentation.
        crop_scale, hflip: the default random resized crop + flip (:func:`crop_flip_transform`).
        fragment: instead, a transform fragment (name or path, see ``attok_monai.data.transforms``) applied to the
            image as a float (C, H, W) tensor in [0, 1].
        keep_originals: keep original images (see above).

    Returns:
        ``{"images": uint8 like ``images`` with ``num_classes * per_class`` rows, "labels": like ``labels``,
        "source_index": int64 index into the input, "augmented": bool}``.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
        raise ValueError(
            f"expected uint8 images (N,H,W[,C]) and N labels, got {images.dtype} {images.shape}, labels {labels.shape}"
        )
    lab2d = labels.reshape(len(labels), -1)
    if lab2d.shape[1] != 1:
        raise ValueError(f"class-balanced augmentation needs single-label data, got labels of shape {labels.shape}")
    flat = lab2d[:, 0].astype(np.int64)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    num_classes = int(flat.max()) + 1 if num_classes is None else num_classes
    if flat.min() < 0 or flat.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {flat.min()}..{flat.max()}")
    rng = np.random.default_rng(seed)
    sources, augmented = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(flat == c)
        if len(idx) == 0:
            raise ValueError(f"class {c} has no image: cannot make {per_class} images of it")
        n_orig = min(len(idx), per_class) if keep_originals else 0
        orig = np.sort(rng.choice(idx, size=n_orig, replace=False)) if n_orig else np.empty(0, np.int64)
        n_aug = per_class - n_orig
        reps = -(-n_aug // len(idx))
        aug = np.concatenate([rng.permutation(idx) for _ in range(reps)])[:n_aug] if n_aug else np.empty(0, np.int64)
        sources += [orig, aug]
        augmented += [np.zeros(len(orig), bool), np.ones(len(aug), bool)]
    source_index = np.concatenate(sources).astype(np.int64)
    is_aug = np.concatenate(augmented)
    order = rng.permutation(len(source_index))
    source_index, is_aug = source_index[order], is_aug[order]

    grey = images.ndim == 3
    spatial = images.shape[1:3]
    aug_seed = int(rng.integers(2**31 - 1))
    if fragment is not None:
        augment = _fragment_transform(fragment, aug_seed)
    else:
        chain = crop_flip_transform(spatial, crop_scale=crop_scale, hflip=hflip, seed=aug_seed)

        def augment(img: np.ndarray) -> np.ndarray:
            return np.asarray(torch.as_tensor(chain(img)))

    out = images[source_index].copy()
    for row in np.flatnonzero(is_aug):
        img = out[row].astype(np.float32)
        chw = img[None] if grey else np.moveaxis(img, -1, 0)
        res = augment(chw)
        if res.shape != chw.shape:
            raise ValueError(f"the augmentation changed the image shape {chw.shape} -> {res.shape}")
        res = res[0] if grey else np.moveaxis(res, 0, -1)
        out[row] = np.clip(np.rint(res), 0, 255).astype(np.uint8)
    return {"images": out, "labels": labels[source_index], "source_index": source_index, "augmented": is_aug}


def _num_classes_for(path: Path) -> int | None:
    stem = path.stem.lower()
    for candidate in (stem, stem.split("_")[0]):
        try:
            return len(MEDMNIST_INFO[parse_medmnist_name(candidate)[0]]["labels"])
        except ValueError:
            continue
    return None


def offline_augment(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    split: str = "train",
    per_class: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    crop_scale: float = 0.8,
    hflip: bool = True,
    fragment: str | os.PathLike | None = None,
    keep_originals: bool = True,
    compress: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Write a copy of the MedMNIST file ``input_path`` whose ``split`` is class-balanced (see
    :func:`balanced_augment`); all other arrays are copied unchanged. ``per_class`` defaults to the size of the
    largest class; ``num_classes`` to the MedMNIST class count when the file name is a MedMNIST name, else
    ``labels.max() + 1``. Uncompressed output (the default) can be memory-mapped by the reader. Returns the output.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise ValueError(f"--output must differ from --input ({input_path})")
    images, labels = load_medmnist_split(input_path, split)
    num_classes = num_classes or _num_classes_for(input_path) or int(labels.max()) + 1
    before = class_counts(labels, num_classes)
    per_class = per_class or max(before.values())
    log(f"{input_path.name} {split}: {len(labels)} images, class counts before: {before}")
    result = balanced_augment(
        images,
        labels,
        per_class,
        num_classes=num_classes,
        seed=seed,
        crop_scale=crop_scale,
        hflip=hflip,
        fragment=fragment,
        keep_originals=keep_originals,
    )
    arrays: dict[str, np.ndarray] = {}  # input order, the balanced split where it was
    with np.load(input_path, allow_pickle=False) as npz:
        for key in npz.files:
            if not key.startswith(f"{split}_"):
                arrays[key] = npz[key]
            elif f"{split}_images" not in arrays:
                arrays.update({f"{split}_{k}": v for k, v in result.items()})
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
        with zipfile.ZipFile(tmp) as zf:  # a complete archive before it takes the final name
            if zf.testzip() is not None:
                raise OSError(f"{tmp}: written archive is corrupt")

    atomic_write(output_path, write)
    after = class_counts(result["labels"], num_classes)
    log(
        f"{output_path.name} {split}: {len(result['labels'])} images ({int(result['augmented'].sum())} augmented), "
        f"class counts after: {after}; other splits copied: {[s for s in available_splits(output_path) if s != split]}"
    )
    return output_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m attok_monai.data.offline_augment",
        description="Offline class-balanced augmentation of a MedMNIST-format .npz (AttTok appendix A.2).",
    )
    p.add_argument("--input", required=True, type=Path, help="MedMNIST-format .npz to read")
    p.add_argument("--output", required=True, type=Path, help=".npz to write (atomically)")
    p.add_argument("--split", default="train", help="split to balance (default train); others are copied")
    p.add_argument("--per-class", type=int, default=None, help="images per class (default: largest class size)")
    p.add_argument("--num-classes", type=int, default=None, help="default: from the MedMNIST name, else max+1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop-scale", type=float, default=0.8, help="min side fraction of the random crop (0, 1]")
    p.add_argument("--no-hflip", dest="hflip", action="store_false", help="no left-right flip (OCT, chest X-ray)")
    p.add_argument("--fragment", default=None, help="use this augmentation fragment (a name in attok_monai/configs/transforms, or a .json path) instead of crop + flip")
    p.add_argument(
        "--no-originals",
        dest="keep_originals",
        action="store_false",
        help="store only augmented copies (default keeps originals and fills up with copies)",
    )
    p.add_argument("--compress", action="store_true", help="np.savez_compressed (not memory-mappable)")
    args = p.parse_args(argv)
    try:
        offline_augment(
            args.input,
            args.output,
            split=args.split,
            per_class=args.per_class,
            num_classes=args.num_classes,
            seed=args.seed,
            crop_scale=args.crop_scale,
            hflip=args.hflip,
            fragment=args.fragment,
            keep_originals=args.keep_originals,
            compress=args.compress,
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
