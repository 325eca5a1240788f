"""Instruction samples from class labels: open- and close-ended questions, answers with attribute tokens.

Data knows no model: a sample gets ``question``, ``answer`` (text; ``None`` = the attribute's clinical name),
``attributes`` (list of attribute indices) and ``kind`` (``"open"``/``"closed"``). The model decides whether the
answer carries attribute tokens (AttTok) or is plain text (baseline).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

__all__ = ["InstructionTemplates", "RandInstructiond", "attok_collate", "DEFAULT_OPEN", "DEFAULT_CLOSED"]

DEFAULT_OPEN = (
    "what is the diagnosis of this {modality} image?",
    "which condition does this {modality} image show?",
    "describe the main finding in this {modality} image.",
    "what abnormality, if any, is visible in this {modality} image?",
)
DEFAULT_CLOSED = (
    "which of the following does this {modality} image show? options: {options}.",
    "choose the diagnosis of this {modality} image from: {options}.",
    "is this {modality} image {options}? answer with one option.",
)


class InstructionTemplates:
    """Question templates of one modality.

    Args:
        modality: how the image is named in questions (``"fundus"``, ``"chest x-ray"``).
        open: open-ended templates (no candidates); may use ``{modality}``.
        closed: close-ended templates; must use ``{options}`` (the candidates, joined by ``", "``).
        class_names: candidate names in attribute-index order (clinical names).
    """

    def __init__(
        self, modality: str, class_names: Sequence[str], open: Sequence[str] = DEFAULT_OPEN,
        closed: Sequence[str] = DEFAULT_CLOSED,
    ) -> None:
        if not open or not closed:
            raise ValueError("InstructionTemplates: give at least one open and one closed template.")
        bad = [t for t in closed if "{options}" not in t]
        if bad:
            raise ValueError(f"InstructionTemplates: closed template {bad[0]!r} lacks '{{options}}'.")
        self.modality = modality
        self.open = list(open)
        self.closed = list(closed)
        self.class_names = list(class_names)

    def question(self, kind: str, index: int = 0, order: Sequence[int] | None = None) -> str:
        """The ``index``-th template of ``kind``; close-ended options in ``order`` (default: index order)."""
        if kind == "open":
            return self.open[index % len(self.open)].format(modality=self.modality)
        if kind == "closed":
            order = range(len(self.class_names)) if order is None else order
            options = ", ".join(self.class_names[i] for i in order)
            return self.closed[index % len(self.closed)].format(modality=self.modality, options=options)
        raise ValueError(f"InstructionTemplates: kind must be 'open' or 'closed', got {kind!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "class_names": self.class_names, "open": self.open, "closed": self.closed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstructionTemplates:
        missing = [k for k in ("modality", "class_names", "open", "closed") if k not in data]
        if missing:
            raise ValueError(f"InstructionTemplates.from_dict: missing field(s) {missing}.")
        return cls(data["modality"], data["class_names"], data["open"], data["closed"])

    @classmethod
    def from_json(cls, path: str) -> InstructionTemplates:
        import json
        from pathlib import Path

        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"InstructionTemplates.from_json: cannot read {path}: {e}") from e

    def all_texts(self) -> list[str]:
        """Every question text the templates can produce (for building a tokenizer)."""
        texts = [self.question("open", i) for i in range(len(self.open))]
        texts += [self.question("closed", i) for i in range(len(self.closed))]
        return texts + self.class_names


class RandInstructiond(Randomizable, MapTransform):
    """Turn ``{"label": int | list[int]}`` into an instruction sample.

    Args:
        templates: the :class:`InstructionTemplates`.
        label_key: key of the attribute index (or list of indices).
        closed_prob: probability of a close-ended question (options shuffled); otherwise open-ended.
        deterministic_kind: ``"open"``/``"closed"`` to always use that kind with template 0 (evaluation).
    """

    def __init__(
        self, templates: InstructionTemplates, label_key: str = "label", closed_prob: float = 0.5,
        deterministic_kind: str | None = None,
    ) -> None:
        MapTransform.__init__(self, keys=[label_key])
        self.templates = templates
        self.label_key = label_key
        self.closed_prob = closed_prob
        self.deterministic_kind = deterministic_kind

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.label_key not in d:
            raise ValueError(f"RandInstructiond: sample {d.get('id', '?')} has no {self.label_key!r} field.")
        label = d[self.label_key]
        attrs = [int(x) for x in np.atleast_1d(np.asarray(label)).ravel()]
        n = len(self.templates.class_names)
        if any(a < 0 or a >= n for a in attrs):
            raise ValueError(f"RandInstructiond: sample {d.get('id', '?')} label {attrs} outside [0, {n}).")
        if self.deterministic_kind is not None:
            kind, index, order = self.deterministic_kind, 0, None
        else:
            kind = "closed" if self.R.rand() < self.closed_prob else "open"
            pool = self.templates.closed if kind == "closed" else self.templates.open
            index = int(self.R.randint(len(pool)))
            order = self.R.permutation(n).tolist() if kind == "closed" else None
        d["question"] = self.templates.question(kind, index, order)
        d.setdefault("answer", None)
        d["attributes"] = attrs
        d["kind"] = kind
        return d


def attok_collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack tensors/arrays of equal shape (``image``, ``label`` of single-label data); keep everything else
    (questions, answers, attribute lists of varying length, ids) as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key == "image" or (
            isinstance(values[0], (torch.Tensor, np.ndarray, int, np.integer))
            and len({tuple(np.shape(v)) for v in values}) == 1
            and key not in ("attributes",)
        ):
            out[key] = torch.stack([torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
                                    for v in values])
        else:
            out[key] = values
    return out
