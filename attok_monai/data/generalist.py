"""The union datalist of a compact medical generalist: the *training* parts of several bundles, as plain-text
instruction samples at one image size and channel count.

Each source is a bundle folder; its ``configs/train.json`` is read with :class:`monai.bundle.ConfigParser` (bundle
configs are data, not Python), so the generalist asks exactly the questions that bundle asks (its templates, its
clinical names as answers, VQA-RAD's training question-answer pairs) from exactly the part that bundle trains on (its
``train#datalist``: the given train split, VQA-RAD's image-held-out training part). Nothing here reads a validation or
test part: a source whose items say another split, or whose ``train_split`` is not ``"train"``, is refused.

The per-source pipeline is the bundle's own training preprocessing (loading, augmentation, question sampling) followed
by :class:`GeneralistSampled`: image to ``channels x size x size`` (grey replicated to RGB, bilinear anti-aliased
resize), the answer text set from the source's vocabulary (the clinical name; VQA answers are kept) and the attribute
indices moved into the union vocabulary (one block per source, in source order).

Example (the ``compact_generalist`` bundle)::

    data = read_generalist_sources({"fundus_dr": {"data_root": "data/medmnist"}, ...}, bundles_dir="bundles",
                                   work_dir="runs/g/sources")
    dataset = data.dataset(image_size=32, channels=3)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, MapTransform

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.instructions import InstructionTemplates
from attok_monai.errors import InputError

__all__ = ["GeneralistSource", "GeneralistData", "GeneralistSampled", "read_bundle_source", "read_bundle_texts",
           "read_generalist_sources"]

logger = logging.getLogger("attok_monai.data")

_KEEP = ("image", "question", "answer", "attributes", "kind", "source", "id")
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class GeneralistSource:
    """One bundle's training part.

    ``name``: the bundle folder's name; ``items``: its ``train#datalist``; ``transform``: its ``train#preprocessing``
    (``None`` when the items are ready, e.g. VQA-RAD's preloaded images); ``vocabulary`` / ``templates``: the bundle's;
    ``texts``: every text the tokenizer must know (templates, class names, keywords, question-answer pairs);
    ``data_file``: the bundle's data file, if it names one; ``split``: where the items came from.
    """

    name: str
    items: list[dict[str, Any]]
    transform: Callable | None
    vocabulary: AttributeVocabulary
    templates: InstructionTemplates | None
    texts: list[str]
    data_file: str | None = None
    split: str = "train"


@dataclass
class GeneralistData:
    """All sources, with the union vocabulary (each source's attributes, in source order; token names stay the
    bundles' own, so a bundle started from the generalist finds its attribute tokens under the same names)."""

    sources: list[GeneralistSource]
    extra_texts: list[str] = field(default_factory=list)
    vocabulary: AttributeVocabulary = field(init=False)
    offsets: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if not self.sources:
            raise InputError("GeneralistData: no source; name at least one bundle in 'sources'.")
        attrs, self.offsets, owner = [], {}, {}
        for s in self.sources:
            self.offsets[s.name] = len(attrs)
            for a in s.vocabulary.attributes:
                if a.name in owner:
                    raise InputError(
                        f"GeneralistData: attribute token {a.token} is in both {owner[a.name]} and {s.name}; "
                        "give the bundles different attribute modalities."
                    )
                owner[a.name] = s.name
                attrs.append(replace(a, label=None, parent=None))
        self.vocabulary = AttributeVocabulary(attrs)

    @property
    def texts(self) -> list[str]:
        """Every text of every source and of the text-only bundles (for the word-level tokenizer)."""
        return [t for s in self.sources for t in s.texts] + list(self.extra_texts)

    def counts(self) -> dict[str, int]:
        return {s.name: len(s.items) for s in self.sources}

    def dataset(self, image_size: int = 32, channels: int = 3, cache_rate: float = 1.0) -> torch.utils.data.Dataset:
        """The union training set: per source a :class:`monai.data.CacheDataset` (the deterministic loading steps
        cached: the chain is flattened, so the cache reaches into the bundle's nested ``Compose``) over
        ``source transform -> GeneralistSampled``, concatenated."""
        from monai.data import CacheDataset, Dataset

        parts = []
        for s in self.sources:
            finish = GeneralistSampled(s.name, s.vocabulary, self.offsets[s.name], image_size, channels)
            if s.transform is None:
                parts.append(Dataset(s.items, transform=finish))
            else:
                chain = Compose([s.transform, finish]).flatten()
                parts.append(CacheDataset(s.items, transform=chain, cache_rate=cache_rate, progress=False))
        return torch.utils.data.ConcatDataset(parts)

    def item_sources(self) -> list[str]:
        """The source name of every item of :meth:`dataset`, in its order."""
        return [s.name for s in self.sources for _ in s.items]

    def item_classes(self) -> list[str]:
        """The ``source/class`` group of every item of :meth:`dataset`, in its order: the class is the item's integer
        ``label`` (a classification bundle's clinical class); an item without one (a VQA-RAD question, whose label
        is a list of attributes) is in the group ``source``."""
        return [f"{s.name}/{int(d['label'])}" if _is_class(d.get("label")) else s.name
                for s in self.sources for d in s.items]

    def sampler(
        self, source_weights: Mapping[str, float] | str | None = None, seed: int = 0, class_balanced: bool = False,
    ) -> torch.utils.data.Sampler:
        """A sampler over :meth:`dataset` that gives each source a share of the draws instead of its size's share
        and, with ``class_balanced``, splits each source's share evenly over its classes
        (:func:`attok_monai.data.sampling.group_share_sampler`; ``len(dataset)`` draws per epoch, with replacement).

        Args:
            source_weights: ``{source name: positive weight}`` naming every source, or ``"equal"`` (each source
                the same share). ``None`` (the bundle's ``source_weights: null``): a source's share is its size's.
            seed: seeds the sampler's generator (reseeded each epoch by ``EpochSeedHandler``).
            class_balanced: each class of a source (its items' integer ``label``) gets the same part of the source's
                share, as the paper tunes on class-balanced data (Appendix A.2); a source without classes (VQA-RAD)
                keeps its share as one group.
        """
        from attok_monai.data.sampling import group_share_sampler, group_share_weights

        if isinstance(source_weights, str):
            if source_weights != "equal":
                raise InputError(f"compact generalist: source_weights must be 'equal' or a mapping of source name to "
                                 f"weight, got {source_weights!r}.")
            source_weights = {s.name: 1.0 for s in self.sources}
        if source_weights is None:
            source_weights = {s.name: float(len(s.items)) for s in self.sources if s.items}
        if not isinstance(class_balanced, bool):
            raise InputError(f"compact generalist: class_balanced must be true or false, got {class_balanced!r}.")
        sources, shares = self.item_sources(), dict(source_weights)
        try:
            if not class_balanced:
                return group_share_sampler(sources, shares, seed=seed)
            group_share_weights(sources, shares)  # every source named, each share positive (the message names it)
            classes = self.item_classes()
            per_source: dict[str, set[str]] = {}
            for src, group in zip(sources, classes):
                per_source.setdefault(src, set()).add(group)
            return group_share_sampler(
                classes, {g: shares[src] / len(gs) for src, gs in per_source.items() for g in gs}, seed=seed)
        except ValueError as e:
            raise InputError(f"compact generalist: source_weights: {e}") from None

    def params(self) -> dict[str, Any]:
        """Flat MLflow params: per source the number of training items, the split read and the data file."""
        out: dict[str, Any] = {"sources": ",".join(s.name for s in self.sources), "num_train": sum(self.counts().values()),
                               "num_attributes": len(self.vocabulary)}
        for s in self.sources:
            out[f"num_train_{s.name}"] = len(s.items)
            out[f"split_{s.name}"] = s.split
        return out


class GeneralistSampled(MapTransform):
    """The last step of a source's pipeline: ``image`` (C, H, W) in [0, 1] -> (``channels``, ``size``, ``size``)
    float32 (grey replicated to RGB, RGB to grey with BT.601 weights; bilinear anti-aliased resize), ``answer`` set to
    the clinical names of ``attributes`` when it is ``None`` (plain text), ``attributes`` moved by ``offset`` into
    the union vocabulary, ``kind`` (``open``/``closed``; VQA ``answer_type``) and ``source`` set; other keys dropped
    (sources differ in their extra keys, which a batch could not collate)."""

    def __init__(
        self, source: str, vocabulary: AttributeVocabulary, offset: int, size: int = 32, channels: int = 3,
    ) -> None:
        super().__init__(keys=["image"])
        if channels not in (1, 3):
            raise InputError(f"GeneralistSampled: channels must be 1 or 3, got {channels}.")
        self.source, self.vocabulary, self.offset = source, vocabulary, int(offset)
        self.size, self.channels = int(size), int(channels)

    def image(self, img: Any) -> torch.Tensor:
        x = torch.as_tensor(img).float()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x  # MetaTensor -> Tensor
        if x.ndim != 3:
            raise InputError(f"GeneralistSampled: {self.source} image has shape {tuple(x.shape)}; expected (C, H, W).")
        if x.shape[0] != self.channels:
            if x.shape[0] == 1 and self.channels == 3:
                x = x.repeat(3, 1, 1)
            elif x.shape[0] == 3 and self.channels == 1:
                x = (x * torch.tensor(_LUMA)[:, None, None]).sum(0, keepdim=True)
            else:
                raise InputError(f"GeneralistSampled: {self.source} image has {x.shape[0]} channels; expected 1 or 3.")
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp(0.0, 1.0)
        return x.contiguous()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in ("image", "question", "attributes"):
            if key not in d:
                raise InputError(f"GeneralistSampled: {self.source} sample {d.get('id', '?')} has no {key!r} field.")
        attrs = [int(a) for a in d["attributes"]]
        answer = d.get("answer")
        if answer is None:
            if not attrs:
                raise InputError(f"GeneralistSampled: {self.source} sample {d.get('id', '?')} has no answer.")
            answer = self.vocabulary.format_text_answer(attrs)
        kind = d.get("kind") or str(d.get("answer_type") or "open").strip().lower()
        out = {
            "image": self.image(d["image"]), "question": str(d["question"]), "answer": str(answer),
            "attributes": [a + self.offset for a in attrs], "kind": kind, "source": self.source,
            "id": f"{self.source}/{d.get('id', '?')}",
        }
        return {k: out[k] for k in _KEEP}


def _is_class(label: Any) -> bool:
    return isinstance(label, (int, np.integer)) and not isinstance(label, bool)


def _item_texts(items: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(d[k]) for d in items for k in ("question", "answer") if d.get(k)]


def _bundle_parser(bundle_dir: Path, overrides: Mapping[str, Any] | None, work_dir: str | os.PathLike | None):
    from attok_monai.configs import read_config

    config = bundle_dir / "configs" / "train.json"
    if not config.is_file():
        raise FileNotFoundError(f"compact generalist: source bundle {bundle_dir} has no configs/train.json.")
    parser = read_config(config)  # the bundle's %attok_monai/configs/... macros pulled in, from any working directory
    updates: dict[str, Any] = {"bundle_root": str(bundle_dir)}
    if work_dir is not None:
        updates["output_dir"] = str(work_dir)
    updates.update(overrides or {})
    for k, v in updates.items():
        parser[k] = v
    return parser


def read_bundle_texts(bundle_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The question templates, class names and keywords of a bundle whose data the generalist does not train on
    (e.g. ``pathology_crc``, whose PathMNIST file is not local): its words enter the tokenizer, no data is read."""
    parser = _bundle_parser(Path(bundle_dir), overrides, None)
    vocabulary = AttributeVocabulary.coerce(parser.get_parsed_content("vocabulary"))
    templates = parser.get_parsed_content("templates") if "templates" in parser else None
    return (templates.all_texts() if templates is not None else []) + [k for a in vocabulary for k in a.keywords]


def read_bundle_source(
    bundle_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None, work_dir: str | os.PathLike | None = None,
) -> GeneralistSource:
    """One bundle's training part, read through its ``configs/train.json``.

    Args:
        bundle_dir: the bundle folder (``bundles/fundus_dr``).
        overrides: config overrides for that bundle (e.g. ``{"data_root": ..., "limit_train": 64}``).
        work_dir: the bundle's ``output_dir`` while it is read (where a computed split or a VQA vocabulary is
            written); the generalist's run folder, never the bundle's own.

    Raises:
        FileNotFoundError: the bundle has no ``configs/train.json``.
        ValueError: the bundle would give items of a split other than ``"train"``, or has no ``train#datalist``.
    """
    bundle_dir = Path(bundle_dir)
    name = bundle_dir.name
    parser = _bundle_parser(bundle_dir, overrides, work_dir)
    config = bundle_dir / "configs" / "train.json"
    if "train_split" in parser and parser.get_parsed_content("train_split") != "train":
        raise InputError(
            f"compact generalist: source {name} has train_split {parser['train_split']!r}; the generalist reads the "
            "training part only ('train')."
        )
    if "train#datalist" not in parser:
        raise InputError(f"compact generalist: {config} has no train#datalist.")
    items = list(parser.get_parsed_content("train#datalist"))
    bad = {str(d["split"]) for d in items if d.get("split") not in (None, "", "train")}
    if bad:
        raise InputError(
            f"compact generalist: source {name} gives items of split(s) {sorted(bad)}; the generalist reads the "
            "training part only."
        )
    vocabulary = AttributeVocabulary.coerce(parser.get_parsed_content("vocabulary"))
    templates = parser.get_parsed_content("templates") if "templates" in parser else None
    transform = parser.get_parsed_content("train#preprocessing") if "train#preprocessing" in parser else None
    texts = (templates.all_texts() if templates is not None else []) + [k for a in vocabulary for k in a.keywords]
    texts += _item_texts(items)
    data_file = None
    if "data_file" in parser:
        data_file = str(parser.get_parsed_content("data_file"))
    logger.info("compact generalist: source %s: %d training items", name, len(items))
    return GeneralistSource(name, items, transform, vocabulary, templates, texts, data_file, "train")


def read_generalist_sources(
    sources: Mapping[str, Mapping[str, Any] | None], bundles_dir: str | os.PathLike,
    work_dir: str | os.PathLike | None = None, text_sources: Sequence[str] = (), leave_out: Sequence[str] = (),
) -> GeneralistData:
    """Every source: ``{bundle name: overrides}`` read from ``bundles_dir/<name>`` (see :func:`read_bundle_source`);
    each bundle's side files go to ``work_dir/<name>``. ``text_sources``: bundles whose texts only are read
    (:func:`read_bundle_texts`).

    ``leave_out``: names of ``sources`` whose images the generalist never sees: each is read like a text source
    (its templates, class names and keywords enter the tokenizer; no item is read), so a bundle fine-tuned from the
    generalist starts from a model that never trained on that bundle's own training part (a transfer start).

    Raises:
        ValueError: ``leave_out`` names a bundle that is not in ``sources``, or every source is left out.
    """
    bundles_dir = Path(bundles_dir)
    leave_out = list(leave_out or ())
    unknown = [n for n in leave_out if n not in sources]
    if unknown:
        raise InputError(f"compact generalist: leave_out_sources names {unknown}, expected names of sources "
                         f"({sorted(sources)}).")
    out = []
    for name, overrides in sources.items():
        if name in leave_out:
            continue
        wd = None if work_dir is None else Path(work_dir) / name
        out.append(read_bundle_source(bundles_dir / name, overrides, wd))
    if not out:
        raise InputError("compact generalist: leave_out_sources leaves no source to train on.")
    texts = [t for name in [*text_sources, *leave_out] for t in read_bundle_texts(bundles_dir / name)]
    for name in leave_out:
        logger.info("compact generalist: source %s left out (its texts only: no image is read)", name)
    return GeneralistData(out, texts)
