"""Hugging Face Qwen2-VL / Qwen2.5-VL (and Lingshu, a Qwen2.5-VL) as an AttTok GPTv backbone, with PEFT LoRA.

The HF model merges its visual tokens into the LLM input itself (``masked_scatter`` at the ``<|image_pad|>`` slots), so
this backbone is a *merging* backbone (``merges_visual = True``): instead of handing visual tokens to the wrapper it
takes two callables from :class:`~attok_monai.networks.nets.AttTokGPTv` (:meth:`Qwen2VLBackbone.set_transforms`) and
applies them through forward hooks of the installed ``transformers`` modules (no modelling file is copied):

- ``visual_transform((B, N_v, d)) -> (B, N_v, d)`` on the output of ``visual.merger`` (the merged visual tokens at the
  LLM width ``d``): ACC. The raw merged tokens of the last call are kept in :attr:`last_visual_raw` (for the EMA).
  ACC treats every visual token as an independent query, so it is applied to all images' tokens at once
  (``(1, sum N_i, d)``); Qwen2.5-VL's window order before ``reverse_indices`` stays inside each image.
- ``token_transform(ids (B, L), embeds (B, L, d)) -> embeds`` on the output of the LLM's ``embed_tokens``: ties the
  attribute-token inputs to the embedding book's ``a_k`` (also during ``generate``).

Sequence layout (right padded for training, left padded for generation): the processor's chat template around
``[image] prompt``, the ``<|image_pad|>`` id expanded to ``prod(grid_thw) / merge_size^2`` ids, then
``answer <|im_end|>``. Training: LoRA (r=16, alpha=32, dropout 0.05) on the LLM's linear layers only, the vision tower
frozen, and only the attribute rows of ``embed_tokens`` / ``lm_head`` trainable (:func:`freeze_rows_except`; put the
model's parameters through :func:`attok_monai.optimizers.optimizer_param_groups`).

Without ``torchvision`` a ``Qwen2VLProcessor`` cannot be constructed in ``transformers`` 5 (its video processor is
required), so the backbone keeps the processor's parts: ``tokenizer``, ``image_processor`` and ``chat_template``;
:meth:`apply_chat_template` uses the processor when there is one, else the tokenizer with the same template.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attok_monai.fileio import atomic_write
from attok_monai.networks.row_freeze import freeze_rows_except

__all__ = ["Qwen2VLBackbone", "LLM_LORA_TARGETS", "default_lora_config"]

#: regex (PEFT full match) of the LLM's linear layers; the vision tower (``model.visual``) is never matched.
LLM_LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def default_lora_config() -> dict:
    """Paper A.1: r=16, alpha=32, dropout 0.05 on the LLM's linear layers."""
    return {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": LLM_LORA_TARGETS}


def _split_sizes(grid_thw: torch.Tensor, merge_size: int) -> list[int]:
    return (grid_thw.prod(-1) // merge_size**2).tolist()


def _per_image(tokens: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """(sum N_i, d) -> (B, N, d) when all images have N tokens, else (B, 1, d) per-image means (EMA-equivalent)."""
    parts = torch.split(tokens, list(sizes))
    if len(set(sizes)) == 1:
        return torch.stack(parts)
    return torch.stack([p.mean(0, keepdim=True) for p in parts])


class Qwen2VLBackbone(nn.Module):
    """A ``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` with LoRA.

    Args:
        model: the HF model (LoRA is injected here unless ``lora=None``).
        tokenizer, image_processor: the processor's parts (``min_pixels``/``max_pixels`` live on the image processor).
        chat_template: the chat template (default: the processor's or tokenizer's).
        processor: the full processor when available (used for ``apply_chat_template``).
        model_id: id or local path of the base model (saved instead of the weights); None for models built from a
            config (these cannot be saved with :meth:`save_config`).
        model_kwargs: what ``from_pretrained`` got (``dtype``, ``attn_implementation`` ...), saved with the config.
        lora: LoRA settings (``peft.LoraConfig`` keywords over :func:`default_lora_config`); True = the
            defaults; None/False = no LoRA.
        gradient_checkpointing: non-reentrant gradient checkpointing of the decoder (and vision) layers.
        system_prompt: optional system message.
        max_length: maximum sequence length (visual tokens included).

    Interface used by :class:`AttTokGPTv` (merging path): ``tokenizer``, ``hidden_size``, ``input_embeddings()``,
    ``output_embeddings()``, ``add_tokens``, ``set_transforms``, ``encode_images(images) -> (B, N_v, d)``,
    ``build_inputs(prompts, answers, images, padding_side) -> dict``, ``forward_inputs(batch) -> (logits, hidden,
    raw_visual)``, ``generate_ids(batch, max_new_tokens) -> list[list[int]]``, ``save_config``/``from_config_dir``,
    ``save_weights``/``load_weights``.
    """

    merges_visual = True

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        image_processor: Any,
        chat_template: str | None = None,
        processor: Any = None,
        model_id: str | None = None,
        model_kwargs: dict | None = None,
        lora: dict | bool | None = True,
        gradient_checkpointing: bool = False,
        system_prompt: str | None = None,
        max_length: int = 2048,
        end_token: str = "<|im_end|>",
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = processor
        self.chat_template = chat_template or getattr(processor, "chat_template", None) or getattr(
            tokenizer, "chat_template", None
        )
        if not self.chat_template:
            raise ValueError("Qwen2VLBackbone: no chat template (give chat_template= or a processor that has one).")
        self.model_id = model_id
        self.model_kwargs = dict(model_kwargs or {})
        self.lora_kwargs = None if not lora else {**default_lora_config(), **(lora if isinstance(lora, dict) else {})}
        self.gradient_checkpointing = gradient_checkpointing
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.end_token = end_token
        cfg = model.config
        self.hidden_size = cfg.text_config.hidden_size
        self.image_token_id = cfg.image_token_id
        self.merge_size = cfg.vision_config.spatial_merge_size
        self.base_vocab_size = model.get_input_embeddings().weight.shape[0]
        for p in model.parameters():
            p.requires_grad_(False)
        if self.lora_kwargs is not None:
            from peft import LoraConfig, get_peft_model

            self.peft = get_peft_model(model, LoraConfig(**self.lora_kwargs))
        else:
            self.peft = None
            self._hf = model
        if gradient_checkpointing:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._token_transform: Callable | None = None
        self._visual_transform: Callable | None = None
        self._transforms_on = True
        self._grid: torch.Tensor | None = None
        self.last_visual_raw: torch.Tensor | None = None
        self._handles: list = []
        self._row_freezes: list = []
        self._install_hooks()

    # ------------------------------------------------------------------ construction
    @property
    def hf(self) -> nn.Module:
        """The HF ``...ForConditionalGeneration`` (with LoRA layers injected in place)."""
        return self.peft.base_model.model if self.peft is not None else self._hf

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str, tokenizer_path: str | None = None, min_pixels: int | None = None,
        max_pixels: int | None = None, dtype: str | None = None, attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> Qwen2VLBackbone:
        """Load the base model and its processor (offline with ``HF_HUB_OFFLINE=1`` from a local folder or cache).

        ``tokenizer_path`` loads the tokenizer from elsewhere (a trained model folder holding the attribute tokens);
        ``dtype`` e.g. ``"bfloat16"``; ``attn_implementation`` e.g. ``"flash_attention_2"`` or ``"sdpa"``;
        ``min_pixels``/``max_pixels`` bound the image size; other keywords go to the constructor.
        """
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        model_kwargs: dict[str, Any] = {}
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        if attn_implementation is not None:
            model_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(model_id_or_path, **model_kwargs)
        processor = None
        try:
            processor = AutoProcessor.from_pretrained(model_id_or_path)
        except Exception:  # noqa: BLE001 - e.g. no torchvision for the video processor: use the parts
            processor = None
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_id_or_path)
        image_processor = getattr(processor, "image_processor", None) or AutoImageProcessor.from_pretrained(
            model_id_or_path
        )
        _set_pixel_limits(image_processor, min_pixels, max_pixels)
        chat_template = kwargs.pop("chat_template", None) or getattr(processor, "chat_template", None)
        if processor is not None and tokenizer_path is not None:
            processor.tokenizer = tokenizer
        return cls(
            model, tokenizer, image_processor, chat_template=chat_template, processor=processor,
            model_id=str(model_id_or_path), model_kwargs=model_kwargs, **kwargs,
        )

    @classmethod
    def from_config(cls, config: Any, processor: Any, **kwargs: Any) -> Qwen2VLBackbone:
        """A randomly initialised model from a ``Qwen2VLConfig``/``Qwen2_5_VLConfig`` (tests). ``processor`` is a
        processor or a dict ``{"tokenizer", "image_processor", "chat_template"}``."""
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_config(config)
        parts = processor if isinstance(processor, dict) else {
            "tokenizer": processor.tokenizer, "image_processor": processor.image_processor,
            "chat_template": processor.chat_template, "processor": processor,
        }
        return cls(model, **parts, **kwargs)

    # ------------------------------------------------------------------ interface: embeddings and tokens
    def input_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def output_embeddings(self) -> nn.Linear:
        return self.hf.get_output_embeddings()

    @property
    def tied(self) -> bool:
        return self.output_embeddings().weight is self.input_embeddings().weight

    def add_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Add ``tokens`` as special tokens; grow the embedding matrix only when the tokenizer outgrows it (Qwen pads
        its vocabulary: never shrink); train only their rows of ``embed_tokens`` and ``lm_head``. Returns their ids."""
        tok = self.tokenizer
        new = [t for t in tokens if t not in tok.get_vocab()]
        if new:
            tok.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
        if self.processor is not None and getattr(self.processor, "tokenizer", None) is not tok:
            self.processor.tokenizer = tok
        if len(tok) > self.input_embeddings().weight.shape[0]:
            self.hf.resize_token_embeddings(len(tok), mean_resizing=False)
        ids = tok.convert_tokens_to_ids(list(tokens))
        for rf in self._row_freezes:
            rf.remove()
        self._row_freezes = [freeze_rows_except(self.input_embeddings(), ids)]
        if not self.tied:
            self._row_freezes.append(freeze_rows_except(self.output_embeddings(), ids))
        self.trainable_token_ids = list(ids)
        self._install_hooks()
        return ids

    # ------------------------------------------------------------------ hooks
    def set_transforms(self, token_transform: Callable | None, visual_transform: Callable | None) -> None:
        """``token_transform(ids, embeds) -> embeds`` after ``embed_tokens``; ``visual_transform((B, N, d))`` after
        ``visual.merger`` (see the module docstring)."""
        self._token_transform = token_transform
        self._visual_transform = visual_transform

    def _install_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        visual = self.hf.model.visual
        self._handles = [
            self.input_embeddings().register_forward_hook(self._embed_hook),
            visual.register_forward_pre_hook(self._visual_pre_hook, with_kwargs=True),
            visual.merger.register_forward_hook(self._merger_hook),
        ]

    def _embed_hook(self, module, args, output):
        if self._token_transform is None or not self._transforms_on:
            return None
        return self._token_transform(args[0], output)

    def _visual_pre_hook(self, module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self._grid = grid
        return None

    def _merger_hook(self, module, args, output):
        if not self._transforms_on:
            return None
        self.last_visual_raw = _per_image(output.detach(), _split_sizes(self._grid, self.merge_size))
        if self._visual_transform is None:
            return None
        return self._visual_transform(output[None])[0].to(output.dtype)

    @contextlib.contextmanager
    def transforms_disabled(self):
        """Run the HF modules without the wrapper's transforms (e.g. raw visual tokens)."""
        prev, self._transforms_on = self._transforms_on, False
        try:
            yield
        finally:
            self._transforms_on = prev

    # ------------------------------------------------------------------ interface: images and text
    @property
    def device(self) -> torch.device:
        return self.input_embeddings().weight.device

    def preprocess_images(self, images: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, C, H, W) in [0, 1] (C = 1 or 3) -> ``pixel_values`` (sum patches, C*T*P*P) and ``image_grid_thw``
        (B, 3), exactly as the processor makes them (resized within ``min_pixels``/``max_pixels``, normalised)."""
        imgs = [im.detach().float().cpu() for im in images]
        imgs = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in imgs]
        out = self.image_processor(images=imgs, do_rescale=False, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def token_grid(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[int, int]]:
        """The (rows, columns) layout of each image's merged visual tokens over the image (row-major): the
        processor's patch grid ``image_grid_thw`` divided by the vision tower's ``spatial_merge_size``."""
        grid = self.preprocess_images(images)["image_grid_thw"]
        return [(int(h) // self.merge_size, int(w) // self.merge_size) for _, h, w in grid.tolist()]

    def apply_chat_template(self, prompt: str) -> str:
        """The chat-formatted prompt (with the image placeholder and the assistant generation prompt)."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]})
        if self.processor is not None:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, chat_template=self.chat_template
        )

    @property
    def end_token_id(self) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(self.end_token)
        return tid if isinstance(tid, int) and tid >= 0 else self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.end_token_id

    def build_inputs(
        self, prompts: Sequence[str], answers: Sequence[str] | None = None, images: torch.Tensor | None = None,
        padding_side: str = "right",
    ) -> dict[str, torch.Tensor]:
        """Token ids of ``template([image] prompt) [answer <|im_end|>]`` with the image placeholder expanded.

        Returns ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` (1 at image tokens), ``prompt_lengths`` (B,)
        (index of the first answer position, padding excluded for right padding), ``labels`` (-100 except answer and
        end token) when answers are given, and ``pixel_values``/``image_grid_thw`` when images are given.
        """
        if images is None:
            raise ValueError("Qwen2VLBackbone.build_inputs: images are required (one per prompt).")
        if len(images) != len(prompts):
            raise ValueError(f"Qwen2VLBackbone.build_inputs: {len(images)} images for {len(prompts)} prompts.")
        vis = self.preprocess_images(images)
        sizes = _split_sizes(vis["image_grid_thw"], self.merge_size)
        tok = self.tokenizer
        rows, labels, starts = [], [], []
        for i, prompt in enumerate(prompts):
            ids = tok.encode(self.apply_chat_template(prompt), add_special_tokens=False)
            if ids.count(self.image_token_id) != 1:
                raise ValueError(
                    f"Qwen2VLBackbone.build_inputs: prompt {i} has {ids.count(self.image_token_id)} image "
                    "placeholders after the chat template; expected 1."
                )
            k = ids.index(self.image_token_id)
            head = ids[:k] + [self.image_token_id] * sizes[i] + ids[k + 1:]
            ans = [] if answers is None else tok.encode(answers[i], add_special_tokens=False) + [self.end_token_id]
            if len(head) + len(ans) > self.max_length:
                raise ValueError(
                    f"Qwen2VLBackbone.build_inputs: sample {i} has {len(head) + len(ans)} tokens (with "
                    f"{sizes[i]} visual tokens), more than max_length {self.max_length}; lower max_pixels or raise "
                    "max_length."
                )
            rows.append(head + ans)
            labels.append([-100] * len(head) + ans)
            starts.append(len(head))
        width = max(len(r) for r in rows)
        pad = self.pad_token_id

        def padded(seq: list, value) -> list:
            fill = [value] * (width - len(seq))
            return fill + seq if padding_side == "left" else seq + fill

        input_ids = torch.tensor([padded(r, pad) for r in rows])
        out = {
            "input_ids": input_ids,
            "attention_mask": torch.tensor([padded([1] * len(r), 0) for r in rows]),
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
            "prompt_lengths": torch.tensor(
                [s + (width - len(r) if padding_side == "left" else 0) for s, r in zip(starts, rows)]
            ),
            **vis,
        }
        if answers is not None:
            out["labels"] = torch.tensor([padded(lab, -100) for lab in labels])
        return out

    def _model_inputs(self, batch: dict) -> dict:
        keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")
        return {k: batch[k].to(self.device) for k in keys if k in batch}

    def forward_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the HF model (visual tokens merged inside, hooks applied): ``(logits (B, L, V), final hidden states
        (B, L, d), raw merged visual tokens (B, N_v, d) before the visual transform)``."""
        self.last_visual_raw = None
        out = self.hf.model(**self._model_inputs(batch), use_cache=False)
        hidden = out.last_hidden_state
        return self.hf.lm_head(hidden), hidden, self.last_visual_raw

    def forward_embeds(self, inputs_embeds, attention_mask, past_key_values=None, use_cache=False, position_ids=None):
        raise NotImplementedError(
            "Qwen2VLBackbone merges the visual tokens inside the HF model: use build_inputs + forward_inputs."
        )

    @torch.no_grad()
    def generate_ids(self, batch: dict, max_new_tokens: int = 16) -> list[list[int]]:
        """Greedy decoding with the HF ``generate`` (KV cache, 3D RoPE); ``batch`` from ``build_inputs(...,
        padding_side="left")``. Returns the new ids of each row up to (not including) the end token."""
        inputs = self._model_inputs(batch)
        end = self.end_token_id
        seq = self.hf.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end, pad_token_id=self.pad_token_id,
            num_beams=1, temperature=None, top_p=None, top_k=None,
        )
        new = seq[:, inputs["input_ids"].shape[1]:].tolist()
        return [row[: row.index(end)] if end in row else row for row in new]

    def decode(self, ids: Sequence[int]) -> str:
        """Text with the attribute tokens visible (``skip_special_tokens=True`` would drop them)."""
        drop = {self.end_token_id, self.pad_token_id}
        return self.tokenizer.decode([t for t in ids if t not in drop], skip_special_tokens=False).strip()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, N_v, d) merged visual tokens (before any visual transform)."""
        vis = {k: v.to(self.device) for k, v in self.preprocess_images(images).items()}
        visual = self.hf.model.visual
        with self.transforms_disabled():
            out = visual(vis["pixel_values"].type(visual.dtype), grid_thw=vis["image_grid_thw"])
        merged = out.pooler_output if hasattr(out, "pooler_output") else out
        return _per_image(merged, _split_sizes(vis["image_grid_thw"], self.merge_size))

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict:
        return {
            "model_id": self.model_id, "model_kwargs": self.model_kwargs, "lora": self.lora_kwargs,
            "gradient_checkpointing": self.gradient_checkpointing, "system_prompt": self.system_prompt,
            "max_length": self.max_length, "end_token": self.end_token,
        }

    def save_config(self, directory: str | os.PathLike) -> None:
        """``backbone.json`` (base model id/path, LoRA settings ...), the tokenizer with the attribute tokens, the
        image processor (pixel limits) and the chat template. The base weights are not copied."""
        if self.model_id is None:
            raise ValueError(
                "Qwen2VLBackbone.save_config: this backbone was built from a config, not from a model id or path; "
                "save the base model (model.save_pretrained) and build it with Qwen2VLBackbone.from_pretrained."
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / "tokenizer")
        self.image_processor.save_pretrained(directory / "image_processor")
        cfg = {"type": "hf_qwen2vl", **self.config_dict(), "chat_template": self.chat_template}
        atomic_write(directory / "backbone.json", lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2)))

    @classmethod
    def from_config_dir(cls, directory: str | os.PathLike, **overrides: Any) -> Qwen2VLBackbone:
        """Rebuild from :meth:`save_config`: the base model from its id/path, tokenizer and image processor from
        ``directory``. The trained weights come with :meth:`load_weights`."""
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        directory = Path(directory)
        cfg = json.loads((directory / "backbone.json").read_text())
        cfg.update(overrides)
        model = AutoModelForImageTextToText.from_pretrained(cfg["model_id"], **cfg.get("model_kwargs", {}))
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
        image_processor = AutoImageProcessor.from_pretrained(directory / "image_processor")
        return cls(
            model, tokenizer, image_processor, chat_template=cfg["chat_template"], model_id=cfg["model_id"],
            model_kwargs=cfg.get("model_kwargs"), lora=cfg.get("lora"),
            gradient_checkpointing=cfg.get("gradient_checkpointing", False), system_prompt=cfg.get("system_prompt"),
            max_length=cfg.get("max_length", 2048), end_token=cfg.get("end_token", "<|im_end|>"),
        )

    def save_weights(self, directory: str | os.PathLike) -> None:
        """The LoRA adapter (``adapter/``, a PEFT adapter folder) and the trainable token rows
        (``token_rows.pt``: ids, ``embed_tokens`` rows and untied ``lm_head`` rows)."""
        directory = Path(directory)
        if self.peft is not None:
            self.peft.save_pretrained(directory / "adapter", save_embedding_layers=False)
        ids = torch.tensor(getattr(self, "trainable_token_ids", []), dtype=torch.long)
        rows = {"ids": ids, "embed_tokens": self.input_embeddings().weight.detach()[ids].cpu().clone()}
        if not self.tied:
            rows["lm_head"] = self.output_embeddings().weight.detach()[ids].cpu().clone()
        atomic_write(directory / "token_rows.pt", lambda tmp: torch.save(rows, tmp))

    @torch.no_grad()
    def load_weights(self, directory: str | os.PathLike) -> None:
        """Load what :meth:`save_weights` wrote."""
        directory = Path(directory)
        if self.peft is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            path = directory / "adapter" / "adapter_model.safetensors"
            if not path.exists():
                raise FileNotFoundError(f"Qwen2VLBackbone.load_weights: {path} missing (no LoRA adapter saved).")
            result = set_peft_model_state_dict(self.peft, load_file(str(path), device=str(self.device)))
            bad = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
            if bad:
                raise ValueError(f"Qwen2VLBackbone.load_weights: adapter keys not in the model: {bad[:5]}")
        rows = torch.load(directory / "token_rows.pt", map_location="cpu", weights_only=True)
        ids = rows["ids"].to(self.device)
        emb = self.input_embeddings().weight
        emb[ids] = rows["embed_tokens"].to(emb)
        if "lm_head" in rows and not self.tied:
            head = self.output_embeddings().weight
            head[ids] = rows["lm_head"].to(head)


def _set_pixel_limits(image_processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set the processor's pixel bounds (``size.shortest_edge``/``longest_edge`` in transformers 5, also the legacy
    ``min_pixels``/``max_pixels`` attributes)."""
    if min_pixels is None and max_pixels is None:
        return
    size = image_processor.size
    updates = {}
    if min_pixels is not None:
        updates["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        updates["longest_edge"] = int(max_pixels)
    if isinstance(size, dict):
        size.update(updates)
    else:
        for k, v in updates.items():
            setattr(size, k, v)
    for name, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if v is not None and hasattr(image_processor, name):
            setattr(image_processor, name, int(v))
