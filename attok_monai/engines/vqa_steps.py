"""Free-form VQA evaluation for MONAI's SupervisedEvaluator: greedy answers to each sample's own question, and an
ignite metric that scores them with :func:`attok_monai.vqa.scoring.score_vqa`.

Training needs nothing VQA-specific: :class:`attok_monai.engines.steps.AttTokTrainStep` already reads the batch's
``question``, ``answer`` (free text) and ``attributes`` (lists, possibly empty).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from ignite.metrics import Metric

from attok_monai.engines.steps import autocast_for
from attok_monai.vqa.scoring import score_vqa

__all__ = ["VQAEvalStep", "VQAMetric", "detokenize", "REFERENCE_KEYS"]

#: sample fields carried from the batch into the evaluator output (the references of :func:`score_vqa`)
REFERENCE_KEYS = ("id", "question", "answer", "answer_type", "question_type", "organ")

_SPACE_BEFORE = re.compile(r"\s+([,.;:?!)%])")
_SPACE_AFTER = re.compile(r"([(])\s+")
_JOINERS = re.compile(r"\s*([-/'])\s*")
_DECIMAL = re.compile(r"(\d)\s*\.\s*(\d)")


def detokenize(text: str) -> str:
    """Undo the word-level tokenizer's spacing around punctuation: ``"5 . 6 cm"`` -> ``"5.6 cm"``,
    ``"x - ray"`` -> ``"x-ray"``, ``"left , right"`` -> ``"left, right"``. Attribute tokens are kept."""
    s = _DECIMAL.sub(r"\1.\2", text)
    s = _SPACE_BEFORE.sub(r"\1", s)
    s = _SPACE_AFTER.sub(r"\1", s)
    s = _JOINERS.sub(r"\1", s)
    return " ".join(s.split())


class VQAEvalStep:
    """One evaluation iteration: a greedy answer (attribute tokens kept) to each sample's question.

    Args:
        max_new_tokens: generation budget (attribute block + answer words).
        amp: bf16 autocast on CUDA.

    Returns a dict of lists: ``prediction`` (generated text, detokenised), ``attributes_pred`` (attribute indices
    parsed from the prediction's attribute block), ``attributes`` (reference indices) and the :data:`REFERENCE_KEYS`.
    """

    def __init__(self, max_new_tokens: int = 32, amp: bool = True) -> None:
        self.max_new_tokens = max_new_tokens
        self.amp = amp

    def __call__(self, engine: Any, batch: dict) -> dict:
        model = engine.network
        model.eval()
        device = engine.state.device
        images = batch["image"].to(device).float()
        n = images.shape[0]
        with torch.no_grad(), autocast_for(device, self.amp):
            texts = model.generate(images, list(batch["question"]), self.max_new_tokens)
        texts = [detokenize(t) for t in texts]
        out: dict[str, Any] = {
            "prediction": texts,
            "attributes_pred": [model.vocabulary.parse_answer(t).indices for t in texts],
            "attributes": [list(a) for a in batch.get("attributes", [[]] * n)],
        }
        for key in REFERENCE_KEYS:
            value = batch.get(key)
            out[key] = list(value) if value is not None else [None] * n
        if out["id"][0] is None:
            out["id"] = [str(i) for i in range(n)]
        return out


class VQAMetric(Metric):
    """An ignite metric over :class:`VQAEvalStep` outputs: one number of :func:`score_vqa`.

    Args:
        name: a top-level key of :func:`score_vqa` (``overall_accuracy``, ``closed_accuracy``, ``open_accuracy``,
            ``open_token_recall``, ``open_token_f1``).

    An empty part (e.g. no open question in a tiny validation set) gives NaN.
    """

    NAMES = ("overall_accuracy", "closed_accuracy", "open_accuracy", "open_token_recall", "open_token_f1")

    def __init__(self, name: str = "overall_accuracy") -> None:
        if name not in self.NAMES:
            raise ValueError(f"VQAMetric: name must be one of {self.NAMES}, got {name!r}.")
        self.name = name
        super().__init__(output_transform=lambda o: (o,))

    def reset(self) -> None:
        self._predictions: dict[str, str] = {}
        self._references: list[dict[str, Any]] = []

    def update(self, output: Sequence[dict]) -> None:
        out = output[0]
        for i, rid in enumerate(out["id"]):
            self._predictions[str(rid)] = out["prediction"][i]
            self._references.append({k: out[k][i] for k in REFERENCE_KEYS})

    def compute(self) -> float:
        if not self._references:
            return float("nan")
        value = score_vqa(self._predictions, self._references)[self.name]
        return float("nan") if value is None else float(value)
