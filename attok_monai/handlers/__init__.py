"""Ignite handlers for AttTok training and evaluation."""

from .attok_handlers import LambdaScheduleHandler, PrototypeEMAHandler

__all__ = ["LambdaScheduleHandler", "PrototypeEMAHandler"]
