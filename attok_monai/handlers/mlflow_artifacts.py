"""Log a run folder to MLflow keeping its sub-folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["MLflowArtifactsHandler"]


class MLflowArtifactsHandler:
    """At completion, log a folder to the MLflow run of ``mlflow_handler`` keeping its sub-folder structure
    (MONAI's handler flattens file names). Attach it before the MLFlowHandler that closes the run."""

    def __init__(self, mlflow_handler: Any, directory: str | os.PathLike) -> None:
        self.mlflow_handler, self.directory = mlflow_handler, Path(directory)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        run = getattr(self.mlflow_handler, "cur_run", None)
        if run is not None and self.directory.is_dir():
            self.mlflow_handler.client.log_artifacts(run.info.run_id, str(self.directory))
