"""What the optimizer sees: parameter groups (weight decay) and the training schedules (LR, ACM lambda)."""

from .param_groups import optimizer_param_groups
from .schedules import LambdaSchedule

__all__ = ["LambdaSchedule", "optimizer_param_groups"]
