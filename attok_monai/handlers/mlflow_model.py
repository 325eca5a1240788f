"""Log the trained model folder as an MLflow Model into the training run (see :mod:`attok_monai.mlflow_model`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

__all__ = ["MLflowModelHandler"]


class MLflowModelHandler:
    """At the end of training, log ``model_dir`` as an MLflow Model (``python_function``: images in, answers and
    probabilities out) into the run of ``mlflow_handler``, under ``name`` (it loads back as
    ``runs:/<run_id>/<name>``).

    Attach it after the handler that writes the model folder and before the ``MLFlowHandler`` that closes the run
    (in ``train#handlers``: just before ``"@train#mlflow"``). It does nothing where the MLflow handler has no run
    (ranks other than 0, MLflow disabled) or the folder holds no model.

    Args:
        mlflow_handler: the training's ``monai.handlers.MLFlowHandler`` (its client and ``cur_run`` are used).
        model_dir: the model folder (``runs/<run>/model``).
        name: the MLflow Model's name in the run.
        registered_model_name: also register it in the model registry under this name (``None``: not registered).
        example: store a mid-grey image of the model's input size as the input example (it shows the request
            format; no training image is copied into the model). Compact backbone only.
    """

    def __init__(
        self, mlflow_handler: Any, model_dir: str | os.PathLike, name: str = "mlflow_model",
        registered_model_name: str | None = None, example: bool = True,
    ) -> None:
        self.mlflow_handler, self.model_dir, self.name = mlflow_handler, Path(model_dir), name
        self.registered_model_name, self.example = registered_model_name, example
        self.model_info: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def _tracking_uri(self) -> str | None:
        client = self.mlflow_handler.client
        uri = getattr(client, "tracking_uri", None) or getattr(getattr(client, "_tracking_client", None),
                                                               "tracking_uri", None)
        return str(uri) if uri else None

    def _example_image(self, folder: Path) -> Path | None:
        """A mid-grey PNG of the compact model's input size; ``None`` for other backbones (MLflow validates an
        example by loading the model a second time, which a multi-billion-parameter backbone should not pay)."""
        from PIL import Image

        backbone = json.loads((self.model_dir / "backbone.json").read_text())
        if backbone.get("type", "compact") != "compact":
            return None
        vision = backbone.get("vision", {})
        size, channels = int(vision.get("img_size", 28)), int(vision.get("in_channels", 3))
        grey = np.full((size, size) if channels == 1 else (size, size, 3), 128, dtype=np.uint8)
        path = folder / "example.png"
        Image.fromarray(grey).save(path)
        return path

    def __call__(self, engine: Engine) -> None:
        from attok_monai.mlflow_model import log_attok_model

        run = getattr(self.mlflow_handler, "cur_run", None)
        if run is None or not (self.model_dir / "model.pt").is_file():
            return
        with tempfile.TemporaryDirectory() as tmp:
            example = self._example_image(Path(tmp)) if self.example else None
            self.model_info = log_attok_model(
                self.model_dir, run.info.run_id, tracking_uri=self._tracking_uri(), name=self.name,
                example_image=example, registered_model_name=self.registered_model_name,
            )
