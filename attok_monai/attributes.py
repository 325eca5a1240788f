"""Attribute vocabulary: clinical concepts as special tokens ``<|modality_concept|>`` (AttTok paper, section 4.1).

The vocabulary knows no model: it maps attribute token text <-> index <-> keywords <-> dataset labels, formats
instruction-tuning answers with the attribute tokens in front of the text, and parses generated answers back.

Example::

    vocab = AttributeVocabulary.from_label_map("fundus", {0: "no diabetic retinopathy", 3: "severe npdr"})
    vocab.format_answer(1)
    # '<|attribute_begin|><|fundus_severe_npdr|><|attribute_end|> severe npdr'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attok_monai.fileio import atomic_write_text

__all__ = ["Attribute", "AttributeVocabulary", "ParsedAnswer", "ATTRIBUTE_BEGIN", "ATTRIBUTE_END", "block_answer",
           "normalize_text"]

ATTRIBUTE_BEGIN = "<|attribute_begin|>"
ATTRIBUTE_END = "<|attribute_end|>"


def block_answer(tokens: str, text: str, markers: bool = True) -> str:
    """The one layout of an answer's attribute block: ``<|attribute_begin|>tokens<|attribute_end|> text``, or
    ``tokens text`` without markers. ``tokens=""`` with markers is ``plain_markers``' empty block in front of a plain
    answer. :meth:`AttributeVocabulary.parse_answer` reads every form."""
    return (ATTRIBUTE_BEGIN + tokens + ATTRIBUTE_END if markers else tokens) + " " + text
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_TOKEN_RE = re.compile(r"<\|([a-z0-9_]+)\|>")
_RESERVED = {"attribute_begin", "attribute_end"}


def normalize_text(text: str) -> str:
    """Lower-case, replace punctuation by spaces and collapse whitespace (for keyword matching)."""
    text = _TOKEN_RE.sub(" ", text.lower())
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def _slug(text: str) -> str:
    return "_".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@dataclass(frozen=True)
class Attribute:
    """One clinical concept.

    Args:
        modality: imaging modality, lower-case ``[a-z0-9_]`` (e.g. ``"fundus"``).
        concept: concept name, lower-case ``[a-z0-9_]`` (e.g. ``"severe_npdr"``).
        keywords: clinical name first, then synonyms; the first keyword is the answer text.
        description: optional free-text description.
        parent: optional token name of a parent concept (hierarchies such as disease -> subtype).
        label: the dataset label this attribute stands for (int or str), if any.
    """

    modality: str
    concept: str
    keywords: tuple[str, ...]
    description: str | None = None
    parent: str | None = None
    label: int | str | None = None

    @property
    def name(self) -> str:
        """``modality_concept``."""
        return f"{self.modality}_{self.concept}"

    @property
    def token(self) -> str:
        """``<|modality_concept|>``."""
        return f"<|{self.name}|>"

    @property
    def keyword(self) -> str:
        """The clinical name (first keyword)."""
        return self.keywords[0]


@dataclass
class ParsedAnswer:
    """Result of :meth:`AttributeVocabulary.parse_answer`.

    ``indices``: attribute indices found between the markers (in order, no duplicates);
    ``text``: the answer text after the attribute block; ``unknown_tokens``: ``<|...|>`` names not in the vocabulary;
    ``has_block``: whether a complete ``<|attribute_begin|> ... <|attribute_end|>`` block was found.
    """

    indices: list[int] = field(default_factory=list)
    text: str = ""
    unknown_tokens: list[str] = field(default_factory=list)
    has_block: bool = False


class AttributeVocabulary:
    """An ordered set of :class:`Attribute` with token, index, keyword and label look-ups.

    Args:
        attributes: the attributes, in index order. Must be non-empty; token names must be lower-case
            ``[a-z0-9_]`` and unique; keywords must be non-empty; labels (where given) unique.

    Raises:
        ValueError: naming the offending attribute and what was expected.
    """

    begin_token = ATTRIBUTE_BEGIN
    end_token = ATTRIBUTE_END

    def __init__(self, attributes: Sequence[Attribute]) -> None:
        attributes = list(attributes)
        if not attributes:
            raise ValueError("AttributeVocabulary: the vocabulary is empty; give at least one attribute.")
        self._by_name: dict[str, int] = {}
        self._by_label: dict[str, int] = {}
        for i, a in enumerate(attributes):
            for part, value in (("modality", a.modality), ("concept", a.concept)):
                if not isinstance(value, str) or not _NAME_RE.match(value):
                    raise ValueError(
                        f"AttributeVocabulary: attribute {i} has {part} {value!r}; expected lower-case letters, "
                        "digits and '_' only ([a-z0-9_]+)."
                    )
            if a.name in _RESERVED:
                raise ValueError(f"AttributeVocabulary: attribute {i} token {a.token} is reserved for the markers.")
            if a.name in self._by_name:
                raise ValueError(
                    f"AttributeVocabulary: duplicate token {a.token} (attributes {self._by_name[a.name]} and {i})."
                )
            if not a.keywords or not all(isinstance(k, str) and k.strip() for k in a.keywords):
                raise ValueError(f"AttributeVocabulary: attribute {a.token} needs at least one non-empty keyword.")
            self._by_name[a.name] = i
            if a.label is not None:
                key = str(a.label)
                if key in self._by_label:
                    raise ValueError(f"AttributeVocabulary: label {a.label!r} is mapped twice ({a.token}).")
                self._by_label[key] = i
        for a in attributes:
            if a.parent is not None and a.parent not in self._by_name:
                raise ValueError(f"AttributeVocabulary: {a.token} names parent {a.parent!r}, not in the vocabulary.")
        self.attributes: tuple[Attribute, ...] = tuple(attributes)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_label_map(
        cls, modality: str, label_map: Mapping[Any, str | Sequence[str] | Mapping[str, Any]]
    ) -> AttributeVocabulary:
        """Build from ``{label: clinical name}``, ``{label: [name, synonym, ...]}`` or
        ``{label: {"concept": ..., "keywords": [...], "description": ..., "parent": ...}}``.

        The concept defaults to the slug of the clinical name. Attributes are ordered by the map's order.
        """
        attributes = []
        for label, spec in label_map.items():
            if isinstance(spec, str):
                spec = {"keywords": [spec]}
            elif not isinstance(spec, Mapping):
                spec = {"keywords": list(spec)}
            keywords = spec.get("keywords") or ([spec["keyword"]] if "keyword" in spec else [])
            if isinstance(keywords, str):
                keywords = [keywords]
            if not keywords:
                raise ValueError(f"AttributeVocabulary.from_label_map: label {label!r} has no keywords.")
            concept = spec.get("concept") or _slug(keywords[0])
            attributes.append(
                Attribute(
                    modality=spec.get("modality", modality),
                    concept=concept,
                    keywords=tuple(keywords),
                    description=spec.get("description"),
                    parent=spec.get("parent"),
                    label=spec.get("label", label),
                )
            )
        return cls(attributes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeVocabulary:
        """Inverse of :meth:`to_dict`: ``{"attributes": [{"modality", "concept", "keywords", ...}, ...]}``."""
        if "attributes" not in data or not isinstance(data["attributes"], list):
            raise ValueError("AttributeVocabulary.from_dict: expected a mapping with an 'attributes' list.")
        attributes = []
        for i, item in enumerate(data["attributes"]):
            missing = [k for k in ("modality", "concept", "keywords") if k not in item]
            if missing:
                raise ValueError(f"AttributeVocabulary.from_dict: attribute {i} lacks field(s) {missing}.")
            kw = item["keywords"]
            attributes.append(
                Attribute(
                    modality=item["modality"],
                    concept=item["concept"],
                    keywords=(kw,) if isinstance(kw, str) else tuple(kw),
                    description=item.get("description"),
                    parent=item.get("parent"),
                    label=item.get("label"),
                )
            )
        return cls(attributes)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> AttributeVocabulary:
        """Load from a JSON file written by :meth:`to_json`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"AttributeVocabulary.from_json: cannot read {path}: {e}") from e
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, value: AttributeVocabulary | Mapping[str, Any] | str | os.PathLike) -> AttributeVocabulary:
        """Accept a vocabulary, a ``to_dict`` mapping, a ``{"modality", "labels"}`` mapping or a JSON path."""
        if isinstance(value, AttributeVocabulary):
            return value
        if isinstance(value, Mapping):
            if "attributes" in value:
                return cls.from_dict(value)
            if "modality" in value and "labels" in value:
                return cls.from_label_map(value["modality"], value["labels"])
            raise ValueError("AttributeVocabulary.coerce: expected 'attributes' or 'modality'+'labels' keys.")
        return cls.from_json(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "begin_token": ATTRIBUTE_BEGIN,
            "end_token": ATTRIBUTE_END,
            "attributes": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(a).items() if v is not None}
                | {"token": a.token}
                for a in self.attributes
            ],
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file in the same folder, then rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    # ------------------------------------------------------------------ look-ups
    def __len__(self) -> int:
        return len(self.attributes)

    def __iter__(self):
        return iter(self.attributes)

    def __getitem__(self, index: int) -> Attribute:
        return self.attributes[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AttributeVocabulary) and self.attributes == other.attributes

    def __repr__(self) -> str:
        return f"AttributeVocabulary({[a.token for a in self.attributes]})"

    @property
    def tokens(self) -> list[str]:
        """Attribute token texts in index order."""
        return [a.token for a in self.attributes]

    @property
    def special_tokens(self) -> list[str]:
        """Marker tokens then attribute tokens: what a tokenizer must add."""
        return [ATTRIBUTE_BEGIN, ATTRIBUTE_END, *self.tokens]

    @property
    def names(self) -> list[str]:
        """Clinical names (first keyword) in index order."""
        return [a.keyword for a in self.attributes]

    def index(self, token: str) -> int:
        """Index of ``<|modality_concept|>`` (or of the bare ``modality_concept``)."""
        m = _TOKEN_RE.fullmatch(token)
        name = m.group(1) if m else token
        if name not in self._by_name:
            raise ValueError(f"AttributeVocabulary: unknown attribute token {token!r}.")
        return self._by_name[name]

    def token(self, index: int) -> str:
        self._check_index(index)
        return self.attributes[index].token

    def keywords(self, index: int) -> tuple[str, ...]:
        self._check_index(index)
        return self.attributes[index].keywords

    def index_of_label(self, label: Any) -> int:
        """Index of the attribute for a dataset label (int/str; numpy scalars accepted)."""
        key = str(label.item() if hasattr(label, "item") else label)
        if key not in self._by_label:
            known = sorted(self._by_label)
            raise ValueError(f"AttributeVocabulary: unknown label {label!r}; expected one of {known}.")
        return self._by_label[key]

    def _check_index(self, index: int) -> None:
        if not 0 <= int(index) < len(self):
            raise ValueError(f"AttributeVocabulary: index {index} out of range [0, {len(self)}).")

    # ------------------------------------------------------------------ answers
    def format_answer(self, indices: int | Iterable[int], text: str | None = None, markers: bool = True) -> str:
        """``<|attribute_begin|><|a|>[<|b|>...]<|attribute_end|> text``; text defaults to the clinical names
        joined by ``", "``. ``markers=False``: ``<|a|>[<|b|>...] text``, the attribute tokens alone in front of the
        text (the paper's wording, section 5.1; :meth:`parse_answer` reads both)."""
        idx = [int(indices)] if isinstance(indices, int) or hasattr(indices, "__index__") else [int(i) for i in indices]
        if not idx:
            raise ValueError("AttributeVocabulary.format_answer: no attribute index given.")
        for i in idx:
            self._check_index(i)
        if text is None:
            text = ", ".join(self.attributes[i].keyword for i in idx)
        tokens = "".join(self.attributes[i].token for i in idx)
        return block_answer(tokens, text, markers)

    def format_text_answer(self, indices: int | Iterable[int]) -> str:
        """The plain-text answer of the baseline (no attribute tokens)."""
        idx = [int(indices)] if isinstance(indices, int) or hasattr(indices, "__index__") else [int(i) for i in indices]
        return ", ".join(self.attributes[i].keyword for i in idx)

    def parse_answer(self, answer: str) -> ParsedAnswer:
        """Parse ``<|attribute_begin|> tokens <|attribute_end|> text``.

        Without markers, bare attribute tokens anywhere in the answer are still collected (``has_block`` False).
        """
        out = ParsedAnswer()
        begin = answer.find(ATTRIBUTE_BEGIN)
        end = answer.find(ATTRIBUTE_END, begin + 1) if begin >= 0 else -1
        if begin >= 0 and end >= 0:
            out.has_block = True
            inner = answer[begin + len(ATTRIBUTE_BEGIN) : end]
            out.text = answer[end + len(ATTRIBUTE_END) :].strip()
        else:
            inner = answer
            out.text = _TOKEN_RE.sub(" ", answer).strip()
            out.text = " ".join(out.text.split())
        for name in _TOKEN_RE.findall(inner):
            if name in _RESERVED:
                continue
            if name in self._by_name:
                i = self._by_name[name]
                if i not in out.indices:
                    out.indices.append(i)
            else:
                out.unknown_tokens.append(name)
        return out

    def match_text(self, text: str) -> list[int]:
        """Indices whose keyword (any synonym) equals the normalised text; else those whose keyword occurs in it as a
        whole phrase, where a match inside a longer match is dropped (``"severe npdr"`` hides ``"npdr"``). Several
        indices mean the text is ambiguous."""
        norm = normalize_text(text)
        if not norm:
            return []
        exact = [i for i, a in enumerate(self.attributes) if any(normalize_text(k) == norm for k in a.keywords)]
        if exact:
            return exact
        padded = f" {norm} "
        spans: list[tuple[int, int, int]] = []
        for i, a in enumerate(self.attributes):
            for k in a.keywords:
                nk = normalize_text(k)
                if not nk:
                    continue
                start = padded.find(f" {nk} ")
                while start >= 0:
                    spans.append((start, start + len(nk) + 1, i))
                    start = padded.find(f" {nk} ", start + 1)
        kept = [
            (s0, e0, i) for s0, e0, i in spans
            if not any(s1 <= s0 and e0 <= e1 and (e1 - s1) > (e0 - s0) for s1, e1, _ in spans)
        ]
        return sorted({i for _, _, i in kept})
