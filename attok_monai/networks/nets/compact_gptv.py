"""Compact GPTv backbone: a MONAI 2D vision encoder + projector + a small causal LM from a ``transformers`` config.

Trained from scratch on a laptop CPU; the embedded default for demos, tests and benchmarks. Its tokenizer is a
word-level ``tokenizers`` model built offline from the bundle's question templates and answers (nothing is downloaded).

Sequence layout: ``<bos> [N_v visual tokens] prompt <sep> answer <eos> <pad>...`` (right padding). Visual tokens enter
the LLM as input embeddings; the prompt and answer are token ids.

Fine-tuning a trained backbone as the paper does (appendix A.1): :meth:`CompactGPTvBackbone.enable_lora` (or
``lora=`` at construction) freezes the vision encoder, the projector and the LM, injects PEFT LoRA into the LM's
linear layers and, once :meth:`~CompactGPTvBackbone.add_tokens` has named them, trains only the attribute-token rows
of the embedding and lm_head.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from monai.networks.nets import ResNet, ViT
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from attok_monai.errors import InputError
from attok_monai.networks.nets.hf_qwen2vl import default_lora_config
from attok_monai.networks.row_freeze import freeze_rows_except

__all__ = ["build_word_tokenizer", "compact_lora_config", "compact_lr_scales", "COMPACT_FROZEN_PARTS",
           "COMPACT_LLM_BODY_PREFIXES",
           "COMPACT_LORA_TARGETS", "COMPACT_VISION_PREFIX", "CompactGPTvBackbone", "VisionEncoder2D"]

#: parameter-name prefix of the vision encoder in an AttTokGPTv over a compact backbone (``AttTokGPTv.backbone.vision``):
#: the ``vision_lr_scale`` group of the generalist start and the benchmarks' encoder measures
COMPACT_VISION_PREFIX = "backbone.vision"
#: parameter-name prefixes of the LM's body in an AttTokGPTv over a compact backbone (full fine-tuning): its transformer
#: layers and their final norm, not the input embeddings or lm_head (which hold the attribute-token rows): the
#: ``llm_lr_scale`` group of the generalist start
COMPACT_LLM_BODY_PREFIXES = ("backbone.llm.model.layers", "backbone.llm.model.norm")
#: the backbone parts (state-dict prefixes inside :class:`CompactGPTvBackbone`) that each ``finetune`` mode of a
#: generalist start freezes: ``"full"`` none; ``"lora"`` (:meth:`CompactGPTvBackbone.enable_lora`) every one, the LoRA
#: adapters and the attribute tokens' rows of the input embeddings and lm_head aside; ``"frozen_vision"``
#: (:meth:`CompactGPTvBackbone.freeze_vision`) the vision encoder. The one table of it: :func:`compact_lr_scales` reads
#: it (no lr to scale for a frozen part), and so does the generalist start (no fresh draw for a part that stays frozen).
COMPACT_FROZEN_PARTS: dict[str, tuple[str, ...]] = {
    "full": (),
    "lora": ("vision", "projector", "llm.model.embed_tokens", "llm.model.layers", "llm.model.norm", "llm.lm_head"),
    "frozen_vision": ("vision",),
}
#: regex (PEFT full match, module names inside ``CompactGPTvBackbone.llm``) of the Qwen2 LM's linear layers: the
#: attention q/k/v/o and MLP gate/up/down projections of every decoder layer (not the embedding, not lm_head).
COMPACT_LORA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def compact_lr_scales(vision_lr_scale: float = 1.0, llm_lr_scale: float = 1.0,
                      finetune: str = "full") -> dict[str, float] | None:
    """The ``lr_scales`` of :func:`~attok_monai.optimizers.optimizer_param_groups` for a compact AttTokGPTv started
    from a generalist (discriminative fine-tuning): the vision encoder (:data:`COMPACT_VISION_PREFIX`) at
    ``vision_lr_scale`` x lr, the LM's transformer layers and final norm (:data:`COMPACT_LLM_BODY_PREFIXES`) at
    ``llm_lr_scale`` x lr. A scale of 1.0 adds no group, so ``(1.0, 1.0)`` gives None: the optimizer's groups of
    every other start, unchanged.

    Raises:
        InputError: (a ValueError) an unknown ``finetune``, or a scale other than 1.0 for a part that ``finetune``
            freezes (:data:`COMPACT_FROZEN_PARTS`; ``"lora"``: the vision encoder and the LM's layers;
            ``"frozen_vision"``: the vision encoder), named by its key.
    """
    if finetune not in COMPACT_FROZEN_PARTS:
        raise InputError(f"finetune must be one of {', '.join(repr(m) for m in COMPACT_FROZEN_PARTS)}, "
                         f"got {finetune!r}")
    frozen = COMPACT_FROZEN_PARTS[finetune]
    for key, scale, prefixes, part in (("vision_lr_scale", vision_lr_scale, (COMPACT_VISION_PREFIX,), "the vision encoder"),
                                       ("llm_lr_scale", llm_lr_scale, COMPACT_LLM_BODY_PREFIXES, "the LM's layers")):
        if any(p.removeprefix("backbone.") in frozen for p in prefixes) and float(scale) != 1.0:
            raise InputError(f"{key} {float(scale)}: finetune {finetune!r} freezes {part}, so there is no lr to "
                             f"scale; leave {key} at 1.0")
    scales = {COMPACT_VISION_PREFIX: float(vision_lr_scale)} if float(vision_lr_scale) != 1.0 else {}
    if float(llm_lr_scale) != 1.0:
        scales.update(dict.fromkeys(COMPACT_LLM_BODY_PREFIXES, float(llm_lr_scale)))
    return scales or None


def compact_lora_config(lora: Mapping | bool | None = True) -> dict | None:
    """The ``peft.LoraConfig`` keywords of the compact LM: :func:`default_lora_config` (r=16, alpha=32, dropout 0.05)
    with :data:`COMPACT_LORA_TARGETS`, ``lora``'s keys over them; None for ``lora`` None/False."""
    if lora is None or lora is False:
        return None
    if lora is not True and not isinstance(lora, Mapping):
        raise ValueError(f"lora: expected True, None or a mapping of peft.LoraConfig keys, got {lora!r}.")
    return {**default_lora_config(), "target_modules": COMPACT_LORA_TARGETS, **(dict(lora) if lora is not True else {})}

SPECIAL = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>", "sep_token": "<sep>"}


def build_word_tokenizer(texts: Iterable[str], extra_special_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over every word and punctuation mark in ``texts``.

    ``<|...|>`` tokens found in the texts and ``extra_special_tokens`` become special tokens (never split).
    """
    words: set[str] = set()
    specials = list(dict.fromkeys(extra_special_tokens))
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    for text in texts:
        for tok in re.findall(r"<\|[a-z0-9_]+\|>", text):
            if tok not in specials:
                specials.append(tok)
        plain = re.sub(r"<\|[a-z0-9_]+\|>", " ", text.lower())
        words.update(w for w, _ in pre.pre_tokenize_str(plain))
    vocab = {t: i for i, t in enumerate(SPECIAL.values())}
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    if specials:
        fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


class VisionEncoder2D(nn.Module):
    """A MONAI 2D encoder whose feature map becomes a grid of visual tokens.

    Args:
        arch: ``"resnet"`` (MONAI ResNet, no max-pool, 3x3 stem: suited to 28-64 px images) or ``"vit"`` (MONAI ViT).
        in_channels: image channels.
        img_size: input side length (for the ViT).
        grid: visual tokens per side; the feature map is adaptively pooled to ``grid x grid`` (N_v = grid^2).
        widths: ResNet stage widths; ``vit_*``: ViT sizes.

    Shapes: ``(B, C, H, W) -> (B, N_v, out_channels)``.
    """

    def __init__(
        self,
        arch: str = "resnet",
        in_channels: int = 3,
        img_size: int = 28,
        grid: int = 4,
        widths: Sequence[int] = (32, 64, 128, 256),
        layers: Sequence[int] = (1, 1, 1, 1),
        vit_hidden: int = 192,
        vit_layers: int = 4,
        vit_heads: int = 4,
        vit_patch: int = 4,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.grid = grid
        if arch == "resnet":
            self.net = ResNet(
                block="basic", layers=list(layers), block_inplanes=list(widths), spatial_dims=2,
                n_input_channels=in_channels, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True, feed_forward=False,
            )
            self.out_channels = widths[-1]
        elif arch == "vit":
            self.net = ViT(
                in_channels=in_channels, img_size=(img_size, img_size), patch_size=(vit_patch, vit_patch),
                hidden_size=vit_hidden, mlp_dim=vit_hidden * 2, num_layers=vit_layers, num_heads=vit_heads,
                spatial_dims=2, classification=False,
            )
            self.out_channels = vit_hidden
            self.side = img_size // vit_patch
        else:
            raise ValueError(f"VisionEncoder2D: arch must be 'resnet' or 'vit', got {arch!r}.")
        self.pool = nn.AdaptiveAvgPool2d(grid)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.arch == "resnet":
            n = self.net
            x = n.act(n.bn1(n.conv1(images)))
            x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        else:
            tokens, _ = self.net(images)  # (B, side*side, hidden)
            b, _, c = tokens.shape
            x = tokens.transpose(1, 2).reshape(b, c, self.side, self.side)
        return self.pool(x).flatten(2).transpose(1, 2)  # (B, N_v, C)


class CompactGPTvBackbone(nn.Module):
    """Vision encoder -> MLP projector -> small causal LM (``transformers`` ``AutoModelForCausalLM.from_config``).

    Args:
        tokenizer: the word-level tokenizer (with attribute tokens already added).
        vision: keyword arguments of :class:`VisionEncoder2D`.
        llm: keyword arguments of the LM config (``model_type`` default ``"qwen2"``; ``hidden_size`` 256,
            ``num_hidden_layers`` 2, ``num_attention_heads`` 4, ``intermediate_size`` 512).
        max_length: maximum token length of prompt + answer.
        lora: None (default: every parameter trains) or the paper's fine-tuning mode, :meth:`enable_lora`'s argument
            (True = the defaults of :func:`compact_lora_config`); saved in ``backbone.json`` and re-applied by
            :meth:`from_config_dir`.
        freeze_vision: freeze the vision encoder (:meth:`freeze_vision`); saved in ``backbone.json`` when on.
        projector_norm: end the projector with an RMS norm whose learnable gain starts at the LM's
            ``initializer_range``, so the visual tokens enter the LM at the scale of its text embeddings (a visual
            token's norm starts at ``initializer_range * sqrt(hidden_size)``, the norm of a freshly initialised
            embedding row) instead of the MLP's own scale (generalist E's visual tokens are ~60x its text embedding
            rows). Off by default; saved in ``backbone.json`` when on.

    The backbone interface used by :class:`attok_monai.networks.nets.AttTokGPTv`:
    ``hidden_size``, ``tokenizer``, ``embed_tokens(ids)``, ``encode_images(pixel) -> (B, N_v, d)``,
    ``build_inputs(prompts, answers) -> dict``, ``forward_embeds(inputs_embeds, attention_mask, past=None)`` and
    ``save``/``load`` of its own config.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerFast, vision: dict | None = None, llm: dict | None = None,
        max_length: int = 96, lora: Mapping | bool | None = None, freeze_vision: bool = False,
        projector_norm: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.vision_kwargs = dict(vision or {})
        llm_kwargs = {
            "model_type": "qwen2", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256,
            "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
        }
        llm_kwargs.update(llm or {})
        self.llm_kwargs = llm_kwargs
        self.max_length = max_length
        model_type = llm_kwargs.pop("model_type")
        cfg = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **llm_kwargs)
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        llm_kwargs["model_type"] = model_type
        self.llm = AutoModelForCausalLM.from_config(cfg)
        self.hidden_size = cfg.hidden_size
        self.vision = VisionEncoder2D(**self.vision_kwargs)
        self.projector = nn.Sequential(
            nn.Linear(self.vision.out_channels, self.hidden_size), nn.GELU(), nn.Linear(self.hidden_size, self.hidden_size)
        )
        self.projector_norm = bool(projector_norm)
        if self.projector_norm:  # no random draw: the initial weights are those of a backbone without it
            norm = nn.RMSNorm(self.hidden_size, eps=cfg.rms_norm_eps)
            nn.init.constant_(norm.weight, cfg.initializer_range)
            self.projector.append(norm)
        self.lora_kwargs: dict | None = None
        self.vision_frozen = False
        self.trainable_token_ids: list[int] | None = None
        self.added_word_ids: list[int] = []  # rows of words added by add_words (they train as attribute rows do)
        self._row_freezes: list = []
        if lora:
            self.enable_lora(lora)
        if freeze_vision:
            self.freeze_vision()

    def freeze_vision(self) -> CompactGPTvBackbone:
        """Freeze the vision encoder, its batch-norm statistics too (it stays in eval mode, see :meth:`train`); the
        projector, the LM and the attribute modules keep training (LLaVA's second stage). A model folder saved
        afterwards records ``freeze_vision`` and reloads with it."""
        for p in self.vision.parameters():
            p.requires_grad_(False)
        self.vision_frozen = True
        return self.train(self.training)

    # ------------------------------------------------------------------ paper-style fine-tuning
    def enable_lora(self, lora: Mapping | bool = True) -> CompactGPTvBackbone:
        """Fine-tune as the paper does (appendix A.1): freeze the vision encoder (its batch-norm statistics too: it
        stays in eval mode, see :meth:`train`), the projector and every LM weight; inject PEFT LoRA
        (:func:`compact_lora_config`: r=16, alpha=32, dropout 0.05 on the q/k/v/o/gate/up/down projections) into
        the LM; train the embedding and lm_head only on the rows of the tokens given to :meth:`add_tokens` (the
        attribute tokens, when :class:`~attok_monai.networks.nets.AttTokGPTv` wraps this backbone; before that call
        no row trains). The LoRA layers rename the LM's linear weights (``...q_proj.base_layer.weight``), so call
        this after loading plain weights; a model folder saved afterwards records ``lora`` and reloads with it.

        Raises:
            ValueError: LoRA is already on, or ``lora`` is not True or a mapping.
        """
        if self.lora_kwargs is not None:
            raise ValueError("CompactGPTvBackbone.enable_lora: LoRA is already enabled on this backbone.")
        kwargs = compact_lora_config(lora)
        if kwargs is None:
            raise ValueError(f"CompactGPTvBackbone.enable_lora: expected True or a mapping, got {lora!r}.")
        from peft import LoraConfig, inject_adapter_in_model

        for p in self.parameters():
            p.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(**kwargs), self.llm)
        for name, p in self.llm.named_parameters():
            p.requires_grad_("lora_" in name)
        self.lora_kwargs = kwargs
        if self.trainable_token_ids is not None:
            self._freeze_rows(self.trainable_token_ids)
        return self.train(self.training)

    def _freeze_rows(self, ids: Sequence[int]) -> None:
        for rf in self._row_freezes:
            rf.remove()
        emb, head = self.input_embeddings(), self.output_embeddings()
        self._row_freezes = [freeze_rows_except(emb, ids)]
        if head.weight is not emb.weight:
            self._row_freezes.append(freeze_rows_except(head, ids))

    def train(self, mode: bool = True) -> CompactGPTvBackbone:
        """With LoRA on or the vision encoder frozen, the vision encoder stays in eval mode (running batch-norm
        statistics, never updated)."""
        super().train(mode)
        if self.lora_kwargs is not None or self.vision_frozen:
            self.vision.train(False)
        return self

    # ------------------------------------------------------------------ interface
    @property
    def num_visual_tokens(self) -> int:
        return self.vision.num_tokens

    def input_embeddings(self) -> nn.Embedding:
        return self.llm.get_input_embeddings()

    def output_embeddings(self) -> nn.Linear:
        return self.llm.get_output_embeddings()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, N_v, d) visual tokens at the LLM width."""
        return self.projector(self.vision(pixel_values))

    def token_grid(self, pixel_values: torch.Tensor) -> list[tuple[int, int]]:
        """The (rows, columns) layout of each image's visual tokens over the image (row-major): grid x grid."""
        return [(self.vision.grid, self.vision.grid)] * pixel_values.shape[0]

    def build_inputs(self, prompts: Sequence[str], answers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Token ids of ``<bos> [visual] prompt <sep> [answer <eos>]``, right padded.

        Returns ``input_ids`` (B, L) with ``-1`` at the N_v visual slots, ``attention_mask`` (B, L), ``labels``
        (B, L; -100 except answer and eos) when answers are given, and ``prompt_lengths`` (B,): index of the first
        answer position.
        """
        tok = self.tokenizer
        n_v = self.num_visual_tokens
        rows, labels, starts = [], [], []
        for i, prompt in enumerate(prompts):
            p_ids = tok.encode(prompt, add_special_tokens=False)
            head = [tok.bos_token_id] + [-1] * n_v + p_ids + [tok.sep_token_id]
            ans = [] if answers is None else tok.encode(answers[i], add_special_tokens=False) + [tok.eos_token_id]
            ids = head + ans
            if len(ids) > self.max_length + n_v:
                raise ValueError(
                    f"CompactGPTvBackbone: sample {i} has {len(ids) - n_v} text tokens, more than max_length "
                    f"{self.max_length}; raise max_length in the model config."
                )
            rows.append(ids)
            labels.append([-100] * len(head) + ans)
            starts.append(len(head))
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        out = {
            "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "prompt_lengths": torch.tensor(starts),
        }
        if answers is not None:
            out["labels"] = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
        return out

    def merge_visual(self, inputs_embeds: torch.Tensor, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Place the (B, N_v, d) visual tokens at the ``-1`` slots of ``input_ids``."""
        slots = input_ids == -1
        out = inputs_embeds.clone()
        out[slots] = visual.reshape(-1, visual.shape[-1]).to(out.dtype)
        return out

    def forward_embeds(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, past_key_values=None, use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
    ):
        """Run the LM on embeddings: returns ``(logits (B, L, V), last_hidden (B, L, d), past_key_values)``."""
        out = self.llm.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, past_key_values=past_key_values,
            use_cache=use_cache, position_ids=position_ids,
        )
        hidden = out.last_hidden_state
        return self.llm.lm_head(hidden), hidden, out.past_key_values

    def add_tokens(self, tokens: Sequence[str]) -> list[str]:
        """Add the ``tokens`` the tokenizer lacks as special tokens (never split) and grow the LM's input embedding and
        lm_head by as many rows; returns the tokens added (none when the tokenizer holds them all already, as in a
        model built by :func:`~attok_monai.networks.builders.build_compact_attok`). The new rows are placeholders: the
        wrapper (:class:`~attok_monai.networks.nets.AttTokGPTv`) sets attribute rows from their keywords' rows. With LoRA on
        (:meth:`enable_lora`) the rows of ``tokens`` are the only trainable rows of the embedding and lm_head."""
        tok = self.tokenizer
        missing = [t for t in dict.fromkeys(tokens) if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
        if missing:
            tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
            self.llm.resize_token_embeddings(len(tok), mean_resizing=False)
        self._set_trainable_rows(tok.convert_tokens_to_ids(list(dict.fromkeys(tokens))))
        return missing

    def _set_trainable_rows(self, ids: Sequence[int]) -> None:
        """The embedding and lm_head rows that train under LoRA: ``ids`` and the rows of :meth:`add_words`' words,
        each once, in order; applied at once when LoRA is on."""
        self.trainable_token_ids = list(dict.fromkeys([*ids, *self.added_word_ids]))
        if self.lora_kwargs is not None:  # the resized embedding and lm_head: only these tokens' rows train
            self._freeze_rows(self.trainable_token_ids)

    def add_words(self, words: Sequence[str]) -> list[str]:
        """Add the plain words among ``words`` that the word-level tokenizer maps to ``<unk>`` (lower-cased; a word is a
        run of letters and digits, as :func:`build_word_tokenizer` splits text) and grow the LM's input embedding and
        lm_head by as many rows; returns the words added, in order of first appearance.

        A word is added as a whole-word token (``single_word``): ``yes`` reads as one token in ``Yes, ...`` but not
        inside ``yesterday``. Its rows are the LM's fresh initialisation (the rows of a word never trained), and they
        train with the model; with LoRA on (:meth:`enable_lora`) they are trainable rows like the attribute tokens'.
        A model folder saved afterwards keeps them (the tokenizer's added tokens). This is how a bundle started from a
        generalist gets words its data use and the generalist never saw (e.g. a VQA set left out of pre-training),
        instead of answering ``<unk>``.
        """
        tok = self.tokenizer
        unk = tok.unk_token_id
        candidates = dict.fromkeys(w.lower() for w in words if re.fullmatch(r"[^\W_]+", w))
        missing = [w for w in candidates if tok.convert_tokens_to_ids(w) in (None, unk)]
        if missing:
            tok.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in missing])
            self.llm.resize_token_embeddings(len(tok), mean_resizing=False)
            self.added_word_ids += tok.convert_tokens_to_ids(missing)
            self._set_trainable_rows(self.trainable_token_ids or [])
        return missing

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict:
        cfg = {"vision": self.vision_kwargs, "llm": self.llm_kwargs, "max_length": self.max_length}
        if self.lora_kwargs is not None:  # recorded only when on: folders of fully fine-tuned models are as before
            cfg["lora"] = self.lora_kwargs
        if self.vision_frozen:  # likewise
            cfg["freeze_vision"] = True
        if self.projector_norm:  # likewise
            cfg["projector_norm"] = True
        return cfg

    def save_config(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / "tokenizer")
        (directory / "backbone.json").write_text(json.dumps({"type": "compact", **self.config_dict()}, indent=2))

    @classmethod
    def from_config_dir(cls, directory: str | os.PathLike) -> CompactGPTvBackbone:
        directory = Path(directory)
        cfg = json.loads((directory / "backbone.json").read_text())
        tok = PreTrainedTokenizerFast.from_pretrained(directory / "tokenizer")
        return cls(tok, vision=cfg["vision"], llm=cfg["llm"], max_length=cfg["max_length"], lora=cfg.get("lora"),
                   freeze_vision=bool(cfg.get("freeze_vision", False)),
                   projector_norm=bool(cfg.get("projector_norm", False)))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> CompactGPTvBackbone:
        """The trained backbone (vision encoder, projector, LM and tokenizer) of a model folder written by
        :meth:`AttTokGPTv.save_pretrained <attok_monai.networks.nets.AttTokGPTv.save_pretrained>`, without the
        wrapper's attribute modules (embedding book, ACC, ACM projection).

        Raises:
            FileNotFoundError: the folder lacks ``backbone.json``, ``tokenizer/`` or ``model.pt``.
            ValueError: the folder holds another kind of backbone, or ``model.pt`` does not match its config.
        """
        directory = Path(directory)
        for name in ("backbone.json", "tokenizer", "model.pt"):
            if not (directory / name).exists():
                raise FileNotFoundError(f"CompactGPTvBackbone.from_pretrained: {directory} has no {name}.")
        kind = json.loads((directory / "backbone.json").read_text()).get("type", "compact")
        if kind != "compact":
            raise ValueError(
                f"CompactGPTvBackbone.from_pretrained: {directory / 'backbone.json'} is of type {kind!r}, "
                "expected 'compact'."
            )
        backbone = cls.from_config_dir(directory)
        state = torch.load(directory / "model.pt", map_location=map_location, weights_only=True)
        sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        result = backbone.load_state_dict(sub, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"CompactGPTvBackbone.from_pretrained: {directory / 'model.pt'} does not match {directory / 'backbone.json'}"
                f" (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})."
            )
        return backbone
