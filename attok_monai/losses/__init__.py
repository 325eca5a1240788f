"""AttTok losses (MONAI style): ACMLoss (eq. 9) and AttTokLoss (NTP + lambda * ACM)."""

from .acm import ACMLoss
from .attok_loss import AttTokLoss, LambdaSchedule

__all__ = ["ACMLoss", "AttTokLoss", "LambdaSchedule"]
