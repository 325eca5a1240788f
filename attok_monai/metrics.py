"""Answer parsing and classification metrics of generated answers (open/closed accuracy, F1, AUC, retrieval)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from attok_monai.attributes import AttributeVocabulary

__all__ = ["parse_prediction", "classification_metrics", "per_class_table", "calibration"]


def parse_prediction(vocabulary: AttributeVocabulary, text: str) -> int:
    """The predicted attribute index of a generated answer: the first attribute token if there is one, else a
    normalised match of the answer text against the clinical names and synonyms (the longest wins); ``-1`` when
    nothing or more than one class matches (an unparseable answer counts as wrong)."""
    parsed = vocabulary.parse_answer(text)
    if parsed.indices:
        return parsed.indices[0]
    matches = vocabulary.match_text(parsed.text)
    return matches[0] if len(matches) == 1 else -1


def classification_metrics(
    labels: Sequence[int], predictions: Sequence[int], probabilities: np.ndarray | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro precision/recall/F1 (unparseable ``-1`` predictions count as wrong)
    and one-vs-rest macro AUC from (N, K) probabilities (binary: AUC of the positive class)."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(predictions, dtype=int)
    if y.shape != p.shape:
        raise ValueError(f"classification_metrics: {y.shape[0]} labels but {p.shape[0]} predictions.")
    k = num_classes or int(max(y.max(initial=0), p.max(initial=0)) + 1)
    classes = list(range(k))
    out: dict[str, float] = {"accuracy": float((y == p).mean()) if len(y) else 0.0}
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=classes, average=None, zero_division=0)
    present = np.isin(classes, y)
    out["balanced_accuracy"] = float(rec[present].mean()) if present.any() else 0.0
    out["macro_precision"] = float(prec.mean())
    out["macro_recall"] = float(rec.mean())
    out["macro_f1"] = float(f1.mean())
    out["unparseable_rate"] = float((p < 0).mean()) if len(p) else 0.0
    if probabilities is not None and len(np.unique(y)) > 1:
        probs = np.asarray(probabilities, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes absent from a small validation set
            try:
                if k == 2:
                    out["auc"] = float(roc_auc_score(y, probs[:, 1]))
                else:
                    out["auc"] = float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=classes))
            except ValueError:  # a class absent from the labels
                out["auc"] = float("nan")
    return out


def per_class_table(
    labels: Sequence[int], predictions: Sequence[int], names: Sequence[str]
) -> tuple[list[dict], np.ndarray]:
    """Per-class precision/recall/F1/support rows and the (K, K+1) confusion matrix (last column: unparseable)."""
    k = len(names)
    y = np.asarray(labels, dtype=int)
    p = np.asarray(predictions, dtype=int)
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=list(range(k)), average=None, zero_division=0)
    rows = [
        {"class": names[i], "precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
         "support": int(sup[i])}
        for i in range(k)
    ]
    p_cm = np.where(p < 0, k, p)
    cm = confusion_matrix(y, p_cm, labels=list(range(k + 1)))[:k]
    return rows, cm


def calibration(labels: Sequence[int], probabilities: np.ndarray, n_bins: int = 15) -> dict[str, object]:
    """Expected and maximum calibration error of the top-class probability (equal-width confidence bins).

    Args:
        labels: (N,) true class indices.
        probabilities: (N, K) class probabilities (rows sum to 1).
        n_bins: number of confidence bins over [0, 1].

    Returns:
        ``{"ece", "mce", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}, ...]}``; ECE is the
        count-weighted mean |accuracy - confidence| over non-empty bins (Guo et al., ICML 2017).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"calibration: probabilities must be (N, K) for N={len(y)} labels, got {probs.shape}.")
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        c = float(conf[sel].mean()) if n else float("nan")
        a = float(correct[sel].mean()) if n else float("nan")
        if n:
            gap = abs(a - c)
            ece += gap * n / max(1, len(y))
            mce = max(mce, gap)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n, "confidence": c, "accuracy": a})
    return {"ece": float(ece) if len(y) else float("nan"), "mce": float(mce) if len(y) else float("nan"), "bins": bins}
