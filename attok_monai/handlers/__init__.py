"""Ignite handlers for AttTok training and evaluation, one concept per module.

Training: :class:`LambdaScheduleHandler` (ACM weight), :class:`PrototypeEMAHandler` (book prototypes, eq. 5),
:class:`RunStatsHandler` (throughput, memory), :class:`EpochSeedHandler` (``seeding``), :class:`SavePretrainedHandler`
(the model folder), :class:`GeneralistCardHandler` (the generalist's card). Evaluation: ``report``
(classification report), ``vqa_report``, ``temperature``, ``domain``, :class:`AttentionMapSampleHandler`. MLflow:
``mlflow_store`` (MONAI's ``MLFlowHandler``, a new local store created under a file lock), ``mlflow_run``,
:class:`MLflowModelHandler`, :class:`MLflowArtifactsHandler`.
"""

from .attention_maps import AttentionMapSampleHandler
from .generalist_card import GeneralistCardHandler
from .lambda_schedule import LambdaScheduleHandler
from .mlflow_artifacts import MLflowArtifactsHandler
from .mlflow_model import MLflowModelHandler
from .prototype_ema import PrototypeEMAHandler
from .run_stats import RunStatsHandler
from .save_pretrained import SavePretrainedHandler

__all__ = [
    "AttentionMapSampleHandler", "GeneralistCardHandler", "LambdaScheduleHandler", "MLflowArtifactsHandler",
    "MLflowModelHandler", "PrototypeEMAHandler", "RunStatsHandler", "SavePretrainedHandler",
]
