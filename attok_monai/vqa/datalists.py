"""Train/validation data for a VQA bundle: read, split by image, build the attribute vocabulary, load images once.

:func:`prepare_vqa` is what a VQA bundle config calls at start-up::

    data = prepare_vqa("/data/vqa_rad", vocab_dir="runs/x/vocabulary", val_fraction=0.1, seed=0)
    data.vocab                      # AttributeVocabulary built by build_vocabulary on the training part only
    data.train, data.val            # data lists: {"image": path, "question", "answer", "attributes": [...], ...}
    data.split_info                 # counts of pairs and images per part (logged to MLflow)

The validation part is held out **by image** (:func:`attok_monai.data.vqa.split_by_image`): no image is in both parts.
The vocabulary is built from the training pairs alone (cached in ``vocab_dir``); validation pairs are assigned with the
same extractor, restricted to that vocabulary (their attributes are only used for reporting, never as model input).

Images of any size and grey/RGB mode go through :func:`vqa_image_transforms` (the MONAI load chain of
:mod:`attok_monai.data.image_transforms`, with JPEG draft decoding and an area resize, so a 2000 px radiograph costs
~25 ms) and :func:`preload_images` loads each distinct image once (many questions share an image). This module knows
no model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import PILReader
from monai.transforms import Compose, EnsureTyped, Resized, SpatialPadd

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.image_transforms import image_load_transforms, pil_standard_mode
from attok_monai.data.splits import cross_validation_part
from attok_monai.data.vqa import _get, read_vqa, split_by_image, vqa_datalist
from attok_monai.vqa.build_vocabulary import build_vocabulary
from attok_monai.vqa.keywords import LexiconExtractor

__all__ = ["VQAData", "prepare_vqa", "vqa_image_transforms", "preload_images", "DraftConverter", "vqa_texts"]


class DraftConverter:
    """PIL converter for :class:`monai.data.PILReader`: JPEGs are decoded at a reduced DCT scale no smaller than
    ``2 * size`` (``Image.draft``; a 2000 px JPEG decodes ~8x faster), then :func:`pil_standard_mode`. Picklable."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Any) -> Any:
        if getattr(image, "format", None) == "JPEG":
            image.draft(None, (2 * self.size, 2 * self.size))
        return pil_standard_mode(image)


def vqa_image_transforms(size: int = 64, channels: int | None = 1, keys: str = "image") -> Compose:
    """``{"image": path}`` -> ``{"image": float32 (channels, size, size) in [0, 1]}`` for images of any size and mode.

    :func:`image_load_transforms` (load with JPEG draft decoding, channel first, grey/RGB -> ``channels``, [0, 255] ->
    [0, 1]) -> longest side to ``size`` keeping the aspect ratio (area interpolation, which anti-aliases) -> centred
    zero padding to ``size x size``.
    """
    reader = PILReader(converter=DraftConverter(size), reverse_indexing=False)
    return Compose([
        image_load_transforms(keys, size=None, channels=channels, reader=reader),
        Resized(keys, spatial_size=size, size_mode="longest", mode="area"),
        SpatialPadd(keys, spatial_size=(size, size), mode="constant"),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ])


def preload_images(
    items: Sequence[dict[str, Any]], transform: Any, key: str = "image", skipped: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Copies of ``items`` whose ``key`` holds the transformed image tensor, each distinct file loaded once; the
    file path moves to ``"image_path"``.

    Args:
        skipped: when given, an item whose image cannot be loaded is left out and appended here as
            ``{"item": item, "error": exception}`` (every item of that file); when ``None`` the error is raised.

    Raises:
        RuntimeError: naming the item and the file when an image cannot be loaded (``skipped`` is None).
    """
    cache: dict[str, torch.Tensor | BaseException] = {}
    out = []
    for item in items:
        path = item[key]
        if isinstance(path, (str, os.PathLike)):
            path = str(path)
            if path not in cache:
                try:
                    cache[path] = transform({key: path})[key]
                except Exception as e:  # noqa: BLE001 - re-raised with the item named, or reported
                    if skipped is None:
                        raise RuntimeError(
                            f"preload_images: cannot load image {path} of item {item.get('id')}: {e}"
                        ) from e
                    cache[path] = e
            if isinstance(cache[path], BaseException):
                skipped.append({"item": item, "error": cache[path]})
                continue
            out.append({**item, key: cache[path], "image_path": path})
        else:
            out.append(dict(item))
    return out


@dataclass
class VQAData:
    """What :func:`prepare_vqa` returns.

    ``train_records`` / ``val_records``: :class:`~attok_monai.data.vqa.VQARecord` lists (after limits);
    ``train`` / ``val``: data lists (:func:`vqa_datalist` items, ``"attributes"`` as vocabulary indices);
    ``vocab``: the attribute vocabulary; ``split_info``: counts for logging; ``vocab_dir``: where the vocabulary,
    assignments and concept report were written; ``source``: the question file read; ``test_records`` / ``test``:
    the dataset's official test pairs, read only when :func:`prepare_vqa` is asked for them (else empty).
    """

    train_records: list[Any]
    val_records: list[Any]
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    vocab: AttributeVocabulary
    split_info: dict[str, Any] = field(default_factory=dict)
    vocab_dir: Path | None = None
    source: str = ""
    test_records: list[Any] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)

    def part(self, split: str) -> list[dict[str, Any]]:
        """The data list of ``split``: ``"train"``, ``"val"`` (held out by image) or ``"test"`` (official test pairs)."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"VQAData.part: split {split!r}; expected one of {EVAL_SPLITS}.")
        return getattr(self, split)


EVAL_SPLITS = ("train", "val", "test")


def prepare_vqa(
    root: str | os.PathLike,
    vocab_dir: str | os.PathLike | None,
    dataset: str = "vqa_rad",
    val_fraction: float = 0.1,
    seed: int = 0,
    min_count: int = 5,
    modality: str = "rad",
    lexicon: str | os.PathLike | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    read_kwargs: dict[str, Any] | None = None,
    vocabulary: AttributeVocabulary | dict | str | os.PathLike | None = None,
    eval_split: str = "val",
    cv_folds: int = 0,
    cv_fold: int = 0,
) -> VQAData:
    """Read ``dataset`` under ``root``, hold out ``val_fraction`` of its images (``seed``), build the attribute
    vocabulary on the training pairs (lexicon extractor, concepts seen in ``min_count`` pairs or more, cached in
    ``vocab_dir``) and return both data lists.

    With ``vocabulary`` given (e.g. a trained model's), no vocabulary is built: both parts are assigned with the
    extractor restricted to it (evaluation of a saved model).

    ``cv_folds`` > 0 cross-validates the training part instead (model selection without the validation part): its
    images are cut into ``cv_folds`` folds (:func:`cv_parts`), ``val`` is fold ``cv_fold`` and ``train`` the other
    folds, the vocabulary is built on that ``train``, and the held-out validation images are not read.

    ``limit_train`` / ``limit_val`` keep the first N pairs of each part (after the split, so the parts still share no
    image); the vocabulary is built from the full training part either way.

    Only the dataset's official *training* pairs are read for training and validation (VQA-RAD: ``phrase_type``
    freeform/para, so a full ``VQA_RAD Dataset Public.json`` keeps its test pairs out; SLAKE ``train.json``; PathVQA
    ``train``). ``eval_split="test"`` also reads the official test pairs (VQA-RAD ``test_freeform``/``test_para``,
    SLAKE ``test.json``, PathVQA ``test``) into ``test``, assigned with the same vocabulary.

    Raises:
        FileNotFoundError: ``root`` holds no readable question file (the message names the folder).
        ValueError: ``eval_split`` is not one of ``train, val, test``, or ``"test"`` finds no test pairs (the message
            names the file read).
    """
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"prepare_vqa: eval_split {eval_split!r}; expected one of {EVAL_SPLITS}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"prepare_vqa: dataset folder {root} not found; put {dataset} there or set ATTOK_DATA_ROOT / --data_root."
        )
    read_kwargs = {"split": "train", **(read_kwargs or {})}
    records = read_vqa(dataset, root, **read_kwargs)
    train_r, val_r = split_by_image(records, val_fraction=val_fraction, seed=seed)
    if cv_folds or cv_fold:
        train_r, val_r = cv_parts(train_r, cv_folds, cv_fold)
    extractor = LexiconExtractor(lexicon)
    if vocabulary is None:
        built = build_vocabulary(train_r, extractor, vocab_dir, modality=modality, min_count=min_count)
        vocab, train_assign = built.vocab, built.assignment
    else:
        vocab, train_assign = AttributeVocabulary.coerce(vocabulary), None
    token_of = {a.concept: a.token for a in vocab.attributes}

    def assign(records: Sequence[Any]) -> dict[str, list[str]]:
        return {r.id: [token_of[c] for c in extractor.extract(r) if c in token_of] for r in records}

    train_assign = train_assign if train_assign is not None else assign(train_r)
    val_assign = assign(val_r)
    if limit_train is not None:
        train_r = train_r[: int(limit_train)]
    if limit_val is not None:
        val_r = val_r[: int(limit_val)]
    train = vqa_datalist(train_r, train_assign, vocab, split="train")
    val = vqa_datalist(val_r, val_assign, vocab, split="val")
    info = {
        "val_fraction": val_fraction,
        "split_seed": seed,
        "cv_folds": cv_folds,
        "cv_fold": cv_fold,
        "num_train": len(train),
        "num_val": len(val),
        "num_train_images": len({r.image for r in train_r}),
        "num_val_images": len({r.image for r in val_r}),
        "num_train_closed": sum(r.answer_type == "closed" for r in train_r),
        "num_val_closed": sum(r.answer_type == "closed" for r in val_r),
        "num_attributes": len(vocab),
        "num_train_without_attributes": sum(not d["attributes"] for d in train),
    }
    test_r: list[Any] = []
    if eval_split == "test":
        test_list = read_vqa(dataset, root, **{**read_kwargs, "split": "test"})
        test_r = list(test_list)
        if not test_r:
            raise ValueError(
                f"prepare_vqa: {_source(test_list) or root} holds no official test pairs of {dataset} "
                "(VQA-RAD: records with phrase_type test_freeform/test_para, in VQA_RAD_test.json or the full "
                "'VQA_RAD Dataset Public.json')."
            )
        info["num_test"] = len(test_r)
    test = vqa_datalist(test_r, assign(test_r), vocab, split="test") if test_r else []
    source = _source(records)
    return VQAData(train_r, val_r, train, val, vocab, info, Path(vocab_dir) if vocab_dir else None, source,
                   test_r, test)


def cv_parts(records: Sequence[Any], folds: int, fold: int) -> tuple[list[Any], list[Any]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation of question-answer pairs, by image.

    Every pair of one image is in the same fold (the image is the group), and the folds keep the share of each
    organ / body region (``organ``; ``"none"`` where a record has none), as
    :func:`attok_monai.data.splits.cross_validation_part` does for classes. The folds depend only on the records, not
    on a run's seed, so every run of fold ``fold`` trains and validates on the same pairs.

    Args:
        records: :class:`~attok_monai.data.vqa.VQARecord` (or mappings with ``image`` and ``organ``) of the part
            that is cross-validated, usually the training part.
        folds: number of folds (>= 2).
        fold: the held-out fold, ``0 <= fold < folds``.

    Returns:
        ``(train_records, val_records)``: the other folds' pairs and fold ``fold``'s, each in the input order.

    Raises:
        ValueError: a bad ``folds``/``fold`` (the message names ``cv_folds``/``cv_fold``), or fewer images than folds.
    """
    items = [{"label": str(_get(r, "organ") or "none"), "group": str(_get(r, "image")), "index": i}
             for i, r in enumerate(records)]
    images = len({it["group"] for it in items})
    if folds and images < folds:
        raise ValueError(f"cv_folds: {folds} folds of {images} images; expected at least one image per fold.")
    if not folds:
        cross_validation_part(items, folds, fold, "train")  # refuses a cv_fold without cv_folds, with its message
        return list(records), []
    held = {it["index"] for it in cross_validation_part(items, folds, fold, "val")}
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def _source(records: Any) -> str:
    report = getattr(records, "report", None)
    return str(getattr(report, "source", "")) if report is not None else ""


def vqa_texts(items: Sequence[dict[str, Any]]) -> list[str]:
    """Every question and answer text of a data list (to build the word-level tokenizer from)."""
    return [str(d[k]) for d in items for k in ("question", "answer") if d.get(k)]
