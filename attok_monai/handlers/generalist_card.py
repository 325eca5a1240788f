"""The ``generalist.json`` card of a trained compact generalist's model folder."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from attok_monai.engines.generalist import CARD_KIND, CARD_NAME

__all__ = ["GeneralistCardHandler"]


class GeneralistCardHandler:
    """Writes the ``generalist.json`` card into each saved model folder when training completes (attach it after
    :class:`~attok_monai.handlers.SavePretrainedHandler`), with the mean training loss of the last epoch, and
    prints where the folder is and how a bundle starts from it.

    Args:
        directories: the model folders written by the save handler.
        image_size, channels: the generalist's input.
        sources: ``{bundle: number of training items}``.
        extra: more card fields (e.g. the VQA split parameters).
    """

    def __init__(
        self, directories: str | os.PathLike | Sequence[str | os.PathLike], image_size: int, channels: int,
        sources: dict[str, int], extra: dict[str, Any] | None = None,
    ) -> None:
        dirs = [directories] if isinstance(directories, (str, os.PathLike)) else list(directories)
        self.directories = [Path(d) for d in dirs]
        self.card = {"kind": CARD_KIND, "image_size": int(image_size), "channels": int(channels),
                     "sources": dict(sources), **(extra or {})}
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._losses = []

    def _record(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict) and "loss" in out:
            self._losses.append(float(out["loss"]))

    def __call__(self, engine: Engine) -> None:
        from attok_monai.fileio import atomic_write_text

        card = dict(self.card)
        card["epochs"] = int(engine.state.epoch)
        card["iterations"] = int(engine.state.iteration)
        if self._losses:
            card["last_epoch_mean_loss"] = sum(self._losses) / len(self._losses)
            engine.state.metrics["last_epoch_mean_loss"] = card["last_epoch_mean_loss"]
        for d in self.directories:
            atomic_write_text(d / CARD_NAME, json.dumps(card, indent=2))
        print(f"\n[attok] compact generalist: {card['iterations']} iterations, last-epoch mean training loss "
              f"{card.get('last_epoch_mean_loss', float('nan')):.4f}")
        print(f"[attok] model folder: {self.directories[0]}")
        print(f"[attok] start a bundle from it: python -m attok_monai.bundle run --config bundles/fundus_dr "
              f"--extra from_generalist --generalist_dir {self.directories[0]}")
