"""Sets the out-of-domain threshold of a trained model on its validation images (ignite handler).

At the end of training (after ``SavePretrainedHandler`` wrote the model folders) it computes, for up to ``limit``
validation images, the cosine distance of the mean visual token to the nearest visual prototype of the embedding
book, and writes ``domain.json`` (threshold = ``margin`` x the ``quantile`` of those distances) into each model folder;
inference reads it (:func:`attok_monai.engines.inference.load_domain_threshold`) and marks images above it
``in_domain: False``. A model without a book (the plain-text baseline) gets no file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["DomainCalibrationHandler"]

logger = logging.getLogger("attok_monai.handlers")


class DomainCalibrationHandler:
    """Write ``domain.json`` into each model folder when the trainer completes.

    Args:
        network: the trained ``AttTokGPTv``.
        datalist: the validation data list.
        transform: its (deterministic) preprocessing.
        directory: model folder(s) to write ``domain.json`` into.
        quantile, margin: see :func:`~attok_monai.engines.inference.calibrate_domain_threshold`.
        limit: at most this many validation images (the first ones), to bound the cost.
        batch_size: images per forward pass.
    """

    def __init__(
        self, network: Any, datalist: Sequence[Mapping[str, Any]], transform: Any,
        directory: str | os.PathLike | Sequence[str | os.PathLike], quantile: float = 0.99, margin: float = 1.1,
        limit: int | None = 512, batch_size: int = 64,
    ) -> None:
        dirs = [directory] if isinstance(directory, (str, os.PathLike)) else list(directory)
        self.network, self.datalist, self.transform = network, datalist, transform
        self.directories = [Path(d) for d in dirs]
        self.quantile, self.margin, self.limit, self.batch_size = quantile, margin, limit, batch_size

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import json

        from attok_monai.engines.inference import calibrate_domain_threshold
        from attok_monai.fileio import atomic_write_text

        book = getattr(self.network, "book", None)
        if book is None or not bool(book.prototype_initialized.any()):
            logger.info("domain calibration skipped: the model has no visual prototype")
            return
        items = list(self.datalist)[: self.limit] if self.limit else list(self.datalist)
        was_training = self.network.training
        device = next(self.network.parameters()).device
        try:
            result = calibrate_domain_threshold(self.network, items, self.transform, quantile=self.quantile,
                                                margin=self.margin, batch_size=self.batch_size, device=device)
        finally:
            self.network.train(was_training)
        result["split"] = "validation"
        for d in self.directories:
            atomic_write_text(d / "domain.json", json.dumps(result, indent=2) + "\n")
        engine.state.metrics["domain_threshold"] = result["threshold"]
        logger.info("domain threshold %.4f set on %d validation images (median distance %.4f)", result["threshold"],
                    result["num_images"], result["distance_median"])
