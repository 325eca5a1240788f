"""Engines: iteration functions and metrics for MONAI's SupervisedTrainer/Evaluator, and config builders."""

from .steps import AnswerMetric, AttTokEvalStep, AttTokTrainStep, gather_eval_outputs, loss_components

__all__ = ["AnswerMetric", "AttTokEvalStep", "AttTokTrainStep", "gather_eval_outputs", "loss_components"]
