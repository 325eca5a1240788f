"""FLOP counting with ``torch.utils.flop_counter`` and the Qwen2.5-VL-7B reference costs (forward, LoRA step).

Counts are taken by running the computation on the ``meta`` device (no memory, no arithmetic) under
:class:`~torch.utils.flop_counter.FlopCounterMode`, which counts matrix products (``mm``, ``addmm``, ``bmm``,
attention kernels, convolutions) as ``2 * multiply-adds``; element-wise ops, norms and softmax count as zero.

The 7B reference is :func:`qwen25vl_7b_config` (the published Qwen2.5-VL-7B-Instruct dimensions) built on ``meta``
with random (unallocated) weights, fed a sample laid out as the Qwen2.5-VL processor lays it out: an image of
``px x px`` becomes ``(px / 14)^2`` patches of ``3 * 2 * 14 * 14`` values (two temporal copies), which the merger turns
into ``(px / 28)^2`` visual tokens (224 px -> 64, 448 px -> 256), placed between ``<|vision_start|>`` and
``<|vision_end|>`` and followed by ``prompt_tokens`` text tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "LORA_TARGETS",
    "acc_forward_flops",
    "acm_forward_flops",
    "count_flops",
    "qwen25vl_7b_config",
    "qwen25vl_analytic_forward_flops",
    "qwen25vl_forward_flops",
    "qwen25vl_sample",
    "qwen25vl_tiny_config",
    "qwen25vl_train_step_flops",
    "visual_token_count",
]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _PromoteToMeta(TorchFunctionMode):
    """Moves the non-meta tensor arguments of any op that also has a meta tensor argument to ``meta``.

    Lets a model whose weights live on ``meta`` run with index tensors (``input_ids``, ``grid_thw``) kept on the CPU,
    so data-dependent Python code (``.tolist()``, ``.item()``) on those indices still works.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in flat):

            def to_meta(t):
                return t.to("meta") if isinstance(t, torch.Tensor) and t.device.type != "meta" else t

            args, kwargs = tree_map(to_meta, args), tree_map(to_meta, kwargs)
        return func(*args, **kwargs)


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs (``2 *`` multiply-adds of matrix products) of ``fn(*args, **kwargs)``, forward and any backward run
    inside ``fn``. Works on ``meta`` tensors; CPU index tensors mixed with meta tensors are promoted to meta.

    Count on ``meta``: on real CPU tensors the fused CPU kernel of ``scaled_dot_product_attention`` is not counted by
    ``FlopCounterMode`` (torch 2.13), whereas on ``meta`` attention decomposes into counted ``bmm`` calls."""
    with _PromoteToMeta(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------- ACC / ACM
def acc_forward_flops(
    batch: int, n_visual: int, num_attributes: int, dim: int, num_heads: int = 1, mode: str = "projected",
    cached: bool = False, inner_dim: int | None = None,
) -> int:
    """Analytic FLOPs (2 * multiply-adds) of one ``ACCAdapter`` forward over (batch, n_visual, dim) queries and
    ``3 * num_attributes`` book tokens.

    ``projected``: Q and O projections ``2 BN d^2``, book projections ``2 * 3K * d^2`` (omitted when ``cached``),
    scores and weighted values ``2 * BN * 3K * d``. ``reassociated``: Q, O, query-to-book and value-out products
    ``4 BN d^2`` and ``2 * heads * BN * 3K * d`` for scores and mixing. With ``inner_dim = r`` every ``d^2`` above
    is ``d r`` and the projected attention ``2 * BN * 3K * r``. The backward pass costs twice the forward when every
    input needs a gradient.
    """
    bn, keys, d = batch * n_visual, 3 * num_attributes, dim
    r = inner_dim or dim
    if mode == "projected":
        macs = 2 * bn * d * r + (0 if cached else 2 * keys * d * r) + 2 * bn * keys * r
    elif mode == "reassociated":
        macs = 4 * bn * d * r + 2 * num_heads * bn * keys * d
    else:
        raise ValueError(f"acc_forward_flops: mode must be 'projected' or 'reassociated', got {mode!r}.")
    return 2 * macs


def acm_forward_flops(n_predictions: int, num_attributes: int, dim: int) -> int:
    """Analytic FLOPs of one ``ACMLoss`` forward: theta on the predictions and on all 3K book tokens
    (``(N + 3K) d^2``) plus the cosine similarities (``N * 3K * d``), times 2."""
    keys = 3 * num_attributes
    return 2 * ((n_predictions + keys) * dim * dim + n_predictions * keys * dim)


# ---------------------------------------------------------------------------------------------------- Qwen2.5-VL
def qwen25vl_7b_config():
    """``Qwen2_5_VLConfig`` with the dimensions of Qwen2.5-VL-7B-Instruct written out (8.29e9 parameters)."""
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
            intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
            max_window_layers=28, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        ),
        vision_config=dict(
            depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=3584, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2, hidden_act="silu", in_channels=3,
        ),
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return config


def qwen25vl_tiny_config():
    """A few-million-parameter ``Qwen2_5_VLConfig`` with the 7B's structure (for tests of the same code paths)."""
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=152064, max_position_embeddings=4096, max_window_layers=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=2, hidden_size=32, num_heads=2, intermediate_size=64, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, window_size=112, fullatt_block_indexes=[1],
        ),
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return config


def _vision(config):
    return config.vision_config


def visual_token_count(image_px: int, config=None) -> int:
    """Merged visual tokens of one ``image_px`` square image: ``(px / (patch * merge))^2`` (224 -> 64, 448 -> 256)."""
    v = _vision(config or qwen25vl_7b_config())
    unit = v.patch_size * v.spatial_merge_size
    if image_px % unit:
        raise ValueError(f"visual_token_count: image_px must be a multiple of {unit}, got {image_px}.")
    return (image_px // unit) ** 2


def qwen25vl_sample(config, image_px: int, prompt_tokens: int, batch: int, device: str | torch.device = "meta") -> dict:
    """Model inputs as the processor would make them for ``batch`` images of ``image_px`` square plus
    ``prompt_tokens`` text tokens each: ``input_ids`` (batch, L) and ``image_grid_thw`` (batch, 3) on the CPU,
    ``pixel_values`` (batch * patches, 3 * t * p * p) on ``device``, and ``labels`` = ``input_ids``."""
    v = _vision(config)
    grid = image_px // v.patch_size
    n_img = visual_token_count(image_px, config)
    ids = [config.vision_start_token_id] + [config.image_token_id] * n_img + [config.vision_end_token_id]
    ids += [100 + i % 1000 for i in range(prompt_tokens)]
    input_ids = torch.tensor([ids] * batch, dtype=torch.long)
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size**2
    pixel_values = torch.randn(batch * grid * grid, patch_dim, device=device)
    return {
        "input_ids": input_ids,
        "pixel_values": pixel_values,
        "image_grid_thw": torch.tensor([[1, grid, grid]] * batch, dtype=torch.long),
        "labels": input_ids.clone(),
    }


def _meta_model(config):
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)


def qwen25vl_forward_flops(image_px: int, prompt_tokens: int = 32, batch: int = 1, config=None) -> int:
    """FLOPs of one Qwen2.5-VL forward (vision encoder, merger, decoder, ``lm_head`` on every position), counted on a
    ``meta``-device model built from ``config`` (default: :func:`qwen25vl_7b_config`)."""
    config = config or qwen25vl_7b_config()
    model = _meta_model(config)
    sample = qwen25vl_sample(config, image_px, prompt_tokens, batch)
    sample.pop("labels")
    with torch.no_grad():
        return count_flops(lambda: model(**sample, use_cache=False))


def qwen25vl_train_step_flops(
    image_px: int, prompt_tokens: int = 32, batch: int = 1, config=None, lora_rank: int = 16,
    target_modules: str | Sequence[str] | None = None,
) -> int:
    """FLOPs of one LoRA training step's forward + backward (optimizer excluded, it is O(LoRA params)).

    peft LoRA of rank ``lora_rank`` on ``target_modules``, by default the training setting
    (:data:`attok_monai.networks.nets.hf_qwen2vl.LLM_LORA_TARGETS`: the decoder's attention and MLP projections; the
    vision tower frozen without LoRA); all base weights frozen. The backward then computes input gradients through
    every decoder layer (as expensive as its forward) but no weight gradients, and stops at the merged visual tokens,
    so the step is about 2x the decoder forward plus 1x the vision forward. ``target_modules=LORA_TARGETS`` also puts
    LoRA on the vision blocks' MLP (the backward then runs through the vision tower too). Counted on ``meta`` like
    :func:`qwen25vl_forward_flops`.
    """
    from peft import LoraConfig, get_peft_model

    from attok_monai.networks.nets.hf_qwen2vl import LLM_LORA_TARGETS

    config = config or qwen25vl_7b_config()
    targets = LLM_LORA_TARGETS if target_modules is None else target_modules
    model = get_peft_model(_meta_model(config), LoraConfig(
        r=lora_rank, lora_alpha=2 * lora_rank, target_modules=targets if isinstance(targets, str) else list(targets)))
    sample = qwen25vl_sample(config, image_px, prompt_tokens, batch)

    def step():
        model(**sample, use_cache=False).loss.backward()

    return count_flops(step)


def qwen25vl_analytic_forward_flops(image_px: int, prompt_tokens: int = 32, batch: int = 1, config=None) -> int:
    """``2 * params * tokens`` per component: vision blocks and patch embedding over the patches, the merger over the
    merged tokens, the decoder layers and ``lm_head`` over all text positions (attention scores are left out)."""
    config = config or qwen25vl_7b_config()
    model = _meta_model(config)
    v = _vision(config)
    patches = (image_px // v.patch_size) ** 2
    merged = visual_token_count(image_px, config)
    seq = merged + 2 + prompt_tokens

    def n(module) -> int:
        return sum(p.numel() for name, p in module.named_parameters() if "norm" not in name)

    inner = model.model
    flops = 2 * (n(inner.visual.blocks) + n(inner.visual.patch_embed)) * patches + 2 * n(inner.visual.merger) * merged
    flops += 2 * (n(inner.language_model.layers) + n(model.lm_head)) * seq
    return batch * flops
