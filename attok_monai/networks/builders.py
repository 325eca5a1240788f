"""Model builders the bundle configs call (``network_def``): a compact AttTok GPTv trained from scratch, or AttTok on a
Hugging Face Qwen2-VL / Qwen2.5-VL model with LoRA."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from attok_monai.attributes import AttributeVocabulary
from attok_monai.errors import InputError, require_flag
from attok_monai.networks.nets import AttTokConfig, AttTokGPTv, CompactGPTvBackbone, build_word_tokenizer

__all__ = ["build_compact_attok", "build_hf_attok"]


def _refuse_generalist_rows(config: AttTokConfig) -> None:
    """``attribute_init="generalist"`` keeps rows a compact generalist trained; a model built without one has none.

    Raises:
        InputError: ``config.attribute_init`` is ``"generalist"``.
    """
    if config.attribute_init == "generalist":
        raise InputError(
            "attribute_init 'generalist' keeps the attribute rows of a generalist pre-trained with attribute tokens; "
            "start from one (--extra from_generalist --generalist_dir FOLDER) or set another attribute_init."
        )


class TextSource(Protocol):
    """What the tokenizer builder needs of the question templates: their texts."""

    def all_texts(self) -> list[str]: ...


def build_compact_attok(
    vocabulary: AttributeVocabulary | dict | str,
    templates: TextSource,
    extra_texts: Sequence[str] = (),
    vision: dict | None = None,
    llm: dict | None = None,
    max_length: int = 96,
    seed: int | None = None,
    config: AttTokConfig | Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> AttTokGPTv:
    """A compact AttTok GPTv: tokenizer built offline from the templates, class names, keywords and markers.

    Args:
        vocabulary: the attribute vocabulary (object, dict or JSON path).
        templates: the bundle's question templates (:class:`~attok_monai.data.instructions.InstructionTemplates`, or
            anything with ``all_texts() -> list[str]``): their words go into the tokenizer.
        extra_texts: more texts for the tokenizer (e.g. VQA answers).
        vision, llm: keyword arguments of the vision encoder and of the LM config
            (:class:`~attok_monai.networks.nets.CompactGPTvBackbone`).
        max_length: text budget in tokens.
        seed: seeds the backbone and AttTok module initialisation.
        config, config_overrides: as in :func:`build_hf_attok`.
    """
    config = AttTokConfig.coerce(config, **config_overrides)  # refuse an unknown key before building anything
    _refuse_generalist_rows(config)
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
    _refuse_generalist_rows(config)
    require_flag(gradient_checkpointing, "gradient_checkpointing")  # the text "false" from MONAI's CLI is truthy
    if seed is not None:
        torch.manual_seed(seed)
    backbone = Qwen2VLBackbone.from_pretrained(
        model_id, min_pixels=min_pixels, max_pixels=max_pixels, dtype=dtype, attn_implementation=attn_implementation,
        lora=lora, gradient_checkpointing=gradient_checkpointing, max_length=max_length, system_prompt=system_prompt,
    )
    return AttTokGPTv(backbone, AttributeVocabulary.coerce(vocabulary), config)
