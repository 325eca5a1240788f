"""Ignite handlers for AttTok training and evaluation."""

from .attok_handlers import LambdaScheduleHandler, PrototypeEMAHandler
from .mlflow_model import MLflowModelHandler

__all__ = ["LambdaScheduleHandler", "MLflowModelHandler", "PrototypeEMAHandler"]
