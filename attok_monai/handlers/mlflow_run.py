"""MLflow run bookkeeping beside MONAI's ``MLFlowHandler``: tags, run status on failure, and provenance.

MONAI's handler logs parameters and metrics and closes the run as FINISHED on completion; it does not tag the code
version, it leaves a run RUNNING when training raises, and an evaluation run knows nothing of the run that trained
its model. :class:`MLflowRunHandler` adds those three things to the same run:

- tags: ``mlflow.source.git.commit`` (and ``git_dirty``), ``seed``, the library versions, and any extra tags (an
  evaluation run gets ``training_run_id`` / ``training_experiment`` from the model folder's ``provenance.json``);
- on an exception, the run is set FAILED and the exception goes on;
- at completion, ``provenance.json`` (MLflow run id, experiment, run name, git commit) is written into the model
  folder, so whoever scores that folder later can link back to the training run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["MLflowRunHandler", "code_tags", "training_provenance", "PROVENANCE_FILE"]

PROVENANCE_FILE = "provenance.json"


def code_tags() -> dict[str, str]:
    """``mlflow.source.git.commit`` and ``git_dirty`` of the source checkout (``unknown`` when the package is not
    run from a git checkout), and the versions of the libraries that shape a run."""
    from attok_monai.provenance import git_state, package_versions

    commit, dirty = git_state()
    tags = {"mlflow.source.git.commit": commit, "git_dirty": dirty}
    pkgs = ("attok-monai", "torch", "monai", "pytorch-ignite", "transformers", "peft", "numpy", "mlflow")
    tags.update({f"version.{k}": v or "absent" for k, v in package_versions(pkgs).items()})
    return tags


def training_provenance(model_dir: str | os.PathLike) -> dict[str, str]:
    """Tags that link an evaluation to the training run of ``model_dir`` (empty for a folder without provenance)."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return {}
    prov = json.loads(path.read_text())
    return {f"training_{k}": str(v) for k, v in prov.items() if k in ("run_id", "experiment", "run_name", "git_commit")}


class MLflowRunHandler:
    """Tags, FAILED status and provenance for the run of a MONAI ``MLFlowHandler``.

    Args:
        mlflow_handler: the bundle's ``monai.handlers.MLFlowHandler`` (``None`` where MLflow is disabled, e.g. on
            DDP ranks > 0: then this handler does nothing).
        tags: extra tags (``seed``, ``task``, the training provenance of an evaluated model, ...).
        provenance_dir: the model folder to write ``provenance.json`` into at completion (training runs).

    Attach it before MONAI's ``StatsHandler``: ignite stops at the first EXCEPTION_RAISED handler that raises,
    and this one raises again after marking the run FAILED.
    """

    def __init__(
        self, mlflow_handler: Any, tags: Mapping[str, Any] | None = None, provenance_dir: str | os.PathLike | None = None
    ) -> None:
        self.mlflow_handler = mlflow_handler
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.provenance_dir = Path(provenance_dir) if provenance_dir else None
        self._tagged = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._tag)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _run(self) -> Any:
        return getattr(self.mlflow_handler, "cur_run", None) if self.mlflow_handler is not None else None

    def _tag(self, engine: Engine) -> None:
        run = self._run()
        if self._tagged or run is None:  # MONAI's handler opens the run at STARTED
            return
        client = self.mlflow_handler.client
        for k, v in {**code_tags(), **self.tags}.items():
            client.set_tag(run.info.run_id, k, v)
        self._tagged = True

    def _failed(self, engine: Engine, e: BaseException) -> None:
        run = self._run()
        if run is not None:
            self.mlflow_handler.client.set_tag(run.info.run_id, "error", f"{type(e).__name__}: {e}"[:500])
            self.mlflow_handler.client.set_terminated(run.info.run_id, "FAILED")
            self.mlflow_handler.cur_run = None
        raise e

    def _completed(self, engine: Engine) -> None:
        run = self._run()
        if self.provenance_dir is None or run is None:
            return
        from attok_monai.fileio import atomic_write_text
        from attok_monai.provenance import git_state

        exp = getattr(self.mlflow_handler, "experiment", None)
        prov = {
            "run_id": run.info.run_id, "run_name": run.info.run_name,
            "experiment": getattr(exp, "name", None) or getattr(self.mlflow_handler, "experiment_name", ""),
            "git_commit": git_state()[0],
        }
        atomic_write_text(self.provenance_dir / PROVENANCE_FILE, json.dumps(prov, indent=2))
