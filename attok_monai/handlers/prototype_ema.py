"""The EMA update of the book's visual prototypes after each training iteration (paper eq. 5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

from attok_monai.networks.blocks.embedding_book import EmbeddingBook

__all__ = ["PrototypeEMAHandler"]


def _default_ema_output(output: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if isinstance(output, list):  # MONAI decollated outputs are not used here
        output = output[0]
    return output.get("visual_tokens"), output.get("visual_targets")


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
