"""Multi-process training under ``torchrun`` (DDP), as MONAI's ``multi_gpu_train.json`` bundles do it.

A bundle's ``configs/multi_gpu_train.json`` is merged over its ``train.json`` and uses these helpers::

    torchrun --nproc_per_node 8 -m monai.bundle run \\
        --config_file "['bundles/fundus_dr/configs/train.json','bundles/fundus_dr/configs/multi_gpu_train.json']"

Each rank trains the same model on its own shard of the data (``DistributedSampler``, or MONAI's
``DistributedWeightedRandomSampler`` for the class-balanced option); DDP all-reduces the gradients and the embedding
book all-reduces its EMA statistics itself (:class:`~attok_monai.networks.blocks.EmbeddingBook`), so every rank holds
identical parameters and prototypes. Validation, checkpoints, the saved model, console logs and MLflow run on rank 0
only; the other ranks wait for it at the next gradient all-reduce (hence the long process-group timeout). On CPU the
same config runs with the ``gloo`` backend (tests).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Sampler

__all__ = [
    "init_distributed",
    "local_device",
    "rank",
    "is_rank_zero",
    "wrap_ddp",
    "train_sampler",
    "rank_zero_handlers",
    "cleanup",
]


def init_distributed(backend: str | None = None, timeout_minutes: float = 120.0) -> None:
    """Initialise the default process group from the ``torchrun`` environment (no-op if already initialised).

    Args:
        backend: ``"nccl"``/``"gloo"``; default ``nccl`` when CUDA is available, else ``gloo``.
        timeout_minutes: collective timeout; ranks > 0 wait this long for rank 0's validation.
    """
    if dist.is_initialized():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "init_distributed: RANK/WORLD_SIZE are not set; run multi_gpu_train.json under torchrun, e.g. "
            "'torchrun --nproc_per_node 2 -m monai.bundle run --config_file \"[...train.json, "
            "...multi_gpu_train.json]\"'."
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (made the current CUDA device) when CUDA is available, else CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank_zero() -> bool:
    return rank() == 0


def wrap_ddp(network: torch.nn.Module, device: torch.device | str) -> DistributedDataParallel:
    """``DistributedDataParallel`` around an :class:`AttTokGPTv` already on ``device``.

    Parameters and the embedding book stay identical on all ranks. Buffers such as BatchNorm running statistics (the
    compact model's ResNet encoder) are broadcast from rank 0 before each forward, as DDP does by default, so after
    the last step they differ between ranks; rank 0's, which are the ones saved, are used.

    ``find_unused_parameters`` stays off: every trainable parameter gets a gradient each step (ACM's theta is used in
    the loss outside ``forward``, which DDP handles as long as it is marked ready once).
    """
    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)


def train_sampler(
    dataset: Dataset, labels: Sequence[Any] | None = None, balanced: bool = False, seed: int = 0
) -> Sampler:
    """This rank's training sampler: ``DistributedSampler`` (shuffled, padded to equal length on every rank), or with
    ``balanced=True`` MONAI's ``DistributedWeightedRandomSampler`` with class-balanced weights (``labels`` needed).
    Call ``set_epoch`` each epoch (MONAI's ``SupervisedTrainer`` does)."""
    from monai.data import DistributedSampler, DistributedWeightedRandomSampler

    if not balanced:
        return DistributedSampler(dataset, shuffle=True, seed=seed, even_divisible=True)
    if labels is None:
        raise ValueError("train_sampler: balanced=True needs the training labels.")
    from attok_monai.data.sampling import class_balanced_weights

    weights = class_balanced_weights(labels).tolist()
    world = dist.get_world_size() if dist.is_initialized() else 1
    return DistributedWeightedRandomSampler(
        dataset, weights, num_samples_per_rank=-(-len(weights) // world), shuffle=False, even_divisible=True,
        generator=torch.Generator().manual_seed(seed + rank()),
    )


def rank_zero_handlers(handlers: Sequence[Any]) -> list[Any]:
    """The handlers this rank runs: all of them on rank 0; on other ranks only those that must run everywhere
    (LR and lambda schedules, the prototype EMA with its all-reduce, run statistics, checkpoint loading): validation,
    console/progress logs, checkpoint and model saving and MLflow run on rank 0 only. ``None`` entries (components
    disabled in the config, such as the MLflow handlers of ranks > 0, whose tracking store must not be opened by
    every rank at once) are dropped."""
    handlers = [h for h in handlers if h is not None]
    if is_rank_zero():
        return handlers
    from ignite.handlers import ProgressBar
    from monai.handlers import CheckpointSaver, MLFlowHandler, StatsHandler, ValidationHandler

    from attok_monai.handlers import MLflowArtifactsHandler, SavePretrainedHandler
    from attok_monai.handlers.domain import DomainCalibrationHandler
    from attok_monai.handlers.temperature import TemperatureHandler

    rank_zero_only = (
        ValidationHandler, StatsHandler, MLFlowHandler, ProgressBar, CheckpointSaver, SavePretrainedHandler,
        MLflowArtifactsHandler, TemperatureHandler, DomainCalibrationHandler,
    )
    return [h for h in handlers if not isinstance(h, rank_zero_only)]


def cleanup() -> None:
    """Destroy the process group (the bundle's ``finalize``)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
