"""The GPU path in one short run: does ``train.json + train_qwen25vl.json`` train a Qwen2.5-VL-7B-shaped AttTok model
on one CUDA device, and what does it cost?

On one device, with a model built from the known Qwen2.5-VL-7B dimensions (``attok_monai.flops.qwen25vl_7b_config``)
with random weights (nothing is downloaded) and synthetic RetinaMNIST-layout images written to a scratch folder:

1. a few bf16 training iterations through the real bundle config (``monai.bundle.ConfigWorkflow`` over
   ``configs/train.json`` + ``configs/train_qwen25vl.json``: MONAI trainer, AttTok train step, LoRA r=16, handlers,
   validation, ``save_pretrained``, MLflow logging to a local store) at each image size (default 224 and 448 px,
   batch 8); only ``network_def``'s builder is swapped for :func:`build_random_hf_attok` (same arguments, random
   base weights) and the two full-state ``CheckpointSaver``s are left out (a 7B state dict per save);
2. the same step with plain Hugging Face + PEFT (same model, LoRA, inputs, bf16 autocast, AdamW, clipping; no
   AttTok): the bundle's overhead as a ratio of median step times (target <= 1.05x);
3. ACC forward + backward at K = 1000 and 10000 attributes on the step's visual tokens, as a share of the bundle
   step (target <= 1% at K = 10000);
4. peak device memory of each of those;
5. a save/load round trip of the LoRA adapter and token rows that the bundle wrote (``save_pretrained``): the
   trained model's logits, then logits after perturbing every saved tensor (they must change), then after loading
   the saved folder back (they must equal the first, bit for bit).

It writes ``gpu_check.json`` and ``gpu_check.md`` (a short table) under ``--out``, prints the table and what it
could not do and why, and exits 1 when a part failed (missed targets are results, not failures).

    python benchmarks/gpu_check.py --model-config 7b --out "$OUT"          # on the GPU machine (see gpu_check.sh)
    python benchmarks/gpu_check.py --model-config tiny --device cpu --out /tmp/gc   # the same logic on CPU

The CPU test suite runs the ``tiny`` configuration (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]
#: Qwen2-VL's chat template (default system message, one image then the text), without tools or video.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TARGETS = {"overhead_ratio_max": 1.05, "acc_share_max": 0.01, "acc_share_k": 10000}
#: per model configuration: image sizes, batch, LLM vocabulary (None = the config's), ACC timing repeats
PRESETS: dict[str, dict[str, Any]] = {
    "7b": {"sizes": (224, 448), "batch": 8, "vocab_size": None, "acc_repeats": 20},
    "tiny": {"sizes": (56, 112), "batch": 2, "vocab_size": 2048, "acc_repeats": 3},
}

__all__ = [
    "build_random_hf_attok", "random_base_model", "write_model_folder", "write_synthetic_medmnist",
    "strip_components", "plain_inputs", "bundle_samples", "doc_from_report", "main",
]


# ---------------------------------------------------------------------------------------------------- model
def _torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def random_base_model(model_dir: str | os.PathLike, dtype: str | torch.dtype | None = "bfloat16",
                      attn_implementation: str | None = None, device: str | torch.device | None = None):
    """A ``...ForConditionalGeneration`` from the ``config.json`` in ``model_dir`` with random weights, built directly
    on ``device`` in ``dtype`` (no CPU initialisation of a 7B model, no weights file)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_dir)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.device(dev):
        return AutoModelForImageTextToText.from_config(config, dtype=_torch_dtype(dtype))


def build_random_hf_attok(
    model_id: str,
    vocabulary: Any,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    dtype: str | None = "bfloat16",
    attn_implementation: str | None = None,
    lora: dict | bool | None = True,
    gradient_checkpointing: bool = False,
    max_length: int = 2048,
    system_prompt: str | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    config: Any = None,
    **config_overrides: Any,
):
    """:func:`attok_monai.networks.builders.build_hf_attok` with the base weights drawn at random on ``device`` instead
    of loaded: ``model_id`` is a folder written by :func:`write_model_folder` (config, tokenizer, image processor).
    The backbone keeps ``model_id``, so the bundle's ``save_pretrained`` writes the usual folder (adapter, token
    rows, AttTok weights, tokenizer)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from attok_monai.attributes import AttributeVocabulary
    from attok_monai.networks.nets import AttTokConfig, AttTokGPTv
    from attok_monai.networks.nets.hf_qwen2vl import Qwen2VLBackbone, _set_pixel_limits

    config = AttTokConfig.coerce(config, **config_overrides)  # refuse an unknown key before building anything
    if seed is not None:
        torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = random_base_model(model_id, dtype, attn_implementation, dev)
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_id)  # the same class with or without torchvision
    _set_pixel_limits(image_processor, min_pixels, max_pixels)
    model_kwargs = {k: v for k, v in (("dtype", dtype), ("attn_implementation", attn_implementation)) if v is not None}
    with torch.device(dev):  # the AttTok modules (book, ACC, ACM) start on the model's device
        backbone = Qwen2VLBackbone(
            model, tokenizer, image_processor, chat_template=tokenizer.chat_template, model_id=str(model_id),
            model_kwargs=model_kwargs, lora=lora, gradient_checkpointing=gradient_checkpointing,
            system_prompt=system_prompt, max_length=max_length,
        )
        return AttTokGPTv(backbone, AttributeVocabulary.coerce(vocabulary), config)


def offline_tokenizer(texts: Sequence[str], vocab_size: int = 1500):
    """A byte-level BPE tokenizer with the Qwen-VL special tokens, trained on ``texts`` (no hub access). Words of the
    bundle's questions and answers come out as about one token each, as with Qwen's own tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=QWEN_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    out.chat_template = CHAT_TEMPLATE
    return out


def write_model_folder(directory: str | os.PathLike, model_config: str, texts: Sequence[str]) -> Path:
    """A model folder without weights: ``config.json`` (Qwen2.5-VL-7B dimensions for ``"7b"``, a few-million-parameter
    model of the same structure for ``"tiny"``, special-token ids matched to the tokenizer), the offline tokenizer
    with the chat template, and a Qwen2-VL image processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from attok_monai.flops import qwen25vl_7b_config, qwen25vl_tiny_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = offline_tokenizer(list(texts) + ["You are a helpful assistant.", "system user assistant"])
    config = qwen25vl_7b_config() if model_config == "7b" else qwen25vl_tiny_config()
    vocab = PRESETS[model_config]["vocab_size"]
    if vocab is not None:
        config.text_config.vocab_size = vocab
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config.image_token_id = ids["<|image_pad|>"]
    config.video_token_id = ids["<|video_pad|>"]
    config.vision_start_token_id = ids["<|vision_start|>"]
    config.vision_end_token_id = ids["<|vision_end|>"]
    for cfg in (config, config.text_config):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = ids["<|endoftext|>"], ids["<|im_end|>"], None
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil(min_pixels=224 * 224, max_pixels=224 * 224).save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------------- data, config
def write_synthetic_medmnist(path: str | os.PathLike, num_classes: int, n_train: int, n_val: int, size: int = 28,
                             seed: int = 0) -> Path:
    """A MedMNIST-layout ``.npz`` (``{split}_images`` uint8 (N, size, size, 3), ``{split}_labels`` (N, 1)) of random
    images with labels cycling over the classes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % num_classes).reshape(n, 1).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _target(item: Any) -> str:
    return str(item.get("_target_", "")) if isinstance(item, dict) else ""


def strip_components(config: dict, mlflow: bool = True) -> list[str]:
    """Edit a merged bundle config in place for the check: drop the ``CheckpointSaver`` handlers and the ``run``
    items that attach the checkpoint saver/loader (each save is a full 7B state dict); without ``mlflow`` also
    drop the MLflow handlers and pass ``None`` for ``@train#mlflow`` elsewhere. Returns what was removed."""
    removed: list[str] = []
    drop = {"monai.handlers.CheckpointSaver"}
    if not mlflow:
        drop |= {"monai.handlers.MLFlowHandler", "attok_monai.handlers.mlflow_store.MLFlowHandler",
                 "attok_monai.handlers.MLflowArtifactsHandler",
                 "attok_monai.handlers.mlflow_run.MLflowRunHandler", "attok_monai.handlers.mlflow_model.MLflowModelHandler"}
    for section in ("train", "validate"):
        handlers = config.get(section, {}).get("handlers")
        if not isinstance(handlers, list):
            continue
        kept = []
        for h in handlers:
            if _target(h) in drop:
                removed.append(f"{section}#handlers: {_target(h)}")
            elif not mlflow and isinstance(h, str) and h.replace("::", "#") == "@train#mlflow":
                removed.append(f"{section}#handlers: @train#mlflow")
            else:
                kept.append(h)
        config[section]["handlers"] = kept
    for key in ("run", "finalize"):
        items = config.get(key)
        if not isinstance(items, list):
            continue
        kept = []
        for expr in items:
            if isinstance(expr, str) and ("checkpoint_saver" in expr or "checkpoint_loader" in expr):
                removed.append(f"{key}: {expr}")
                continue
            if not mlflow and isinstance(expr, str) and ("@train#mlflow" in expr or "@train::mlflow" in expr):
                expr = expr.replace("@train#mlflow", "None").replace("@train::mlflow", "None")
            kept.append(expr)
        config[key] = kept
    return removed


def bundle_texts(bundle: Path) -> tuple[list[str], int, str, int]:
    """The bundle's questions and keywords (to train the offline tokenizer), its class count, dataset name and
    image size, read from ``configs/train.json``."""
    from attok_monai.configs import read_config

    parser = read_config([bundle / "configs" / "train.json", bundle / "configs" / "train_qwen25vl.json"])  # %macros pulled in
    labels = parser["attributes"]["labels"]
    texts = list(parser["open_questions"]) + list(parser["closed_questions"])
    texts += [k for v in labels.values() for k in v["keywords"]] + [parser["modality_name"]]
    return texts, len(labels), str(parser["dataset_name"]), int(parser["image_size"])


# ---------------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


class StepTimer:
    """Ignite handler: wall time of each iteration from the end of its batch fetch to the end of its
    ``ITERATION_COMPLETED`` handlers (attached last, so every other handler's cost is inside), the batch fetch time,
    the loss, the LLM tokens and the device's peak memory at the end of each iteration."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step_s: list[float] = []
        self.fetch_s: list[float] = []
        self.losses: list[float] = []
        self.tokens: list[int] = []
        self.peak_mib: float | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.GET_BATCH_STARTED, self._fetch_start)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._fetch_end)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._end)

    def _fetch_start(self, engine: Any) -> None:
        self._t_fetch = time.perf_counter()

    def _fetch_end(self, engine: Any) -> None:
        _sync(self.device)
        self._t0 = time.perf_counter()
        self.fetch_s.append(self._t0 - self._t_fetch)

    def _end(self, engine: Any) -> None:
        _sync(self.device)
        self.step_s.append(time.perf_counter() - self._t0)
        out = engine.state.output
        if isinstance(out, dict):
            self.losses.append(float(out.get("loss", float("nan"))))
            self.tokens.append(int(out.get("num_tokens", 0)))
        self.peak_mib = _peak_mib(self.device)


# ---------------------------------------------------------------------------------------------------- (1) + (5)
def run_bundle(bundle: Path, model_dir: Path, data_root: Path, work: Path, px: int, batch: int, steps: int,
               device: torch.device, tracking_uri: str | None, round_trip: bool) -> dict:
    """(1) ``train.json + train_qwen25vl.json`` for ``1 + steps`` iterations (the first is warm-up) and one
    validation pass; (5) optionally the adapter round trip on the trained network."""
    from monai.bundle import ConfigWorkflow

    _free(device)  # what a failed earlier part left behind
    configs = bundle / "configs"
    run_dir = work / f"run_{px}"
    overrides = {
        "bundle_root": str(bundle), "model_id": str(model_dir), "min_pixels": px * px, "max_pixels": px * px,
        "device": f"$torch.device('{device}')", "data_root": str(data_root), "download": False, "epochs": 1,
        "epoch_length": 1 + steps, "limit_train": batch * (1 + steps), "limit_val": batch, "batch_size": batch,
        "val_batch_size": batch, "tsne": False, "resume": False, "output_dir": str(run_dir),
        "ckpt_dir": str(work / f"models_{px}"), "run_name": f"gpu_check_{px}px",
        "mlflow_tracking_uri": tracking_uri,
    }
    t0 = time.perf_counter()
    wf = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "train_qwen25vl.json")],
        meta_file=str(configs / "metadata.json"), workflow_type="train", **overrides,
    )
    # the shared base's %macros pulled in first (network_def and the handler lists are macros until then)
    wf.parser.resolve_macro_and_relative_ids()
    wf.parser.update({"network_def#_target_": "benchmarks.gpu_check.build_random_hf_attok", "network_def#device": "@device"})
    removed = strip_components(wf.parser.config, mlflow=tracking_uri is not None)
    wf.initialize()
    network = wf.parser.get_parsed_content("network")
    trainer = wf.parser.get_parsed_content("train#trainer")
    build_s = time.perf_counter() - t0
    timer = StepTimer(device)
    timer.attach(trainer)
    _reset_peak(device)
    t1 = time.perf_counter()
    wf.run()
    run_s = time.perf_counter() - t1
    peak_run = _peak_mib(device)
    wf.finalize()
    steady = timer.step_s[1:]
    result = {
        "px": px, "iterations": len(timer.step_s), "step_s": timer.step_s, "step_s_median": _median(steady),
        "fetch_s_median": _median(timer.fetch_s[1:]), "losses": timer.losses,
        "tokens_per_step": _median(timer.tokens[1:]), "peak_memory_train_mib": timer.peak_mib,
        "peak_memory_with_validation_mib": peak_run, "build_s": build_s, "run_s": run_s,
        "num_parameters": sum(p.numel() for p in network.parameters()),
        "trainable_parameters": sum(p.numel() for p in network.parameters() if p.requires_grad),
        "removed_from_config": removed, "saved_model": str(run_dir / "model"),
        "train_metrics": _numbers(trainer.state.metrics),
        "val_metrics": _numbers(wf.parser.get_parsed_content("validate#evaluator").state.metrics),
    }
    if len(timer.step_s) != 1 + steps:
        raise RuntimeError(f"the bundle ran {len(timer.step_s)} iterations, expected {1 + steps}")
    if round_trip:
        result["round_trip"] = adapter_round_trip(network, run_dir / "model", device, amp=bool(wf.parser["amp"]))
    del network, trainer, wf
    _free(device)
    result["memory_after_free_mib"] = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return result


@torch.no_grad()
def adapter_round_trip(network: Any, saved: Path, device: torch.device, amp: bool = True) -> dict:
    """(5) Logits of the trained network; logits after perturbing every tensor that ``save_pretrained`` wrote
    (LoRA, attribute rows of ``embed_tokens``/``lm_head``, book, ACC, ACM); logits after loading ``saved`` back
    (``Qwen2VLBackbone.load_weights`` + ``model.pt``)."""
    from attok_monai.engines.steps import autocast_for

    bb = network.backbone
    network.eval()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 28, 28, generator=g)
    prompt = "what is the diagnosis of this image?"
    answers = [network.format_answer([0], None), network.format_answer([len(network.vocabulary) - 1], None)]
    batch = bb.build_inputs([prompt, prompt], answers, images)

    def logits() -> torch.Tensor:
        with autocast_for(device, amp):
            return bb.forward_inputs(batch)[0].float().cpu()

    before = logits()
    again = logits()  # run-to-run spread of the same forward (0 when the kernels are deterministic)
    ids = torch.as_tensor(bb.trainable_token_ids, device=bb.device)
    for name, p in network.named_parameters():
        if "lora_" in name or not name.startswith("backbone."):
            p.add_(0.05 * torch.randn_like(p))
    for w in {id(bb.input_embeddings().weight): bb.input_embeddings().weight,
              id(bb.output_embeddings().weight): bb.output_embeddings().weight}.values():
        w[ids] += 0.05 * torch.randn_like(w[ids])
    perturbed = logits()
    bb.load_weights(saved)
    state = torch.load(saved / "model.pt", map_location=bb.device, weights_only=True)
    result = network.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("backbone.")]
    after = logits()
    files = sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    spread = float((before - again).abs().max())
    diff = float((before - after).abs().max())
    return {
        "perturbation_changed_logits": float((before - perturbed).abs().max()) > spread,
        "logits_bit_equal_after_load": torch.equal(before, after),
        "logits_equal_after_load": torch.equal(before, after) or diff <= spread,
        "max_abs_diff_after_load": diff, "run_to_run_max_abs_diff": spread,
        "missing_keys": missing, "unexpected_keys": list(result.unexpected_keys), "files": files,
        "bytes_saved": sum(p.stat().st_size for p in saved.rglob("*") if p.is_file()),
    }


# ---------------------------------------------------------------------------------------------------- (2)
def plain_inputs(tokenizer: Any, image_processor: Any, chat_template: str, merge_size: int, image_token_id: int,
                 prompts: Sequence[str], answers: Sequence[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a Qwen2-VL processor makes for a plain HF training step: the chat-formatted prompt with the image
    placeholder expanded to the merged visual token count, the answer and ``<|im_end|>``, right padding, labels
    -100 outside the answer."""
    vis = image_processor(images=[im.float() for im in images], do_rescale=False, return_tensors="pt")
    sizes = (vis["image_grid_thw"].prod(-1) // merge_size**2).tolist()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows, labels = [], []
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             chat_template=chat_template)
        ids = tokenizer.encode(text, add_special_tokens=False)
        k = ids.index(image_token_id)
        head = ids[:k] + [image_token_id] * sizes[i] + ids[k + 1:]
        ans = tokenizer.encode(answer, add_special_tokens=False) + [end]
        rows.append(head + ans)
        labels.append([-100] * len(head) + ans)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    return {
        "input_ids": input_ids,
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "mm_token_type_ids": (input_ids == image_token_id).int(),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
        "pixel_values": vis["pixel_values"], "image_grid_thw": vis["image_grid_thw"],
    }


def bundle_samples(bundle: Path, data_root: Path, n: int) -> list[tuple[torch.Tensor, str, str]]:
    """``n`` training samples as the bundle's own dataset makes them (images after its transforms, its instruction
    questions), each with the plain-text answer of the no-AttTok baseline (the class keyword)."""
    from attok_monai.configs import read_config

    parser = read_config([bundle / "configs" / "train.json", bundle / "configs" / "train_qwen25vl.json"])  # %macros pulled in
    parser.update({"bundle_root": str(bundle), "data_root": str(data_root), "download": False, "limit_train": n})
    dataset = parser.get_parsed_content("train#dataset")
    vocab = parser.get_parsed_content("vocabulary")
    out = []
    for i in range(n):
        item = dataset[i]
        label = int(np.asarray(item["label"]).reshape(-1)[0])
        out.append((torch.as_tensor(item["image"]).float(), str(item["question"]), vocab.format_text_answer([label])))
    return out


def run_plain(model_dir: Path, sizes: Sequence[int], batch: int, steps: int, device: torch.device, settings: dict,
              samples: Sequence[tuple[torch.Tensor, str, str]]) -> list[dict]:
    """(2) The same training step with plain ``transformers`` + ``peft``: random base from the same folder, LoRA with
    the bundle's settings on the same layers, gradient checkpointing, bf16 autocast, AdamW (lr, weight decay),
    gradient clipping at 1, on the bundle's images and questions (:func:`bundle_samples`) with plain-text answers;
    the inputs are built inside the timed step, as the bundle's step builds them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from attok_monai.engines.steps import autocast_for
    from attok_monai.networks.nets.hf_qwen2vl import _set_pixel_limits, default_lora_config

    _free(device)
    torch.manual_seed(settings["seed"])
    t0 = time.perf_counter()
    model = random_base_model(model_dir, settings["dtype"], settings["attn_implementation"], device)
    for p in model.parameters():
        p.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(**{**default_lora_config(), **(settings["lora"] or {})}))
    if settings["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    build_s = time.perf_counter() - t0
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_dir)
    cfg = model.get_base_model().config
    merge = cfg.vision_config.spatial_merge_size
    results = []
    model.train()
    for px in sizes:
        _set_pixel_limits(image_processor, px * px, px * px)
        _reset_peak(device)
        times, losses, tokens = [], [], []
        for step in range(1 + steps):
            chunk = [samples[(step * batch + i) % len(samples)] for i in range(batch)]
            images = torch.stack([c[0] for c in chunk])
            _sync(device)
            t = time.perf_counter()
            inputs = plain_inputs(tokenizer, image_processor, tokenizer.chat_template, merge, cfg.image_token_id,
                                  [c[1] for c in chunk], [c[2] for c in chunk], images)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with autocast_for(device, settings["amp"]):
                loss = model(**inputs, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            _sync(device)
            times.append(time.perf_counter() - t)
            tokens.append(int(inputs["attention_mask"].sum()))
        results.append({
            "px": px, "step_s": times, "step_s_median": _median(times[1:]), "losses": losses,
            "tokens_per_step": _median(tokens[1:]), "peak_memory_mib": _peak_mib(device), "build_s": build_s,
            "trainable_parameters": sum(p.numel() for p in params),
            "lora_b_nonzero": any(bool(p.detach().abs().sum() > 0) for n, p in model.named_parameters()
                                  if "lora_B" in n),  # LoRA's B starts at zero: nonzero once a step was taken
        })
    del model, opt, params
    _free(device)
    return results


# ---------------------------------------------------------------------------------------------------- (3)
def acc_cost(dim: int, k: int, batch: int, n_visual: int, device: torch.device, heads: int = 1, gamma: float = 0.1,
             inner_dim: int | None = None, amp: bool = True, repeats: int = 20, dtype: torch.dtype = torch.bfloat16
             ) -> dict:
    """(3) ACC forward + backward (into its weights and the book) on (batch, n_visual, dim) merged visual tokens in
    the model's ``dtype`` with a K-attribute book, as in the bundle (fp32 ACC and book under bf16 autocast on CUDA);
    median seconds over ``repeats`` after 3 warm-up runs, and the peak memory of the ACC part alone."""
    from attok_monai.engines.steps import autocast_for
    from attok_monai.networks.blocks import ACCAdapter, EmbeddingBook

    torch.manual_seed(0)
    _free(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    acc = ACCAdapter(dim, num_heads=heads, gamma=gamma, inner_dim=inner_dim).to(device)
    book = EmbeddingBook(k, dim).to(device)
    book.prototypes.normal_(std=0.02)
    book.prototype_initialized.fill_(True)
    f = torch.randn(batch, n_visual, dim, device=device, dtype=dtype)
    _reset_peak(device)
    times = []
    for i in range(3 + repeats):
        acc.zero_grad(set_to_none=True)
        book.zero_grad(set_to_none=True)
        _sync(device)
        t = time.perf_counter()
        with autocast_for(device, amp):
            out = acc(f, book.tokens(), book.key_padding_mask())
        out.float().square().mean().backward()
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    peak = _peak_mib(device)
    del acc, book, f
    return {"k": k, "n_visual": n_visual, "fwd_bwd_s_median": _median(times), "fwd_bwd_s_all": times,
            "peak_memory_mib": None if peak is None else peak - base / 2**20}


# ---------------------------------------------------------------------------------------------------- report
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "cuda": str(torch.version.cuda)}
    for name in ("torch", "transformers", "peft", "monai", "pytorch-ignite", "mlflow-skinny", "mlflow", "sqlalchemy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _probe_store(uri: str) -> None:
    """Create an experiment and a run with one metric in the store at ``uri`` (raises when the store cannot work)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment(f"gpu_check_probe_{os.getpid()}_{time.time_ns()}"))
    client.log_metric(run.info.run_id, "probe", 1.0)
    client.set_terminated(run.info.run_id)


def _mlflow_store(work: Path) -> tuple[str | None, str]:
    """A local tracking URI that was seen to work: sqlite (needs SQLAlchemy and Alembic), else MLflow's file store;
    None, with the reason, when mlflow is not installed or neither store works (the check then logs nothing)."""
    try:
        import mlflow  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a dependency of the wrong version
        return None, f"mlflow not installed: skipped logging ({type(e).__name__}: {e})"
    reasons = []
    for uri, name in ((f"sqlite:///{work / 'mlflow.db'}", "sqlite"), ((work / "mlruns").as_uri(), "file store")):
        if name == "file store":
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        try:
            _probe_store(uri)
            return uri, name + (f" ({'; '.join(reasons)})" if reasons else "")
        except Exception as e:  # noqa: BLE001 - try the next store, say why
            reasons.append(f"{name} failed: {type(e).__name__}: {e}")
    return None, "no MLflow store worked: skipped logging (" + "; ".join(reasons) + ")"


def _mlflow_summary(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    return {"tracking_uri": uri, "experiment": experiment, "runs": [
        {"run_name": r.info.run_name, "status": r.info.status, "metrics": sorted(r.data.metrics),
         "params": len(r.data.params)} for r in runs]}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    """The short table: per image size, bundle and plain step, overhead, ACC share, peak memory; then the round trip,
    MLflow and what was not done."""
    dev = report["device"]
    lines = [
        f"GPU check, {report['date']}, {dev['device_name']} ({report['model_config']} model, "
        f"{_fmt(report.get('num_parameters'), ',d') if report.get('num_parameters') else 'n/a'} parameters, batch "
        f"{report['batch']}, {report['steps']} timed steps after 1 warm-up, torch {report['versions']['torch']}, "
        f"transformers {report['versions']['transformers']}, peft {report['versions']['peft']}).",
        "",
    ]
    if report["model_config"] != "7b" or not str(dev["device"]).startswith("cuda"):
        lines += ["Not the GPU path's cost: a CPU and/or tiny-model run checks the logic only.", ""]
    lines += [
        "| px | visual tokens | tokens/step | AttTok bundle step (s) | plain HF+PEFT step (s) | overhead (target "
        f"<= {TARGETS['overhead_ratio_max']}x) | ACC K=1000 | ACC K=10000 (target <= 1%) | peak GiB bundle / plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def gib(x: float | None) -> str:
        return "n/a" if x is None else f"{x / 1024:.1f}"

    for row in report["rows"]:
        shares = {a["k"]: a.get("share_of_step") for a in row.get("acc", [])}

        def pct(k: int, shares: dict = shares) -> str:
            s = shares.get(k)
            return "n/a" if s is None else f"{100 * s:.3g}%"

        lines.append(
            f"| {row['px']} | {row.get('visual_tokens', 'n/a')} | {_fmt(row.get('tokens_per_step'), '.0f')} | "
            f"{_fmt(row.get('bundle_step_s'))} | {_fmt(row.get('plain_step_s'))} | "
            f"{_fmt(row.get('overhead_ratio'), '.3f')}x | {pct(1000)} | {pct(10000)} | "
            f"{gib(row.get('bundle_peak_mib'))} / {gib(row.get('plain_peak_mib'))} |"
        )
    rt = report.get("round_trip")
    if rt:
        lines += ["", f"Round trip of the saved adapter and token rows: logits equal after load: "
                      f"{rt['logits_equal_after_load']} (bit-equal: {rt['logits_bit_equal_after_load']}, max |diff| "
                      f"{rt['max_abs_diff_after_load']:.3g}, run-to-run {rt['run_to_run_max_abs_diff']:.3g}); the "
                      f"perturbation changed them: {rt['perturbation_changed_logits']}; "
                      f"{rt['bytes_saved'] / 2**20:.1f} MiB saved."]
    ml = report.get("mlflow", {})
    lines += ["", f"MLflow: {ml.get('status', 'n/a')}; runs logged: {len(ml.get('runs', []))}."]
    t = report.get("targets_met", {})
    if t:
        lines += ["", "Targets: " + "; ".join(f"{k}: {v}" for k, v in t.items()) + "."]
    if report["not_done"]:
        lines += ["", "Not done:"] + [f"- {x}" for x in report["not_done"]]
    return "\n".join(lines) + "\n"


def _write(out: Path, report: dict) -> None:
    from attok_monai.fileio import atomic_write_text

    atomic_write_text(out / "gpu_check.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "gpu_check.md", markdown(report))


def _phase(report: dict, name: str, fn: Callable[[], Any], deadline: float) -> Any:
    """Run one part; on failure record it in ``not_done`` (with the error's last lines) and go on."""
    if time.perf_counter() > deadline:
        report["not_done"].append(f"{name}: skipped, the time budget (--budget-s) was spent")
        return None
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - every part reports its own failure and the check goes on
        tail = "".join(traceback.format_exception(e)).strip().splitlines()[-6:]
        report["not_done"].append(f"{name}: failed: {type(e).__name__}: {e}")
        report["failed"].append(name)
        report.setdefault("errors", []).append({"part": name, "traceback_tail": tail})
        print(f"[gpu_check] {name} failed:\n" + "\n".join(tail), file=sys.stderr)
        return None


def _run_parts(report: dict, args: argparse.Namespace, bundle: Path, work: Path, out: Path, device: torch.device,
               sizes: Sequence[int], batch: int, preset: dict, tracking_uri: str | None, deadline: float) -> None:
    """Parts (1) to (5) in order, each recorded in ``report`` (and ``gpu_check.json`` rewritten after each)."""

    def prepare():
        texts, n_classes, dataset, image_size = bundle_texts(bundle)
        from attok_monai.data.medmnist import medmnist_file_info

        data_root = work / "data"
        write_synthetic_medmnist(data_root / medmnist_file_info(dataset, image_size)["file"], n_classes,
                                 n_train=batch * (1 + args.steps), n_val=batch, size=image_size)
        t = time.perf_counter()
        model_dir = write_model_folder(work / "model", args.model_config, texts)
        return data_root, model_dir, time.perf_counter() - t


    prepared = _phase(report, "prepare (synthetic data, model folder)", prepare, deadline)
    rows = {px: {"px": px} for px in sizes}
    report["rows"] = list(rows.values())
    if prepared is not None:
        data_root, model_dir, _ = prepared
        from transformers import AutoConfig

        from attok_monai.flops import visual_token_count

        config = AutoConfig.from_pretrained(model_dir)
        dim = config.text_config.hidden_size
        for px in sizes:
            rows[px]["visual_tokens"] = visual_token_count(px, config)
        # (1) + (5)
        for i, px in enumerate(sizes):
            res = _phase(report, f"(1) bundle training at {px} px", lambda px=px, i=i: run_bundle(
                bundle, model_dir, data_root, work, px, batch, args.steps, device, tracking_uri, round_trip=i == 0),
                deadline)
            if res is not None:
                report.setdefault("bundle_runs", []).append(res)
                rows[px].update(bundle_step_s=res["step_s_median"], bundle_peak_mib=res["peak_memory_train_mib"],
                                tokens_per_step=res["tokens_per_step"])
                report["num_parameters"] = res["num_parameters"]
                if "round_trip" in res:
                    report["round_trip"] = res["round_trip"]
                    if not res["round_trip"]["logits_equal_after_load"]:
                        report["not_done"].append("(5) round trip: logits differ after loading the saved folder")
                        report["failed"].append("(5) round trip")
            _write(out, report)
        # (2)
        from attok_monai.configs import read_config

        parser = read_config([bundle / "configs" / "train.json", bundle / "configs" / "train_qwen25vl.json"])  # %macros pulled in
        settings = {k: parser[k] for k in ("dtype", "attn_implementation", "lora", "gradient_checkpointing", "amp",
                                           "lr", "weight_decay", "seed")}
        plain = _phase(report, "(2) plain HF + PEFT step", lambda: run_plain(
            model_dir, sizes, batch, args.steps, device, settings,
            bundle_samples(bundle, data_root, batch * (1 + args.steps))), deadline)
        for res in plain or []:
            report.setdefault("plain_runs", []).append(res)
            row = rows[res["px"]]
            row.update(plain_step_s=res["step_s_median"], plain_peak_mib=res["peak_memory_mib"])
            if row.get("bundle_step_s") and res["step_s_median"]:
                row["overhead_ratio"] = row["bundle_step_s"] / res["step_s_median"]
        _write(out, report)
        # (3) + (4)
        for px in sizes:
            for k in args.ks:
                res = _phase(report, f"(3) ACC at K={k}, {px} px", lambda px=px, k=k: acc_cost(
                    dim, k, batch, rows[px]["visual_tokens"], device, heads=int(parser["acc_heads"]),
                    gamma=float(parser["gamma"]), inner_dim=parser.get("acc_inner_dim"), amp=bool(parser["amp"]),
                    repeats=preset["acc_repeats"], dtype=_torch_dtype(parser["dtype"])), deadline)
                if res is not None:
                    step = rows[px].get("bundle_step_s")
                    res["share_of_step"] = res["fwd_bwd_s_median"] / step if step else None
                    rows[px].setdefault("acc", []).append(res)
        if tracking_uri is not None:
            summary = _phase(report, "MLflow summary", lambda: _mlflow_summary(tracking_uri, parser.get_parsed_content(
                "mlflow_experiment")), deadline)
            if summary:
                report["mlflow"].update(summary)
            if (work / "mlflow.db").is_file() and (work / "mlflow.db").stat().st_size < 16 * 2**20:
                shutil.copy2(work / "mlflow.db", out / "mlflow.db")


DOC_SECTION = "gpu_check"
DOC_INTRO = (
    "## The GPU path in one run (issue 20)\n\n"
    "`benchmarks/gpu_check.py` through `benchmarks/gpu_check.sh` (README, \"Checking the GPU path in one call\"): "
    "`train.json + train_qwen25vl.json` of `fundus_dr` on a random-weight Qwen2.5-VL-7B-shaped model (LoRA r=16, bf16, "
    "batch 8, synthetic images, MLflow to a local store), against the same step in plain transformers + PEFT; ACC "
    "forward+backward at K = 1000 and 10000 as a share of the bundle step; peak memory; adapter round trip. "
    "Step times are medians after one warm-up step; the text tokens come from an offline tokenizer (close to, not "
    "equal to, Qwen's counts); the visual token counts are exact.\n"
)


def doc_from_report(json_path: str | os.PathLike, doc: Path | None = None) -> str:
    """Write the ``gpu_check`` section of docs/benchmarks.md from a ``gpu_check.json`` measured on a GPU with the 7B
    model (a CPU or tiny report is refused: its times say nothing about the GPU path). Returns the markdown."""
    from benchmarks._report import DOC, write_section

    report = json.loads(Path(json_path).read_text())
    if report.get("model_config") != "7b" or not str(report.get("device", {}).get("device", "")).startswith("cuda"):
        raise SystemExit(f"{json_path}: not a 7B run on CUDA (model {report.get('model_config')}, device "
                         f"{report.get('device', {}).get('device')}); docs/benchmarks.md left as it is.")
    text = DOC_INTRO + "\n" + markdown(report)
    write_section(DOC_SECTION, text, doc or DOC)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    from attok_monai.configs import install

    install()  # the bundles' %attok_monai/configs/... macros resolve from the scratch folder too
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--to-doc":  # python benchmarks/gpu_check.py --to-doc gpu_check.json [doc.md]
        doc_from_report(argv[1], Path(argv[2]) if len(argv) > 2 else None)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog="python benchmarks/gpu_check.py --to-doc gpu_check.json: write the measured "
                                       "7B table into docs/benchmarks.md")
    p.add_argument("--model-config", choices=sorted(PRESETS), default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per image size (after 1 warm-up)")
    p.add_argument("--sizes", type=int, nargs="+", help="image sizes in px (default 224 448; tiny: 56 112)")
    p.add_argument("--batch", type=int, help="batch size (default 8; tiny: 2)")
    p.add_argument("--ks", type=int, nargs="+", default=[1000, 10000], help="book sizes K for the ACC cost")
    p.add_argument("--bundle", default=str(REPO / "bundles" / "fundus_dr"))
    p.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md (and mlflow.db)")
    p.add_argument("--work", help="scratch folder (models, runs, data; default: a temporary folder, removed)")
    p.add_argument("--budget-s", type=float, default=400.0, help="skip the parts not started after this many s")
    args = p.parse_args(argv)

    start = time.perf_counter()
    deadline = start + args.budget_s
    preset = PRESETS[args.model_config]
    sizes = args.sizes or list(preset["sizes"])
    batch = args.batch or preset["batch"]
    device = torch.device(args.device)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = Path(args.bundle).resolve()
    tmp = None if args.work else tempfile.mkdtemp(prefix="attok_gpu_check_")
    work = Path(args.work or tmp).resolve()
    work.mkdir(parents=True, exist_ok=True)
    from attok_monai.provenance import device_info

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model_config": args.model_config,
        "device": device_info(device), "versions": _versions(), "batch": batch, "steps": args.steps, "sizes": sizes,
        "ks": args.ks, "bundle": str(bundle), "targets": TARGETS, "rows": [], "not_done": [], "failed": [],
        "tokenizer": "offline byte-level BPE trained on the bundle's questions and keywords (not Qwen's); text "
                     "token counts approximate Qwen's, visual token counts are exact",
    }
    if device.type == "cuda" and not torch.cuda.is_available():
        report["not_done"].append(f"everything: --device {device} but CUDA is not available")
        report["failed"].append("device")
        _write(out, report)
        print(markdown(report))
        return 1
    tracking_uri, status = _mlflow_store(work)
    report["mlflow"] = {"status": status}
    if tracking_uri is None:
        report["not_done"].append(status)
    with contextlib.chdir(work):  # MLflow's default artifact folder (./mlartifacts) lands in the scratch folder
        _run_parts(report, args, bundle, work, out, device, sizes, batch, preset, tracking_uri, deadline)
    met = {}
    for row in report["rows"]:
        if row.get("overhead_ratio") is not None:
            met[f"overhead {row['px']} px <= {TARGETS['overhead_ratio_max']}x"] = (
                row["overhead_ratio"] <= TARGETS["overhead_ratio_max"])
        for a in row.get("acc", []):
            if a["k"] == TARGETS["acc_share_k"] and a.get("share_of_step") is not None:
                met[f"ACC K={a['k']} {row['px']} px <= 1%"] = a["share_of_step"] <= TARGETS["acc_share_max"]
    report["targets_met"] = met
    report["elapsed_s"] = time.perf_counter() - start
    _write(out, report)
    print(markdown(report))
    if tmp is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
