"""AttTok losses (MONAI style, no parameters): ACMLoss (eq. 9) and AttTokLoss (NTP + lambda * ACM)."""

from .acm import ACMLoss
from .attok_loss import AttTokLoss

__all__ = ["ACMLoss", "AttTokLoss"]
