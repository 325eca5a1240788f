"""The lambda schedule of the ACM loss (paper section A.1: lambda decays linearly from 1 to 0 over training)."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

from attok_monai.optimizers.schedules import LambdaSchedule

__all__ = ["LambdaScheduleHandler"]


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
