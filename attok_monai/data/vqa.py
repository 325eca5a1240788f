"""Readers for the three medical VQA benchmarks of the AttTok paper (section 5.1): VQA-RAD, SLAKE and PathVQA.

Each reader parses the benchmark's own release format into :class:`VQARecord` objects (one question-answer pair
each) and returns them as a :class:`VQARecordList` (a plain ``list`` with a :class:`ReadReport` attached), so a
caller always sees how many records were read, kept and skipped, and why. Nothing is dropped silently: a bad record
(missing image file, empty question, unknown answer type, missing field) raises :class:`VQARecordError` naming the
record, or with ``on_error="skip"`` is skipped and counted in ``records.report``.

:func:`vqa_datalist` turns records into the project's MONAI-style data list (``list[dict]``), and
:func:`split_by_image` holds out a validation part by image. This module knows no model.

Example::

    records = read_vqa_rad("/data/vqa_rad")            # VQA_RAD_train.json or "VQA_RAD Dataset Public.json"
    train, val = split_by_image(records, val_fraction=0.1, seed=0)
    items = vqa_datalist(train)                        # [{"image": ".../synpic54610.jpg", "question": ..., ...}]
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "VQARecord",
    "VQARecordError",
    "VQARecordList",
    "ReadReport",
    "read_vqa_rad",
    "read_slake",
    "read_pathvqa",
    "read_vqa",
    "vqa_datalist",
    "split_by_image",
    "VQA_RAD_QUESTION_TYPE_ALIASES",
]

OnError = Literal["raise", "skip"]

#: spelling variants of VQA-RAD question types found in the release (``ATRIB``, ``PRSE``, ``Other``)
VQA_RAD_QUESTION_TYPE_ALIASES: dict[str, str] = {"ATRIB": "ATTRIB", "PRSE": "PRES", "OTHERS": "OTHER"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_YES_NO = {"yes", "no"}


class VQARecordError(ValueError):
    """A VQA record that cannot be used; the message names the dataset, the file, the record and the field."""


@dataclass
class VQARecord:
    """One question-answer pair.

    Attributes:
        id: unique id, ``"<dataset>_<qid>"`` (never a patient id).
        image: path of the image file (str).
        question: question text, whitespace-stripped.
        answer: answer text as released, whitespace-stripped (ints become str); scoring normalises further.
        answer_type: ``"closed"`` or ``"open"``.
        question_type: list of question types (VQA-RAD ``"POS, PRES"`` -> ``["POS", "PRES"]``; SLAKE
            ``content_type``; PathVQA ``["yes/no"]`` or ``["other"]``).
        organ: organ / body region where the format has one (VQA-RAD ``image_organ``, SLAKE ``location``).
        modality: imaging modality where the format has one (SLAKE ``modality``).
        location: SLAKE ``location`` (None elsewhere).
        dataset: ``"vqa_rad"``, ``"slake"`` or ``"pathvqa"``.
        split: ``"train"``, ``"val"``/``"validate"``, ``"test"`` where known.
        extra: other format-specific fields (``phrase_type``, ``q_lang``, ``qid`` ...), no URLs.
    """

    id: str
    image: str
    question: str
    answer: str
    answer_type: str
    question_type: list[str] = field(default_factory=list)
    organ: str | None = None
    modality: str | None = None
    location: str | None = None
    dataset: str = ""
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReadReport:
    """What a reader did: ``n_read`` raw records, ``n_kept``, and skipped records by reason (``skipped``) with
    their ids/positions (``skipped_records``, ``(record name, reason)`` pairs)."""

    dataset: str
    source: str
    n_read: int = 0
    n_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_records: list[tuple[str, str]] = field(default_factory=list)
    filtered: Counter = field(default_factory=Counter)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        s = f"{self.dataset} ({self.source}): read {self.n_read}, kept {self.n_kept}, skipped {self.n_skipped}"
        if self.skipped:
            s += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) + ")"
        if self.filtered:
            s += "; filtered out by option: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.filtered.items()))
        return s


class VQARecordList(list):
    """A ``list[VQARecord]`` with the reader's :class:`ReadReport` as ``.report``."""

    def __init__(self, records: Iterable[VQARecord] = (), report: ReadReport | None = None) -> None:
        super().__init__(records)
        self.report = report


# ---------------------------------------------------------------------------------------------------- helpers
class _Collector:
    """Applies the ``on_error`` policy and fills the report."""

    def __init__(self, dataset: str, source: Path, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        self.on_error = on_error
        self.report = ReadReport(dataset=dataset, source=str(source))
        self.records: list[VQARecord] = []

    def fail(self, name: str, reason: str, message: str) -> None:
        if self.on_error == "raise":
            raise VQARecordError(f"{self.report.dataset} {self.report.source}: {name}: {message}")
        self.report.skipped[reason] += 1
        self.report.skipped_records.append((name, reason))

    def core_fields(
        self, r: Mapping, name: str, required: Sequence[str], image_key: str, img_root: Path, check_images: bool
    ) -> tuple[str, str, str, Path] | None:
        """``(question, answer, answer type, image path)`` of a record with ``question``, ``answer``,
        ``answer_type`` and ``image_key`` fields, or None after :meth:`fail` with what is wrong."""
        missing = [k for k in required if k not in r]
        if missing:
            self.fail(name, "missing_field", f"missing field(s) {missing}")
            return None
        question, answer = _text(r["question"]), _text(r["answer"])
        if not question:
            self.fail(name, "empty_question", "field 'question' is empty")
            return None
        if not answer:
            self.fail(name, "empty_answer", "field 'answer' is empty")
            return None
        atype = _answer_type(r["answer_type"])
        if atype is None:
            self.fail(name, "unknown_answer_type", f"answer_type {r['answer_type']!r}; expected CLOSED or OPEN")
            return None
        image_name = _text(r[image_key])
        img = _resolve_image(img_root, image_name) if check_images else img_root / image_name
        if img is None or not image_name:
            self.fail(name, "missing_image", f"image file {img_root / image_name} not found")
            return None
        return question, answer, atype, img

    def finish(self) -> VQARecordList:
        ids = Counter(r.id for r in self.records)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise VQARecordError(f"{self.report.dataset} {self.report.source}: duplicate record ids {dup[:5]}.")
        self.report.n_kept = len(self.records)
        return VQARecordList(self.records, self.report)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


def _answer_type(value: Any) -> str | None:
    t = _text(value).lower()
    return t if t in ("closed", "open") else None


def _resolve_image(image_dir: Path, name: str) -> Path | None:
    p = image_dir / name
    if p.is_file():
        return p
    if not Path(name).suffix:
        for suf in _IMAGE_SUFFIXES:
            q = image_dir / f"{name}{suf}"
            if q.is_file():
                return q
    return None


def _first_existing(root: Path, names: Sequence[str], what: str) -> Path:
    for n in names:
        if (root / n).exists():
            return root / n
    raise FileNotFoundError(f"{what}: none of {list(names)} found under {root}.")


def _load_json_list(path: Path, dataset: str) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise VQARecordError(f"{dataset}: cannot read {path} as JSON: {e}") from e
    if isinstance(data, Mapping):
        data = _dict_of_lists_to_rows(data, path, dataset)
    if not isinstance(data, list):
        raise VQARecordError(f"{dataset}: {path} must hold a list of records, got {type(data).__name__}.")
    return data


def _dict_of_lists_to_rows(data: Mapping[str, Any], path: Path, dataset: str) -> list[dict[str, Any]]:
    lists = {k: v for k, v in data.items() if isinstance(v, (list, tuple))}
    if not lists:
        raise VQARecordError(f"{dataset}: {path} is a mapping without list values; expected a list of records.")
    lengths = {len(v) for v in lists.values()}
    if len(lengths) != 1:
        raise VQARecordError(
            f"{dataset}: {path}: columns have different lengths { {k: len(v) for k, v in lists.items()} }."
        )
    n = lengths.pop()
    return [{k: v[i] for k, v in lists.items()} for i in range(n)]


def _vqa_rad_question_types(value: Any) -> list[str]:
    out: list[str] = []
    for part in re.split(r"[,/;]", _text(value)):
        t = part.strip().upper()
        if not t:
            continue
        t = VQA_RAD_QUESTION_TYPE_ALIASES.get(t, t)
        if t not in out:
            out.append(t)
    return out


# ---------------------------------------------------------------------------------------------------- VQA-RAD
def read_vqa_rad(
    root: str | os.PathLike,
    json_file: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    split: Literal["train", "test"] | None = None,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> VQARecordList:
    """Read VQA-RAD (Lau et al. 2018) in its release format.

    Args:
        root: dataset folder.
        json_file: the question file; default ``VQA_RAD_train.json`` (``VQA_RAD_test.json`` for ``split="test"``)
            or else ``VQA_RAD Dataset Public.json`` in ``root``.
            Records have ``qid, image_name, image_organ, question, answer, answer_type, question_type, phrase_type``.
        image_dir: image folder; default ``images/`` or ``VQA_RAD Image Folder/`` in ``root``.
        split: keep only ``"train"`` (``phrase_type`` freeform/para) or ``"test"`` (``test_freeform``/``test_para``)
            pairs; None keeps all. Records left out here are counted in ``report.filtered``.
        on_error: ``"raise"`` (default) or ``"skip"`` bad records (counted in ``report.skipped``).
        check_images: check that every image file exists.

    Returns:
        :class:`VQARecordList`. Messy values are cleaned: ``"CLOSED "`` -> ``"closed"``; ``"POS, PRES"`` ->
        ``["POS", "PRES"]`` (``ATRIB``/``PRSE``/``Other`` spellings mapped to ``ATTRIB``/``PRES``/``OTHER``);
        int answers -> str; ``organ`` is ``image_organ`` (HEAD/CHEST/ABD).
    """
    root = Path(root)
    path = Path(json_file) if json_file is not None else None
    if path is not None and not path.is_absolute() and not path.exists():
        path = root / path
    if path is None:
        own = "VQA_RAD_test.json" if split == "test" else "VQA_RAD_train.json"
        path = _first_existing(root, [own, "VQA_RAD Dataset Public.json"], "read_vqa_rad")
    img_root = (
        Path(image_dir)
        if image_dir is not None
        else _first_existing(root, ["images", "VQA_RAD Image Folder"], "read_vqa_rad image folder")
    )
    rows = _load_json_list(path, "vqa_rad")
    col = _Collector("vqa_rad", path, on_error)
    for i, r in enumerate(rows):
        col.report.n_read += 1
        if not isinstance(r, Mapping):
            col.fail(f"item {i}", "not_a_record", f"expected an object, got {type(r).__name__}")
            continue
        qid = _text(r.get("qid"))
        name = f"record qid={qid or '?'} (item {i})"
        phrase = _text(r.get("phrase_type")).lower()
        rec_split = "test" if phrase.startswith("test") else "train"
        if split is not None and rec_split != split:
            col.report.filtered[f"split!={split}"] += 1
            continue
        fields = col.core_fields(
            r, name, ("qid", "image_name", "question", "answer", "answer_type"), "image_name", img_root, check_images
        )
        if fields is None:
            continue
        question, answer, atype, img = fields
        organ = _text(r.get("image_organ")).upper() or None
        col.records.append(
            VQARecord(
                id=f"vqa_rad_{qid}",
                image=str(img),
                question=question,
                answer=answer,
                answer_type=atype,
                question_type=_vqa_rad_question_types(r.get("question_type")),
                organ=organ,
                dataset="vqa_rad",
                split=rec_split,
                extra={"qid": qid, "phrase_type": phrase or None, "image_name": _text(r["image_name"])},
            )
        )
    return col.finish()


# ---------------------------------------------------------------------------------------------------- SLAKE
_SLAKE_FILES = {"train": "train.json", "val": "validate.json", "validate": "validate.json", "test": "test.json"}


def read_slake(
    root: str | os.PathLike,
    split: str = "train",
    q_lang: str | None = "en",
    json_file: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> VQARecordList:
    """Read SLAKE (Liu et al. 2021): ``train.json`` / ``validate.json`` / ``test.json`` with records
    ``img_name, question, answer, answer_type, q_lang, modality, location, content_type, qid``; images under
    ``imgs/`` (``img_name`` like ``xmlab102/source.jpg``).

    Args:
        split: ``"train"``, ``"val"``/``"validate"`` or ``"test"`` (picks the file unless ``json_file`` is given).
        q_lang: keep only this question language (``"en"`` default; ``"zh"``; None keeps all). Others are counted in
            ``report.filtered``.
        on_error, check_images: as in :func:`read_vqa_rad`.

    ``organ`` and ``location`` are SLAKE's ``location`` (e.g. ``Lung``, ``Chest_heart``), ``modality`` is SLAKE's
    ``modality`` (CT/MRI/X-Ray), ``question_type`` is ``[content_type]``.
    """
    root = Path(root)
    if json_file is not None:
        path = Path(json_file)
        if not path.is_absolute() and not path.exists():
            path = root / path
    else:
        if split not in _SLAKE_FILES:
            raise ValueError(f"read_slake: split {split!r}; expected one of {sorted(_SLAKE_FILES)}.")
        path = root / _SLAKE_FILES[split]
        if not path.exists():
            raise FileNotFoundError(f"read_slake: {path} not found.")
    img_root = Path(image_dir) if image_dir is not None else root / "imgs"
    rows = _load_json_list(path, "slake")
    col = _Collector("slake", path, on_error)
    for i, r in enumerate(rows):
        col.report.n_read += 1
        if not isinstance(r, Mapping):
            col.fail(f"item {i}", "not_a_record", f"expected an object, got {type(r).__name__}")
            continue
        qid = _text(r.get("qid")) or str(i)
        name = f"record qid={qid} (item {i})"
        lang = _text(r.get("q_lang")).lower() or None
        if q_lang is not None and lang != q_lang:
            col.report.filtered[f"q_lang!={q_lang}"] += 1
            continue
        fields = col.core_fields(
            r, name, ("img_name", "question", "answer", "answer_type"), "img_name", img_root, check_images
        )
        if fields is None:
            continue
        question, answer, atype, img = fields
        location = _text(r.get("location")) or None
        content = _text(r.get("content_type"))
        col.records.append(
            VQARecord(
                id=f"slake_{qid}",
                image=str(img),
                question=question,
                answer=answer,
                answer_type=atype,
                question_type=[content] if content else [],
                organ=location,
                modality=_text(r.get("modality")) or None,
                location=location,
                dataset="slake",
                split="val" if split == "validate" else split,
                extra={"qid": qid, "q_lang": lang, "img_name": _text(r["img_name"]), "base_type": r.get("base_type")},
            )
        )
    return col.finish()


# ---------------------------------------------------------------------------------------------------- PathVQA
class _SafeUnpickler(pickle.Unpickler):
    """Only plain containers and strings/numbers: a question file is data, never code."""

    _ALLOWED = {("builtins", n) for n in ("dict", "list", "tuple", "set", "str", "int", "float", "bool", "bytes")}
    _ALLOWED |= {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only lists/dicts of plain values are read from a question file "
            "(convert it to JSON if it holds other objects)."
        )


def _load_pathvqa_rows(path: Path) -> list[Any]:
    if path.suffix.lower() == ".json":
        return _load_json_list(path, "pathvqa")
    try:
        data = _SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise VQARecordError(f"pathvqa: cannot read {path}: {e}") from e
    if isinstance(data, Mapping):
        data = _dict_of_lists_to_rows(data, path, "pathvqa")
    if not isinstance(data, list):
        raise VQARecordError(f"pathvqa: {path} must hold a list of records or a dict of lists.")
    return data


def read_pathvqa(
    root: str | os.PathLike,
    split: str = "train",
    qa_file: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> VQARecordList:
    """Read PathVQA (He et al. 2020) question files: ``qas/<split>/<split>_qa.pkl`` (a list of dicts, or a dict of
    lists, with keys ``image, question, answer``; ``.json`` with the same content also accepted) over
    ``images/<split>/`` (``image`` is the file stem, e.g. ``train_0422`` -> ``train_0422.jpg``).

    Closed = the answer is yes/no (the release has no answer type); ``question_type`` is ``["yes/no"]`` or
    ``["other"]``. The reader refuses pickles holding anything but plain containers. ``id`` is
    ``pathvqa_<split>_<position>``. No organ/modality fields (the paper omits the modality attribute for PathVQA).
    """
    root = Path(root)
    if qa_file is not None:
        path = Path(qa_file)
        if not path.is_absolute() and not path.exists():
            path = root / path
    else:
        cands = [
            f"qas/{split}/{split}_qa.pkl",
            f"qas/{split}_qa.pkl",
            f"{split}_qa.pkl",
            f"{split}.pkl",
            f"qas/{split}/{split}_qa.json",
            f"{split}.json",
        ]
        path = _first_existing(root, cands, "read_pathvqa")
    img_root = (
        Path(image_dir)
        if image_dir is not None
        else (root / "images" / split if (root / "images" / split).is_dir() else root / "images")
    )
    rows = _load_pathvqa_rows(path)
    col = _Collector("pathvqa", path, on_error)
    for i, r in enumerate(rows):
        col.report.n_read += 1
        name = f"item {i}"
        if not isinstance(r, Mapping):
            col.fail(name, "not_a_record", f"expected a dict, got {type(r).__name__}")
            continue
        missing = [k for k in ("image", "question", "answer") if k not in r]
        if missing:
            col.fail(name, "missing_field", f"missing field(s) {missing}")
            continue
        question, answer = _text(r["question"]), _text(r["answer"])
        if not question:
            col.fail(name, "empty_question", "field 'question' is empty")
            continue
        if not answer:
            col.fail(name, "empty_answer", "field 'answer' is empty")
            continue
        closed = answer.lower().strip(" .!") in _YES_NO
        if "answer_type" in r:
            atype = _answer_type(r["answer_type"])
            if atype is None:
                col.fail(name, "unknown_answer_type", f"answer_type {r['answer_type']!r}; expected CLOSED or OPEN")
                continue
        else:
            atype = "closed" if closed else "open"
        image_name = _text(r["image"])
        img = _resolve_image(img_root, image_name) if check_images else img_root / image_name
        if img is None or not image_name:
            col.fail(name, "missing_image", f"image file {img_root / image_name}[.jpg|.png] not found")
            continue
        col.records.append(
            VQARecord(
                id=f"pathvqa_{split}_{i}",
                image=str(img),
                question=question,
                answer=answer,
                answer_type=atype,
                question_type=["yes/no" if closed else "other"],
                dataset="pathvqa",
                split=split,
                extra={"image_name": image_name},
            )
        )
    return col.finish()


_READERS = {"vqa_rad": read_vqa_rad, "slake": read_slake, "pathvqa": read_pathvqa}


def read_vqa(dataset: str, root: str | os.PathLike, **kwargs: Any) -> VQARecordList:
    """Dispatch to :func:`read_vqa_rad`, :func:`read_slake` or :func:`read_pathvqa` by name."""
    key = dataset.lower().replace("-", "_")
    if key not in _READERS:
        raise ValueError(f"read_vqa: unknown dataset {dataset!r}; expected one of {sorted(_READERS)}.")
    return _READERS[key](root, **kwargs)


# ---------------------------------------------------------------------------------------------------- data list
def _get(record: VQARecord | Mapping[str, Any], key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def vqa_datalist(
    records: Iterable[VQARecord | Mapping[str, Any]],
    assignment: Mapping[str, Sequence[str | int]] | None = None,
    vocab: Any = None,
    split: str | None = None,
) -> list[dict[str, Any]]:
    """Data-contract items for the trainer.

    Args:
        records: :class:`VQARecord` objects (or dicts with the same keys).
        assignment: optional ``{id: [attribute token or concept name or index, ...]}`` from a keyword extractor
            (e.g. the ``assignments.json`` of ``attok_monai.vqa.build_vocabulary``). Every record id must be in it
            (an empty list is fine).
        vocab: the :class:`~attok_monai.attributes.AttributeVocabulary` to turn tokens into indices (needed when the
            assignment holds tokens/names).
        split: optional value for each item's ``"split"`` field.

    Returns:
        ``[{"image": str path, "question", "answer", "answer_type": "closed"|"open", "question_type": list[str],
        "organ", "modality", "id", "attributes": list[int], "label": list[int] (same as attributes, multi-label),
        "dataset"[, "split"]}, ...]``.

    Raises:
        VQARecordError: a record id missing from ``assignment``, or a token not in ``vocab``.
    """
    items = []
    for r in records:
        rid = str(_get(r, "id"))
        attrs: list[int] = []
        if assignment is not None:
            if rid not in assignment:
                raise VQARecordError(f"vqa_datalist: record {rid} has no entry in the attribute assignment.")
            for t in assignment[rid]:
                if isinstance(t, int):
                    attrs.append(int(t))
                    continue
                if vocab is None:
                    raise VQARecordError(f"vqa_datalist: record {rid}: token {t!r} needs a vocabulary to index it.")
                try:
                    idx = vocab.index(t)
                except ValueError:
                    hits = [i for i, a in enumerate(vocab.attributes) if a.concept == t]
                    if not hits:
                        raise VQARecordError(f"vqa_datalist: record {rid}: {t!r} is not in the vocabulary.") from None
                    idx = hits[0]
                if idx not in attrs:
                    attrs.append(idx)
        item = {
            "image": str(_get(r, "image")),
            "question": _get(r, "question"),
            "answer": _get(r, "answer"),
            "answer_type": _get(r, "answer_type"),
            "question_type": list(_get(r, "question_type") or []),
            "organ": _get(r, "organ"),
            "modality": _get(r, "modality"),
            "id": rid,
            "attributes": attrs,
            "label": list(attrs),
            "dataset": _get(r, "dataset"),
        }
        if split is not None:
            item["split"] = split
        items.append(item)
    return items


def split_by_image(
    records: Sequence[VQARecord | Mapping[str, Any]], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """Hold out ``val_fraction`` of the images (with all their question-answer pairs) as validation.

    Deterministic for a given ``seed`` and set of images (images are sorted before shuffling); no image is in both
    parts; at least one image goes to each part when there are two or more images and ``0 < val_fraction < 1``.

    Returns:
        ``(train_records, val_records)``, each in the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split_by_image: val_fraction {val_fraction} must be in [0, 1).")
    images = sorted({str(_get(r, "image")) for r in records})
    rng = random.Random(seed)
    rng.shuffle(images)
    n_val = int(round(len(images) * val_fraction))
    if val_fraction > 0 and len(images) >= 2:
        n_val = min(max(n_val, 1), len(images) - 1)
    val_images = set(images[:n_val])
    train = [r for r in records if str(_get(r, "image")) not in val_images]
    val = [r for r in records if str(_get(r, "image")) in val_images]
    return train, val
