"""Evaluation report of a free-form VQA evaluator: scores, breakdowns, predictions and the question-only floor.

Attached to an evaluator that runs :class:`attok_monai.engines.vqa_steps.VQAEvalStep`; at each epoch end it scores the
collected answers with :func:`attok_monai.vqa.scoring.score_vqa` (closed: leading yes/no or exact match; open: exact
match, token recall and F1; no LLM judge) and writes, each file complete or absent:

* ``metrics.json``: ``{"metrics": {overall_accuracy, closed_accuracy, open_accuracy, open_token_recall, open_token_f1,
  n, n_closed, n_open, num_samples, question_only_*}, "engine_metrics": {...}}``;
* ``scores.json``: the full :func:`score_vqa` result (by question type, by organ, worst types) without per-sample
  rows, and the question-only baseline's scores under ``"question_only"``;
* ``scores.md``: :func:`format_scores_markdown` tables (headline, organs, worst question types) for both;
* ``predictions.csv``: one row per question (sample id, question, reference, prediction, correct, token F1,
  predicted and reference attribute tokens, the question-only answer).

The question-only numbers (:func:`question_only_baseline` fitted on ``baseline_train``) are also put into
``engine.state.metrics`` as ``question_only_<metric>`` so an MLflow handler attached after this one logs them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine

from attok_monai.engines.vqa_steps import REFERENCE_KEYS
from attok_monai.fileio import atomic_write_text
from attok_monai.handlers.report import EpochOutputCollector
from attok_monai.vqa.scoring import format_scores_markdown, question_only_baseline, score_vqa

__all__ = ["VQAReportHandler", "HEADLINE"]

HEADLINE = ("overall_accuracy", "closed_accuracy", "open_accuracy", "open_token_recall", "open_token_f1")


class VQAReportHandler(EpochOutputCollector):
    """Args:
    output_dir: folder for the report files.
    network: the model (for attribute token names in ``predictions.csv``).
    baseline_train: training records or items for the question-only baseline (``None``: no baseline).
    worst_k: how many question types to list as the worst.
    """

    def __init__(
        self, output_dir: str | os.PathLike, network: Any = None, baseline_train: Sequence[Any] | None = None,
        worst_k: int = 5,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.network = network
        self.baseline_train = baseline_train
        self.worst_k = worst_k
        self.outputs: list[dict] = []
        self.last_metrics: dict[str, float] = {}

    def report(self, engine: Engine) -> dict[str, float]:
        metrics = self.write(self.outputs, dict(engine.state.metrics))
        for k, v in metrics.items():
            if k.startswith("question_only_"):
                engine.state.metrics[k] = v
        return metrics

    def write(self, outputs: Sequence[dict], engine_metrics: dict[str, Any] | None = None) -> dict[str, float]:
        """Score the merged outputs and write the report files; returns the flat metrics."""
        rows = [
            {k: out[k][i] for k in (*REFERENCE_KEYS, "prediction", "attributes_pred", "attributes")}
            for out in outputs
            for i in range(len(out["id"]))
        ]
        refs = [{k: r[k] for k in REFERENCE_KEYS} for r in rows]
        scores = score_vqa({str(r["id"]): r["prediction"] for r in rows}, refs, worst_k=self.worst_k)
        metrics: dict[str, float] = {k: _num(scores[k]) for k in HEADLINE}
        metrics.update({k: scores[k] for k in ("n", "n_closed", "n_open")})
        metrics["num_samples"] = scores["n"]
        baseline, qo_scores = {}, None
        if self.baseline_train:
            baseline = question_only_baseline(self.baseline_train, refs)
            qo_scores = score_vqa(baseline, refs, worst_k=self.worst_k)
            metrics.update({f"question_only_{k}": _num(qo_scores[k]) for k in HEADLINE})
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / "metrics.json", json.dumps({
            "metrics": metrics,
            "engine_metrics": {k: v for k, v in (engine_metrics or {}).items() if isinstance(v, (int, float))},
        }, indent=2))
        full = {k: v for k, v in scores.items() if k != "per_sample"}
        if qo_scores is not None:
            full["question_only"] = {k: v for k, v in qo_scores.items() if k != "per_sample"}
        atomic_write_text(self.output_dir / "scores.json", json.dumps(full, indent=2))
        md = format_scores_markdown(scores, title=f"Model answers ({scores['n']} questions)")
        if qo_scores is not None:
            md += "\n" + format_scores_markdown(qo_scores, title="Question-only baseline (most frequent answer per "
                                                                  "question type)")
        atomic_write_text(self.output_dir / "scores.md", md)
        per = {p["id"]: p for p in scores["per_sample"]}
        atomic_write_text(self.output_dir / "predictions.csv", self._csv(rows, per, baseline))
        return metrics

    def _tokens(self, indices: Sequence[int]) -> str:
        vocab = getattr(self.network, "vocabulary", None)
        if vocab is None:
            return " ".join(str(i) for i in indices)
        return "".join(vocab.token(i) for i in indices)

    def _csv(self, rows: list[dict], per: dict[str, dict], baseline: dict[str, str]) -> str:
        fields = ["id", "organ", "answer_type", "question_type", "question", "answer", "prediction", "correct",
                  "token_f1", "attributes_pred", "attributes", "question_only_answer"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for r in rows:
            rid = str(r["id"])
            p = per.get(rid, {})
            w.writerow({
                "id": rid, "organ": r["organ"] or "", "answer_type": r["answer_type"],
                "question_type": "|".join(r["question_type"] or []), "question": r["question"],
                "answer": r["answer"], "prediction": r["prediction"], "correct": int(bool(p.get("correct"))),
                "token_f1": f"{p['token_f1']:.3f}" if "token_f1" in p else "",
                "attributes_pred": self._tokens(r["attributes_pred"]), "attributes": self._tokens(r["attributes"]),
                "question_only_answer": baseline.get(rid, ""),
            })
        return buf.getvalue()


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)
