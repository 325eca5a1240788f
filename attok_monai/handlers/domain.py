"""Sets the out-of-domain threshold of a trained model on its validation images (ignite handler).

At the end of training (after ``SavePretrainedHandler`` wrote the model folders) it runs
:func:`attok_monai.engines.domain.calibrate_domain` on up to ``limit`` validation images and writes ``domain.json``
(per-attribute visual prototypes, feature scale, threshold = ``margin`` x the ``quantile`` of their distances) into
each model folder; with ``checkpoint`` (the ``model_best.pt`` that evaluation and inference load on top of the model
folder) it calibrates those weights, then puts the final ones back. Inference reads the file
(:func:`attok_monai.engines.domain.load_domain_calibration`) and marks images above the threshold
``in_domain: False``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from attok_monai.bundle.runs import network_state
from attok_monai.errors import InputError

__all__ = ["DomainCalibrationHandler"]

logger = logging.getLogger("attok_monai.handlers")


class DomainCalibrationHandler:
    """Write ``domain.json`` into each model folder when the trainer completes.

    Args:
        network: the trained ``AttTokGPTv``.
        datalist: the validation data list.
        transform: its (deterministic) preprocessing.
        directory: model folder(s) to write ``domain.json`` into.
        quantile, margin: see :func:`~attok_monai.engines.domain.calibrate_domain`.
        limit: at most this many validation items (the first ones), to bound the cost; VQA items are question-image
            pairs, and the questions about one image count as one image (with their attributes' union).
        batch_size: images per forward pass.
        checkpoint: the MONAI checkpoint inference loads over the model folder (None or absent: the final weights).
    """

    def __init__(
        self, network: Any, datalist: Sequence[Mapping[str, Any]], transform: Any,
        directory: str | os.PathLike | Sequence[str | os.PathLike], quantile: float = 0.99, margin: float = 1.1,
        limit: int | None = 512, batch_size: int = 64, checkpoint: str | os.PathLike | None = None,
    ) -> None:
        dirs = [directory] if isinstance(directory, (str, os.PathLike)) else list(directory)
        self.network, self.datalist, self.transform = network, datalist, transform
        self.directories = [Path(d) for d in dirs]
        self.quantile, self.margin, self.limit, self.batch_size = quantile, margin, limit, batch_size
        self.checkpoint = checkpoint

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def _swap_in(self) -> dict[str, torch.Tensor] | None:
        """Load the checkpoint's weights; return the final weights they replaced (None: nothing loaded)."""
        if self.checkpoint is None or not Path(self.checkpoint).is_file():
            return None
        state = network_state(self.checkpoint)
        own = self.network.state_dict()
        final = {k: own[k].detach().to("cpu", copy=True) for k in state if k in own}
        self.network.load_state_dict(state, strict=False)
        return final

    def __call__(self, engine: Engine) -> None:
        from attok_monai.engines.domain import calibrate_domain
        from attok_monai.fileio import atomic_write_text

        items = list(self.datalist)[: self.limit] if self.limit else list(self.datalist)
        was_training = self.network.training
        device = next(self.network.parameters()).device
        final = self._swap_in()
        try:
            result = calibrate_domain(self.network, items, self.transform, quantile=self.quantile,
                                      margin=self.margin, batch_size=self.batch_size, device=device)
        except InputError as e:  # a finished training is not lost for want of validation images
            logger.warning("no domain.json written (inference will not run the prototype check): %s", e)
            return
        finally:
            if final is not None:
                self.network.load_state_dict(final, strict=False)
            self.network.train(was_training)
        result["split"] = "validation"
        result["weights"] = Path(self.checkpoint).name if final is not None else "final"
        for d in self.directories:
            atomic_write_text(d / "domain.json", json.dumps(result) + "\n")
        engine.state.metrics["domain_threshold"] = result["threshold"]
        logger.info("domain threshold %.4f set on %d validation images (median distance %.4f, weights %s)",
                    result["threshold"], result["num_images"], result["distance_median"], result["weights"])
