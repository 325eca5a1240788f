"""Save the trained model folder (best weights inside) when training completes."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from attok_monai.bundle.model_folder import write_split_record
from attok_monai.bundle.runs import network_state

__all__ = ["SavePretrainedHandler"]


class SavePretrainedHandler:
    """At the end of training, ``network.save_pretrained(directory)`` for each directory (the run's ``model/``
    folder, logged as an MLflow artifact), with the question templates beside it.

    With ``best_checkpoint`` (the validation's ``model_best.pt``), the best weights are loaded into the network
    first, so the model folder is self-contained: it holds the weights that scored best on validation, and
    ``evaluate``/``inference`` need nothing else. Without a best checkpoint (no validation ran) the last weights
    are saved. With ``split`` (:func:`~attok_monai.bundle.model_folder.split_record`) the folder also records how the
    run's train/val parts were made (``split.json``), which ``evaluate`` checks before it scores a computed part.
    """

    def __init__(
        self, network: Any, directory: str | os.PathLike | Sequence[str | os.PathLike],
        templates: Any = None, best_checkpoint: str | os.PathLike | None = None, split: dict | None = None,
    ) -> None:
        dirs = [directory] if isinstance(directory, (str, os.PathLike)) else list(directory)
        self.network, self.directories, self.templates = network, [Path(d) for d in dirs], templates
        self.best_checkpoint = Path(best_checkpoint) if best_checkpoint else None
        self.split = split

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from attok_monai.fileio import atomic_write_text

        if self.best_checkpoint is not None and self.best_checkpoint.is_file():
            self.network.load_state_dict(network_state(self.best_checkpoint))
        for d in self.directories:
            self.network.save_pretrained(d)
            if self.templates is not None:
                atomic_write_text(d / "templates.json", json.dumps(self.templates.to_dict(), indent=2))
            if self.split is not None:
                write_split_record(d, self.split)
