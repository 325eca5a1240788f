"""Ignite handlers for AttTok training: the lambda schedule of the ACM loss and the EMA update of the book."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

from attok_monai.losses.attok_loss import LambdaSchedule
from attok_monai.networks.blocks.embedding_book import EmbeddingBook

__all__ = ["LambdaScheduleHandler", "PrototypeEMAHandler"]


def _default_ema_output(output: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if isinstance(output, list):  # MONAI decollated outputs are not used here
        output = output[0]
    return output.get("visual_tokens"), output.get("visual_targets")


class LambdaScheduleHandler:
    """Sets ``loss.lambda_weight = schedule(iteration - 1)`` before each training iteration.

    Args:
        loss: any object with a ``lambda_weight`` attribute (:class:`attok_monai.losses.AttTokLoss`).
        mode, start, end: the :class:`LambdaSchedule` (paper: linear 1 -> 0).
        total_steps: length of the decay; ``None`` = the whole run (``max_epochs * epoch_length``).
    """

    def __init__(self, loss: Any, mode: str = "linear", start: float = 1.0, end: float = 0.0,
                 total_steps: int | None = None) -> None:
        self.loss = loss
        self.mode, self.start, self.end, self.total_steps = mode, start, end, total_steps
        self.schedule: LambdaSchedule | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def _started(self, engine: Engine) -> None:
        total = self.total_steps or max(1, engine.state.max_epochs * (engine.state.epoch_length or 1))
        self.schedule = LambdaSchedule(self.mode, self.start, self.end, total)

    def __call__(self, engine: Engine) -> None:
        if self.schedule is None:
            self._started(engine)
        self.loss.lambda_weight = self.schedule(engine.state.iteration - 1)


class PrototypeEMAHandler:
    """Updates the visual prototypes of an :class:`EmbeddingBook` after each iteration (eq. 5).

    Args:
        book: the embedding book.
        output_transform: maps ``engine.state.output`` to ``(visual_tokens (B, N_v, d), targets (B,) or (B, K))``;
            the default reads the ``visual_tokens`` and ``visual_targets`` keys. ``None`` tokens skip the update.
        network: the :class:`~attok_monai.networks.nets.AttTokGPTv`; with ``network.prototype_init ==
            "class_means"`` and ``init_loader`` given, the prototypes start from the class means of the first
            ``network.prototype_init_batches`` batches of ``init_loader`` when training starts with an empty book
            (not on resume: a resumed book already holds prototypes). Drawing those batches advances the loader's
            random stream.
        init_loader: the training loader (batches with ``image`` and ``label``/``attributes``).
    """

    def __init__(self, book: EmbeddingBook, output_transform: Callable = _default_ema_output,
                 network: Any = None, init_loader: Any = None) -> None:
        self.book = book
        self.output_transform = output_transform
        self.network = network
        self.init_loader = init_loader

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.init_prototypes)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def init_prototypes(self, engine: Engine | None = None) -> None:
        """The ``"class_means"`` start of the book (no-op otherwise)."""
        net = getattr(self.network, "module", self.network)
        if net is None or self.init_loader is None or getattr(net, "prototype_init", "first_batch") != "class_means":
            return
        if bool(self.book.prototype_initialized.any()):
            return
        from attok_monai.engines.steps import _first_attributes

        def batches():
            for i, batch in enumerate(self.init_loader):
                if i >= net.prototype_init_batches:
                    break
                yield batch["image"], _first_attributes(batch)

        net.init_prototypes(batches())

    def __call__(self, engine: Engine) -> None:
        visual, targets = self.output_transform(engine.state.output)
        if visual is not None and targets is not None:
            self.book.update_prototypes(visual, targets)
