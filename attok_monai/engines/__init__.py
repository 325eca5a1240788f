"""Engines: iteration functions and metrics for MONAI's SupervisedTrainer/Evaluator, inference, DDP helpers and the
compact generalist."""

from .steps import AnswerMetric, AttTokEvalStep, AttTokTrainStep, gather_eval_outputs, loss_components

__all__ = ["AnswerMetric", "AttTokEvalStep", "AttTokTrainStep", "gather_eval_outputs", "loss_components"]
