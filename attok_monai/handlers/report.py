"""Evaluation report artifacts: metrics JSON, per-class table, confusion matrix and t-SNE plots, predictions.

Attached to an evaluator: collects :class:`attok_monai.engines.steps.AttTokEvalStep` outputs and writes the files
at each epoch end (overwriting), so the folder always describes the latest evaluation. Files are written to a
temp name and renamed. Predictions are keyed by the sample ``id`` (never a patient identifier).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from attok_monai.engines.steps import gather_eval_outputs
from attok_monai.fileio import atomic_write, atomic_write_text, rows_to_csv
from attok_monai.metrics import calibration, classification_metrics, per_class_table

__all__ = ["EpochOutputCollector", "EvalReportHandler"]


def _save_fig(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))


class EpochOutputCollector:
    """Base of report handlers: keeps the evaluator's iteration outputs of the current epoch in ``self.outputs`` and
    calls :meth:`report` at each epoch end (subclasses write their files there and return their metrics)."""

    outputs: list[dict]
    last_metrics: dict[str, float]

    def attach(self, engine: Engine) -> None:
        self.outputs, self.last_metrics = [], {}
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.outputs.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.outputs.append(e.state.output))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.outputs:
            self.last_metrics = self.report(engine)

    def report(self, engine: Engine) -> dict[str, float]:
        raise NotImplementedError


class EvalReportHandler(EpochOutputCollector):
    """Args:
    output_dir: folder for ``metrics.json`` (with ECE/MCE of the class probabilities), ``per_class.csv``,
        ``confusion_matrix.png``, ``reliability.png``, ``tsne.png``, ``predictions.csv`` (per image: label, answers,
        ``p_<attribute>`` class probabilities and, for a model with attribute tokens, ``retrieval_<attribute>``
        book retrieval cosines).
    network: the :class:`AttTokGPTv` (for class names and attribute tokens in the t-SNE plot).
    tsne: whether to draw the t-SNE of visual tokens and attribute tokens (paper Figure 5).
    prefix: metric name prefix in ``metrics.json`` (e.g. ``"val"``).
    """

    def __init__(self, output_dir: str | os.PathLike, network: Any, tsne: bool = True, prefix: str = "val") -> None:
        self.output_dir = Path(output_dir)
        self.network = network
        self.tsne = tsne
        self.prefix = prefix
        self.outputs: list[dict] = []
        self.last_metrics: dict[str, float] = {}

    def report(self, engine: Engine) -> dict[str, float]:
        metrics = self.write(gather_eval_outputs(self.outputs), dict(engine.state.metrics))
        for key in ("ece", "mce"):  # into the engine's metrics, so MLflow's epoch log records them
            engine.state.metrics[f"{self.prefix}_{key}"] = metrics[key]
        return metrics

    def write(self, data: dict[str, Any], engine_metrics: dict[str, Any] | None = None) -> dict[str, float]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        vocab = self.network.vocabulary
        names = vocab.names
        k = len(names)
        labels = np.asarray(data["label"])
        metrics: dict[str, float] = {"num_samples": int(data["n"])}
        sources = [("open", data["open_pred"]), ("closed", data["closed_pred"]), ("prob", data["probs"].argmax(1).tolist())]
        if "retrieval" in data:  # absent for a model without attribute tokens (nothing trained to retrieve)
            sources.append(("retrieval", data["retrieval"].argmax(1).tolist()))
        for source, preds in sources:
            for key, val in classification_metrics(labels, preds, data["probs"], num_classes=k).items():
                if key == "auc" and source != "open":
                    continue
                metrics[f"{source}_{key}"] = val
        metrics["auc"] = metrics.pop("open_auc", float("nan"))
        calib = calibration(labels, data["probs"])  # of the class probabilities (attribute-token softmax)
        metrics["ece"], metrics["mce"] = calib["ece"], calib["mce"]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / "metrics.json", json.dumps(
            {"metrics": metrics, "engine_metrics": {k2: v for k2, v in (engine_metrics or {}).items()
                                                    if isinstance(v, (int, float))}}, indent=2))
        rows, cm = per_class_table(labels, data["open_pred"], names)
        buf = rows_to_csv(["class", "precision", "recall", "f1", "support"], rows)
        atomic_write_text(self.output_dir / "per_class.csv", buf)
        pred_rows = [
            {"id": i, "label": names[y], "open_answer": o, "open_pred": names[p] if p >= 0 else "",
             "closed_answer": c, **{f"p_{vocab[j].name}": f"{data['probs'][n, j]:.4f}" for j in range(k)},
             **({} if "retrieval" not in data else  # the book retrieval's cosine scores (model with attribute tokens)
                {f"retrieval_{vocab[j].name}": f"{data['retrieval'][n, j]:.6f}" for j in range(k)})}
            for n, (i, y, o, p, c) in enumerate(zip(data["id"], labels, data["open_text"], data["open_pred"],
                                                    data["closed_text"]))
        ]
        atomic_write_text(self.output_dir / "predictions.csv", rows_to_csv(list(pred_rows[0]), pred_rows))

        fig, ax = plt.subplots(figsize=(1.2 * k + 3, 1.0 * k + 2))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(k + 1), [*names, "unparsed"], rotation=45, ha="right")
        ax.set_yticks(range(k), names)
        for r in range(k):
            for c in range(k + 1):
                ax.text(c, r, int(cm[r, c]), ha="center", va="center", fontsize=8)
        ax.set_xlabel("open-ended answer")
        ax.set_ylabel("label")
        ax.set_title(f"Confusion matrix, {self.prefix} split, n = {int(cm.sum())} "
                     f"(open accuracy {metrics['open_accuracy']:.3f})")
        _save_fig(fig, self.output_dir / "confusion_matrix.png")
        plt.close(fig)
        self._reliability(calib, int(data["n"]), plt)
        if self.tsne and data["n"] > k + 5:
            self._tsne(data, names, plt)
        return metrics

    def _reliability(self, calib: dict[str, Any], n: int, plt) -> None:
        """Reliability diagram: accuracy vs confidence of the top class per bin, with the bin counts."""
        bins = [b for b in calib["bins"] if b["count"]]
        fig, ax = plt.subplots(figsize=(5, 5))
        width = calib["bins"][0]["upper"] - calib["bins"][0]["lower"]
        ax.bar([b["lower"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
               edgecolor="k", alpha=0.7, label="accuracy")
        for b in bins:
            ax.text(b["lower"] + width / 2, min(0.97, b["accuracy"] + 0.02), str(b["count"]), ha="center", fontsize=6)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"Reliability, {self.prefix} split, n = {n}: ECE {calib['ece']:.3f}, MCE {calib['mce']:.3f}",
                     fontsize=9)
        _save_fig(fig, self.output_dir / "reliability.png")
        plt.close(fig)

    def _tsne(self, data: dict[str, Any], names: list[str], plt) -> None:
        import torch
        from sklearn.manifold import TSNE

        visual = np.asarray(data["visual_mean"], dtype=np.float32)
        attrs = self.network.book.attribute_embeddings.detach().float().cpu().numpy()
        points = np.concatenate([visual, attrs])
        perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
        emb = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(points)
        labels = np.asarray(data["label"])
        fig, ax = plt.subplots(figsize=(9, 6))
        cmap = plt.get_cmap("tab10")
        for j, name in enumerate(names):
            sel = labels == j
            ax.scatter(emb[: len(visual)][sel, 0], emb[: len(visual)][sel, 1], s=8, color=cmap(j % 10), alpha=0.6,
                       label=name)
        # every attribute token drawn last and labelled with its clinical name; labels fan out around their star,
        # so tokens that t-SNE puts on one spot stay readable (and the title says when they do)
        stars = emb[len(visual):]
        span = float(np.ptp(emb, axis=0).max()) or 1.0
        for j, name in enumerate(names):
            ax.scatter(*stars[j], marker="*", s=260, color=cmap(j % 10), edgecolor="k", zorder=3)
            angle = 2 * np.pi * j / max(1, len(names))
            ax.annotate(name, stars[j], xytext=(40 * np.cos(angle), 40 * np.sin(angle)), textcoords="offset points",
                        fontsize=7, ha="center", zorder=4, arrowprops={"arrowstyle": "-", "lw": 0.6},
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": cmap(j % 10), "alpha": 0.85})
        near = len(stars) > 1 and float(np.linalg.norm(stars[:, None] - stars[None], axis=-1).max()) < 0.05 * span
        ax.margins(0.2)  # room for the labels around the stars
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="visual tokens by label",
                  title_fontsize=7)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_title(f"t-SNE ({self.prefix}, n = {len(visual)}): visual tokens (dots), attribute tokens (stars)"
                     + ("\nall attribute tokens fall on one spot" if near else ""), fontsize=9)
        _save_fig(fig, self.output_dir / "tsne.png")
        plt.close(fig)
        del torch
