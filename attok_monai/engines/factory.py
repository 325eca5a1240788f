"""Builders used by the bundle configs: the compact model, the LR schedule, run statistics and the final report."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.instructions import InstructionTemplates
from attok_monai.networks.nets import AttTokConfig, AttTokGPTv, CompactGPTvBackbone, build_word_tokenizer

__all__ = [
    "build_compact_attok",
    "build_hf_attok",
    "RunStatsHandler",
    "SavePretrainedHandler",
    "device_info",
    "file_md5",
    "print_summary",
    "find_bundle_root",
    "load_pretrained",
    "MLflowArtifactsHandler",
    "snapshot_configs",
]


def build_compact_attok(
    vocabulary: AttributeVocabulary | dict | str,
    templates: InstructionTemplates,
    extra_texts: Sequence[str] = (),
    vision: dict | None = None,
    llm: dict | None = None,
    max_length: int = 96,
    seed: int | None = None,
    config: AttTokConfig | Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> AttTokGPTv:
    """A compact AttTok GPTv: tokenizer built offline from the templates, class names, keywords and markers.

    ``config``, ``config_overrides``: as in :func:`build_hf_attok`."""
    config = AttTokConfig.coerce(config, **config_overrides)  # refuse an unknown key before building anything
    vocab = AttributeVocabulary.coerce(vocabulary)
    texts = templates.all_texts() + [k for a in vocab for k in a.keywords] + list(extra_texts)
    tokenizer = build_word_tokenizer(texts, vocab.special_tokens)
    if seed is not None:
        torch.manual_seed(seed)
    backbone = CompactGPTvBackbone(tokenizer, vision=vision, llm=llm, max_length=max_length)
    return AttTokGPTv(backbone, vocab, config)


def build_hf_attok(
    model_id: str,
    vocabulary: AttributeVocabulary | dict | str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = "bfloat16",
    attn_implementation: str | None = None,
    lora: dict | bool | None = True,
    gradient_checkpointing: bool = False,
    max_length: int = 2048,
    system_prompt: str | None = None,
    seed: int | None = None,
    config: AttTokConfig | Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> AttTokGPTv:
    """AttTok on a Hugging Face Qwen2-VL / Qwen2.5-VL (Lingshu) model with PEFT LoRA (paper setting, section A.1).

    Args:
        model_id: hub id or local folder of the base model (offline with ``HF_HUB_OFFLINE=1`` from a local cache).
        vocabulary: the attribute vocabulary (its tokens are added to the tokenizer; rows initialised from keywords).
        min_pixels, max_pixels: the image processor's pixel limits (e.g. ``224*224``; ``28*28`` per merged token).
        dtype: weights dtype of the base model (``"bfloat16"``; ``None`` = the checkpoint's).
        attn_implementation: ``"sdpa"``, ``"flash_attention_2"`` (needs ``flash-attn``) or ``None`` (default).
        lora: ``peft.LoraConfig`` keywords over r=16, alpha=32, dropout 0.05 on the LLM's linear layers; False = none.
        gradient_checkpointing: non-reentrant checkpointing of the decoder layers.
        max_length, system_prompt: sequence budget (visual tokens included) and optional system message.
        seed: seeds the LoRA and AttTok module initialisation.
        config, config_overrides: the :class:`~attok_monai.networks.nets.AttTokConfig` (or a dict of its keys; None =
            the defaults) and its keys as keyword arguments over it (``use_acc``, ``tau``, ...: the bundles pass them
            this way); unknown keys are refused by name.
    """
    from attok_monai.networks.nets.hf_qwen2vl import Qwen2VLBackbone

    config = AttTokConfig.coerce(config, **config_overrides)  # refuse an unknown key before building anything
    if seed is not None:
        torch.manual_seed(seed)
    backbone = Qwen2VLBackbone.from_pretrained(
        model_id, min_pixels=min_pixels, max_pixels=max_pixels, dtype=dtype, attn_implementation=attn_implementation,
        lora=lora, gradient_checkpointing=gradient_checkpointing, max_length=max_length, system_prompt=system_prompt,
    )
    return AttTokGPTv(backbone, AttributeVocabulary.coerce(vocabulary), config)


def device_info(device: torch.device | str) -> dict[str, str]:
    """Device, world size and the versions of the libraries that shape a run (logged with every run)."""
    from attok_monai.provenance import package_versions

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    world = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
    info = {"device": str(device), "device_name": name, "world_size": str(world), "torch_version": torch.__version__}
    pkgs = ("monai", "pytorch-ignite", "transformers", "peft", "numpy", "attok-monai")
    info.update({f"{k.replace('-', '_')}_version": v or "absent" for k, v in package_versions(pkgs).items()})
    return info


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a data file (logged to MLflow so a run names the exact data it saw). MONAI's ``check_hash`` only
    compares against a known value; this computes the value to log."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunStatsHandler:
    """Per-epoch ``samples_per_s``, ``tokens_per_s`` (LLM tokens, visual tokens included), ``epoch_time_s`` and
    ``peak_memory_mb`` (CUDA: ``max_memory_allocated``; CPU: peak RSS) into ``engine.state.metrics``, so MLflow's
    epoch log records them. Under ``torch.distributed`` the counts are per rank (multiply by the world size for the
    job's throughput); the GPU name is in the run parameters (:func:`device_info`).

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


class SavePretrainedHandler:
    """At the end of training, ``network.save_pretrained(directory)`` for each directory (the run's ``model/``
    folder, logged as an MLflow artifact), with the question templates beside it.

    With ``best_checkpoint`` (the validation's ``model_best.pt``), the best weights are loaded into the network
    first, so the model folder is self-contained: it holds the weights that scored best on validation, and
    ``evaluate``/``inference`` need nothing else. Without a best checkpoint (no validation ran) the last weights
    are saved.
    """

    def __init__(
        self, network: AttTokGPTv, directory: str | os.PathLike | Sequence[str | os.PathLike],
        templates: InstructionTemplates | None = None, best_checkpoint: str | os.PathLike | None = None,
    ) -> None:
        dirs = [directory] if isinstance(directory, (str, os.PathLike)) else list(directory)
        self.network, self.directories, self.templates = network, [Path(d) for d in dirs], templates
        self.best_checkpoint = Path(best_checkpoint) if best_checkpoint else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from attok_monai.fileio import atomic_write_text

        if self.best_checkpoint is not None and self.best_checkpoint.is_file():
            state = torch.load(self.best_checkpoint, map_location="cpu", weights_only=True)
            self.network.load_state_dict(state.get("network", state) if "network" in state else state)
        for d in self.directories:
            self.network.save_pretrained(d)
            if self.templates is not None:
                atomic_write_text(d / "templates.json", json.dumps(self.templates.to_dict(), indent=2))


def load_pretrained(directory: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> AttTokGPTv:
    """A trained model folder (``save_pretrained``, e.g. ``runs/<run>/model``), optionally with the weights of a
    MONAI checkpoint loaded on top (``checkpoint``: a path, or ``None``/``"none"`` for the folder alone).

    Raises:
        FileNotFoundError: the folder holds no model, or a named checkpoint does not exist.
    """
    from attok_monai.bundle.runs import optional

    directory = Path(directory)
    if not (directory / "model.pt").exists():
        raise FileNotFoundError(
            f"No trained model in {directory}: train the bundle first (configs/train.json) or pass --model_dir."
        )
    model = AttTokGPTv.from_pretrained(directory, map_location=device)
    checkpoint = optional(checkpoint)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file (say --checkpoint none for none).")
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state.get("network", state) if isinstance(state, dict) and "network" in state else state)
    return model.to(device)


def print_summary(metrics_file: str | os.PathLike, mlflow_handler: Any = None, title: str = "validation") -> dict:
    """Print the final metrics and where the MLflow run is; returns the metrics."""
    metrics_file = Path(metrics_file)
    if not metrics_file.exists():
        print(f"[attok] no metrics written ({metrics_file} missing)")
        return {}
    metrics = json.loads(metrics_file.read_text())["metrics"]
    keys = ["open_accuracy", "closed_accuracy", "open_macro_f1", "open_balanced_accuracy", "auc",
            "retrieval_accuracy", "ece", "num_samples"]
    print(f"\n[attok] {title} metrics:")
    for k in keys:
        if k in metrics:
            print(f"  {k:24s} {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"  {k:24s} {metrics[k]}")
    print(f"[attok] report files: {metrics_file.parent}")
    if mlflow_handler is not None:
        client = mlflow_handler.client
        uri = getattr(client, "tracking_uri", None) or getattr(getattr(client, "_tracking_client", None),
                                                               "tracking_uri", "")
        run = getattr(mlflow_handler, "cur_run", None)  # None once the handler closed the run
        if run is None and getattr(mlflow_handler, "experiment", None) is not None:
            runs = client.search_runs(
                [mlflow_handler.experiment.experiment_id],
                filter_string=f"attributes.run_name = '{mlflow_handler.run_name}'", max_results=1,
            )
            run = runs[0] if runs else None
        if run is not None:
            print(f"[attok] MLflow run {run.info.run_id} (experiment {mlflow_handler.experiment_name}) at {uri}")
            print(f"[attok] browse: mlflow ui --backend-store-uri {uri}")
    return metrics


def find_bundle_root(default: str = ".") -> str:
    """The bundle folder of the running config: ``--bundle_root`` wins (a config override), else the parent of
    the ``configs`` folder named by ``--config_file`` on the command line, else ``default``.

    Why not MONAI's own: MONAI 1.6 sets no ``bundle_root`` from ``--config_file`` (model-zoo bundles write
    ``"bundle_root": "."`` and expect to be run from inside the bundle folder); the README's command runs from the
    repository root, so the folder is read off the command line here. Our short CLI and tests pass ``bundle_root``
    explicitly, which wins."""
    import sys

    argv = sys.argv
    for i, a in enumerate(argv):
        val = None
        if a == "--config_file" and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith("--config_file="):
            val = a.split("=", 1)[1]
        if val:
            first = val.strip("[]").split(",")[0].strip().strip("'\"")
            cfg = Path(first).resolve()
            return str(cfg.parent.parent if cfg.parent.name == "configs" else cfg.parent)
    return default


def snapshot_configs(bundle_root: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Copy the bundle's ``configs/*.json`` into ``output_dir/configs`` (logged with the run's artifacts)."""
    import shutil

    src = Path(bundle_root) / "configs"
    dst = Path(output_dir) / "configs"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.json"):
        shutil.copy2(f, dst / f.name)


class MLflowArtifactsHandler:
    """At completion, log a folder to the MLflow run of ``mlflow_handler`` keeping its sub-folder structure
    (MONAI's handler flattens file names). Attach it before the MLFlowHandler that closes the run."""

    def __init__(self, mlflow_handler: Any, directory: str | os.PathLike) -> None:
        self.mlflow_handler, self.directory = mlflow_handler, Path(directory)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        run = getattr(self.mlflow_handler, "cur_run", None)
        if run is not None and self.directory.is_dir():
            self.mlflow_handler.client.log_artifacts(run.info.run_id, str(self.directory))
