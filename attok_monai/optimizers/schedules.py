"""Training schedules, in one place.

- the learning rate: MONAI's :class:`monai.optimizers.WarmupCosineSchedule` (linear warm-up, then cosine decay),
  configured in the bundles' ``lr_scheduler`` (``warmup_fraction`` of ``total_steps``);
- the weight lambda of the ACM loss: :class:`LambdaSchedule` (paper: linear 1 -> 0), stepped by
  :class:`~attok_monai.handlers.LambdaScheduleHandler`.
"""

from __future__ import annotations

import math

from attok_monai.errors import InputError

__all__ = ["LambdaSchedule"]


class LambdaSchedule:
    """The weight of the ACM loss over training steps.

    Args:
        mode: ``"constant"`` (always ``start``), ``"linear"`` (``start -> end``, the paper's 1 -> 0) or ``"cosine"``.
        start: value at step 0.
        end: value at ``total_steps`` and after.
        total_steps: length of the decay.
    """

    def __init__(self, mode: str = "linear", start: float = 1.0, end: float = 0.0, total_steps: int = 1) -> None:
        if mode not in ("constant", "linear", "cosine"):
            raise InputError(f"LambdaSchedule: mode must be constant, linear or cosine, got {mode!r}.")
        if total_steps < 1:
            raise InputError(f"LambdaSchedule: total_steps must be >= 1, got {total_steps}.")
        self.mode, self.start, self.end, self.total_steps = mode, float(start), float(end), int(total_steps)

    def __call__(self, step: int) -> float:
        if self.mode == "constant":
            return self.start
        t = min(max(step, 0), self.total_steps) / self.total_steps
        if self.mode == "linear":
            return self.start + (self.end - self.start) * t
        return self.end + 0.5 * (self.start - self.end) * (1.0 + math.cos(math.pi * t))
