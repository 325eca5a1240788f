"""The end-of-run summary a bundle prints: final metrics and where the MLflow run is, for classification
(:func:`print_summary`) and free-form VQA (:func:`print_vqa_summary`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["print_summary", "print_vqa_summary"]


def _read_metrics(metrics_file: str | os.PathLike) -> tuple[Path, dict | None]:
    """The ``metrics`` of a report's ``metrics.json``; None (said in one line) when the file was not written."""
    metrics_file = Path(metrics_file)
    if not metrics_file.exists():
        print(f"[attok] no metrics written ({metrics_file} missing)")
        return metrics_file, None
    return metrics_file, json.loads(metrics_file.read_text())["metrics"]


def _print_mlflow_run(mlflow_handler: Any) -> None:
    """Where the run of MONAI's ``MLFlowHandler`` is (found by name once the handler has closed it) and how to browse
    it."""
    if mlflow_handler is None:
        return
    client = mlflow_handler.client
    uri = getattr(client, "tracking_uri", None) or getattr(getattr(client, "_tracking_client", None),
                                                           "tracking_uri", "")
    run = getattr(mlflow_handler, "cur_run", None)  # None once the handler closed the run
    if run is None and getattr(mlflow_handler, "experiment", None) is not None:
        runs = client.search_runs(
            [mlflow_handler.experiment.experiment_id],
            filter_string=f"attributes.run_name = '{mlflow_handler.run_name}'", max_results=1,
        )
        run = runs[0] if runs else None
    if run is not None:
        print(f"[attok] MLflow run {run.info.run_id} (experiment {mlflow_handler.experiment_name}) at {uri}")
        print(f"[attok] browse: mlflow ui --backend-store-uri {uri}")


def print_summary(metrics_file: str | os.PathLike, mlflow_handler: Any = None, title: str = "validation") -> dict:
    """Print the final metrics and where the MLflow run is; returns the metrics."""
    metrics_file, metrics = _read_metrics(metrics_file)
    if metrics is None:
        return {}
    keys = ["open_accuracy", "closed_accuracy", "open_macro_f1", "open_balanced_accuracy", "auc",
            "retrieval_accuracy", "ece", "num_samples"]
    print(f"\n[attok] {title} metrics:")
    for k in keys:
        if k in metrics:
            print(f"  {k:24s} {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"  {k:24s} {metrics[k]}")
    print(f"[attok] report files: {metrics_file.parent}")
    _print_mlflow_run(mlflow_handler)
    return metrics


def print_vqa_summary(metrics_file: str | os.PathLike, mlflow_handler: Any = None, title: str = "validation") -> dict:
    """Print the headline VQA numbers next to the question-only baseline, and where the MLflow run is."""
    metrics_file, metrics = _read_metrics(metrics_file)
    if metrics is None:
        return {}
    print(f"\n[attok] {title} VQA scores ({metrics.get('n', '?')} questions: {metrics.get('n_closed', '?')} closed, "
          f"{metrics.get('n_open', '?')} open)     model   question-only")
    from attok_monai.handlers.vqa_report import HEADLINE

    for k in HEADLINE:
        qo = metrics.get(f"question_only_{k}")
        print(f"  {k:22s} {metrics.get(k, float('nan')):8.4f}" + (f"   {qo:8.4f}" if qo is not None else ""))
    print(f"[attok] report files: {metrics_file.parent} (scores.md lists the worst question types)")
    _print_mlflow_run(mlflow_handler)
    return metrics
