"""Per-epoch throughput and memory of a training run (logged with the epoch metrics)."""

from __future__ import annotations

import time

import torch
from ignite.engine import Engine, Events

__all__ = ["RunStatsHandler"]


class RunStatsHandler:
    """Per-epoch ``samples_per_s``, ``tokens_per_s`` (LLM tokens, visual tokens included), ``epoch_time_s`` and
    ``peak_memory_mb`` (CUDA: ``max_memory_allocated``; CPU: peak RSS) into ``engine.state.metrics``, so MLflow's
    epoch log records them. Under ``torch.distributed`` the counts are per rank (multiply by the world size for the
    job's throughput); the GPU name is in the run parameters (:func:`attok_monai.provenance.device_info`).

    Why not ignite's ``Timer``/``Frequency`` or MLflow's system metrics: ``Frequency`` counts one quantity per
    ``RunningAverage`` and needs the batch size from the output anyway, tokens/s needs the step's own token count,
    and MLflow's system metrics sample in a background thread (and need psutil/pynvml) rather than per epoch."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end)

    def _start(self, engine: Engine) -> None:
        self._t0, self._n, self._tokens = time.perf_counter(), 0, 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def _count(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict):
            self._n += int(out.get("batch_size", 0))
            self._tokens += int(out.get("num_tokens", 0))

    def _end(self, engine: Engine) -> None:
        dt = time.perf_counter() - self._t0
        engine.state.metrics["samples_per_s"] = self._n / max(dt, 1e-9)
        engine.state.metrics["tokens_per_s"] = self._tokens / max(dt, 1e-9)
        engine.state.metrics["epoch_time_s"] = dt
        if torch.cuda.is_available():
            engine.state.metrics["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            import resource

            engine.state.metrics["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
