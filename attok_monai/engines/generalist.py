"""The compact medical generalist: build it, mark its saved folder, and start any bundle from it.

The paper tunes a *pretrained* GPTv (Qwen2.5-VL, Lingshu) with AttTok: the attribute tokens are added to a model that
already speaks, and each keyword embedding e_k is the mean of trained text-embedding rows. The compact miniature of
that setting has two steps:

1. ``bundles/compact_generalist``: :func:`build_compact_generalist` makes a plain-text compact GPTv (no attribute
   tokens, no ACC, no ACM; ``attribute_tokens=True`` puts the attribute tokens in its answers, a study variant) whose
   word-level tokenizer covers every source bundle's texts; it is instruction-tuned on the union of the sources'
   training parts (:mod:`attok_monai.data.generalist`) and saved with a
   ``generalist.json`` card (:class:`~attok_monai.handlers.GeneralistCardHandler`) that names its input size,
   channels and sources.
2. any bundle with ``--extra from_generalist --generalist_dir FOLDER``: :func:`build_compact_from_generalist` loads
   the trained backbone (vision encoder, projector, LM, tokenizer), adds the bundle's attribute tokens the tokenizer
   lacks (embedding and lm_head grow by as many rows) and wraps it in :class:`AttTokGPTv` with the bundle's switches,
   which sets the attribute rows and e_k from the trained rows of the keywords. ``finetune="full"`` (the default)
   trains every parameter; ``finetune="lora"`` is the paper's recipe (vision encoder, projector and LM frozen, LoRA on
   the LM's linear layers, only the attribute-token rows of the embedding and lm_head trained:
   :meth:`CompactGPTvBackbone.enable_lora`); ``finetune="frozen_vision"`` freezes the generalist's vision encoder
   and trains the rest (:meth:`CompactGPTvBackbone.freeze_vision`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.instructions import InstructionTemplates
from attok_monai.errors import InputError, require_flag
from attok_monai.networks.nets import (
    COMPACT_FROZEN_PARTS,
    AttTokConfig,
    AttTokGPTv,
    CompactGPTvBackbone,
    build_word_tokenizer,
)

__all__ = [
    "CARD_NAME",
    "build_compact_generalist",
    "build_compact_from_generalist",
    "read_generalist_card",
    "shrink_and_perturb",
    "reinitialise_parts",
    "FINETUNE_MODES",
    "GENERALIST_PARTS",
    "GENERALIST_FRESH",
    "LM_QUERY_KEY",
]

#: ``finetune`` values of :func:`build_compact_from_generalist` (and of the ``from_generalist`` config layers); what
#: each freezes is :data:`~attok_monai.networks.nets.COMPACT_FROZEN_PARTS`
FINETUNE_MODES = tuple(COMPACT_FROZEN_PARTS)

#: ``generalist_parts`` values of :func:`build_compact_from_generalist`: the backbone's parts (state-dict prefixes)
#: each keeps as the generalist trained them (the others start fresh, drawn from the seed as a scratch model's are).
#: "all" lists every part: the vision encoder, the projector, and the LM as its input embeddings, its transformer
#: layers with their final norm, and its output layer (``llm.lm_head``, the answer words' rows).
#: "language" is the projector with the LM (embeddings and lm_head included): the projector maps into the LM's input
#: space. "all_but_head" keeps everything but the LM's output layer; "all_but_layers" everything but its transformer
#: layers (and final norm); "all_but_embeddings" everything but its input embeddings. "embeddings" keeps only the LM's
#: input embeddings and output layer (the generalist's word vectors, e_k's source): encoder, projector and layers fresh.
GENERALIST_PARTS: dict[str, tuple[str, ...]] = {
    "all": ("vision", "projector", "llm.model.embed_tokens", "llm.model.layers", "llm.model.norm", "llm.lm_head"),
    "all_but_head": ("vision", "projector", "llm.model.embed_tokens", "llm.model.layers", "llm.model.norm"),
    "all_but_layers": ("vision", "projector", "llm.model.embed_tokens", "llm.lm_head"),
    "all_but_embeddings": ("vision", "projector", "llm.model.layers", "llm.model.norm", "llm.lm_head"),
    "all_but_query_key": ("vision", "projector", "llm.model.embed_tokens", "llm.model.layers", "llm.model.norm",
                          "llm.lm_head"),  # all, less LM_QUERY_KEY (GENERALIST_FRESH)
    "vision": ("vision",),
    "language": ("projector", "llm.model.embed_tokens", "llm.model.layers", "llm.model.norm", "llm.lm_head"),
    "embeddings": ("llm.model.embed_tokens", "llm.lm_head"),
    "none": (),
}

#: the query and key projections of every LM layer (state-dict patterns, ``*`` any layer index): what sets where each
#: position attends, the attention scores, and nothing of what it reads there (values, output projection, MLP)
LM_QUERY_KEY: tuple[str, ...] = ("llm.model.layers.*.self_attn.q_proj", "llm.model.layers.*.self_attn.k_proj")
#: ``generalist_parts`` values that start fresh something finer than the parts of ``GENERALIST_PARTS["all"]``:
#: value -> the fresh patterns ("all_but_query_key": everything kept but the LM's attention scores)
GENERALIST_FRESH: dict[str, tuple[str, ...]] = {"all_but_query_key": LM_QUERY_KEY}

logger = logging.getLogger("attok_monai.engines")

CARD_NAME = "generalist.json"
CARD_KIND = "attok_compact_generalist"
TRAIN_HINT = "train one with: python -m attok_monai.bundle run --config bundles/compact_generalist"


def build_compact_generalist(
    vocabulary: AttributeVocabulary | dict | str,
    texts: Sequence[str],
    vision: dict | None = None,
    llm: dict | None = None,
    max_length: int = 96,
    seed: int | None = None,
    projector_norm: bool = False,
    attribute_tokens: bool = False,
) -> AttTokGPTv:
    """The generalist before training: a compact GPTv answering in plain text (``use_attribute_tokens``,
    ``use_acc`` and ``use_acm`` off), its tokenizer built from ``texts`` (every source's templates, class names,
    keywords and question-answer pairs). ``vocabulary`` is the union of the sources' vocabularies: it names the
    classes (and makes the folder loadable by :meth:`AttTokGPTv.from_pretrained`). ``projector_norm``:
    :class:`CompactGPTvBackbone`'s option (visual tokens at the text embeddings' scale); the saved folder records it,
    so every bundle that starts from it keeps it.

    ``attribute_tokens``: False (default): the vocabulary's tokens never appear in the generalist's answers, as the
    paper's pretrained GPTv never saw them. True: a departure from the paper for study: the generalist answers as the
    bundles' "tokens alone" row does (``<|attribute_begin|><|a_k|><|attribute_end|> text``, no ACC, no ACM, attribute
    rows from the keyword tokens no other class shares), so its attribute rows (``a_k``, the lm_head rows, the markers)
    are trained; a bundle keeps them with ``attribute_init="generalist"`` (:func:`build_compact_from_generalist`)."""
    vocab = AttributeVocabulary.coerce(vocabulary)
    tokenizer = build_word_tokenizer(texts, vocab.special_tokens)
    if seed is not None:
        torch.manual_seed(seed)
    backbone = CompactGPTvBackbone(tokenizer, vision=vision, llm=llm, max_length=max_length, projector_norm=projector_norm)
    tokens = require_flag(attribute_tokens, "compact generalist: attribute_tokens")
    return AttTokGPTv(backbone, vocab, use_attribute_tokens=tokens, use_acc=False, use_acm=False,
                      attribute_init="distinct" if tokens else "keyword")


def read_generalist_card(directory: str | os.PathLike | None) -> dict[str, Any]:
    """The ``generalist.json`` card of a generalist model folder.

    Raises:
        InputError: ``directory`` is not given (with the option to set), is not a folder, or is no generalist folder.
    """
    if directory is None or str(directory).strip() in ("", "None"):
        raise InputError(f"from_generalist: set --generalist_dir to a compact generalist model folder ({TRAIN_HINT}).")
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"from_generalist: generalist_dir {directory} is not a folder ({TRAIN_HINT}).")
    card_path = directory / CARD_NAME
    if not card_path.is_file() or not (directory / "model.pt").is_file():
        raise InputError(
            f"from_generalist: {directory} is not a compact generalist folder (expected {CARD_NAME} and model.pt; "
            f"{TRAIN_HINT})."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"from_generalist: cannot read {card_path}: {e}") from e
    if not isinstance(card, dict) or card.get("kind") != CARD_KIND:
        raise InputError(f"from_generalist: {card_path} field 'kind' is not {CARD_KIND!r}.")
    return card


def build_compact_from_generalist(
    generalist_dir: str | os.PathLike | None,
    vocabulary: AttributeVocabulary | dict | str,
    templates: InstructionTemplates | None = None,
    extra_texts: Sequence[str] = (),
    image_size: int | None = None,
    channels: int | None = None,
    max_length: int | None = None,
    seed: int | None = None,
    vision: dict | None = None,
    llm: dict | None = None,
    config: AttTokConfig | Mapping[str, Any] | None = None,
    finetune: str = "full",
    lora: Mapping[str, Any] | None = None,
    shrink_perturb: Sequence[float] | None = None,
    add_words: bool = True,
    generalist_parts: str = "all",
    **config_overrides: Any,
) -> AttTokGPTv:
    """A bundle's AttTok (or baseline) model started from a trained compact generalist.

    The arguments are those of :func:`~attok_monai.networks.builders.build_compact_attok` plus ``generalist_dir``,
    ``image_size`` and ``channels``, so a bundle's ``configs/from_generalist.json`` merges these four keys into its
    ``network_def`` (``"+network_def"``) and keeps every AttTok switch the bundle passes.

    Args:
        generalist_dir: the generalist's model folder (``<run>/model`` of ``bundles/compact_generalist``).
        vocabulary: the bundle's attribute vocabulary; tokens the generalist's tokenizer lacks are added.
        templates, extra_texts: the bundle's questions and other texts (vqa_rad: every question and answer of its
            training part); the words among them the generalist never saw are added to its tokenizer with fresh rows
            (:meth:`CompactGPTvBackbone.add_words`) and logged by count.
        add_words: False keeps the generalist's tokenizer as it is (unseen words read as ``<unk>``, logged).
        image_size, channels: what the bundle feeds; must be the generalist's (its card), else a ValueError.
        max_length: text budget; the larger of this and the generalist's is kept.
        seed: seeds the modules AttTok adds (ACC, ACM projection).
        vision, llm: not used: the architecture is the generalist's (``backbone.json`` of its folder); a warning
            names the keys that both configs set to different values.
        config, config_overrides: the :class:`~attok_monai.networks.nets.AttTokConfig` (or a dict of its keys; None =
            the defaults) and its keys as keyword arguments over it (``use_acc``, ``tau``, ...: the bundles pass them
            this way); unknown keys are refused by name. ``attribute_init="generalist"`` keeps the rows a generalist
            pre-trained with attribute tokens trained: ``a_k`` from its book and the lm_head rows, matched by token
            name (the input-embedding rows follow ``a_k``); ``e_k`` is the keyword's mean as in every mode.
        finetune: ``"full"`` (default): every parameter of the model trains. ``"lora"``: the paper's recipe
            (appendix A.1): the generalist's vision encoder (batch-norm statistics included), projector and LM
            weights are frozen, PEFT LoRA (r=16, alpha=32, dropout 0.05) is injected into the LM's attention and MLP
            projections, the embedding and lm_head train only on the attribute-token rows, and the modules AttTok
            adds (book, ACC, ACM projection) train (:meth:`CompactGPTvBackbone.enable_lora`). ``"frozen_vision"``: the
            vision encoder (batch-norm statistics included) is frozen; projector, LM and AttTok's modules train
            (:meth:`CompactGPTvBackbone.freeze_vision`; LLaVA's second stage).
        lora: ``peft.LoraConfig`` keys over those defaults (``finetune="lora"`` only).
        shrink_perturb: None (default: the generalist's weights as trained) or ``(shrink, perturb)``: every parameter
            of the backbone becomes ``shrink * theta + perturb * theta_fresh`` before fine-tuning, ``theta_fresh`` a
            fresh initialisation of the same architecture drawn from ``seed`` ("shrink and perturb", Ash & Adams,
            NeurIPS 2020, against the generalisation gap of warm-started training; ``(0.4, 0.1)`` is a usual
            choice). Batch-norm statistics are kept (they re-estimate in the first training steps).
        generalist_parts: which of the generalist's trained modules the model keeps (a study key: which part of a
            trained start changes what AttTok does). ``"all"`` (default) keeps the whole backbone; ``"vision"`` keeps
            the vision encoder and starts the projector and LM fresh; ``"language"`` keeps the projector and LM
            (embeddings and lm_head included) and starts the vision encoder fresh; ``"all_but_head"`` keeps everything
            but the LM's output layer (``lm_head``: the rows that score the answer words, where a trained start
            holds its answer prior; refused for an LM that ties it to its input embeddings); ``"all_but_layers"``
            everything but the LM's transformer layers and final norm; ``"all_but_embeddings"`` everything but the
            LM's input embeddings (refused for a tied LM, as ``"all_but_head"``); ``"all_but_query_key"`` everything
            but the query and key projections of the LM's layers (:data:`LM_QUERY_KEY`: where each position attends;
            values, MLP and norms kept); ``"embeddings"`` keeps only the LM's input embeddings and output layer (the
            generalist's word vectors, so e_k is a trained text embedding) and starts the vision encoder, projector and
            LM layers fresh; ``"none"`` starts every
            module fresh (the generalist's architecture, tokenizer and input size only). Fresh modules (parameters
            and buffers, batch-norm statistics included) are drawn from ``seed`` (:func:`reinitialise_parts`). The
            tokenizer is the generalist's in every case, so e_k comes from fresh rows when the LM is fresh.

    Raises:
        InputError: (a ValueError) an unknown ``finetune`` value, ``lora`` settings without ``finetune="lora"``, a
            ``shrink_perturb`` that is not two numbers with 0 < shrink <= 1 and perturb >= 0, or
            ``attribute_init="generalist"`` from a generalist pre-trained without attribute tokens (or lacking one of
            the bundle's), or a ``generalist_parts`` that is unknown or starts fresh a module that ``finetune``
            freezes, ``attribute_init="generalist"`` keeps, or ``shrink_perturb`` mixes.
    """
    if finetune not in FINETUNE_MODES:
        raise InputError(
            f"from_generalist: finetune must be one of {', '.join(repr(m) for m in FINETUNE_MODES)}, got {finetune!r}."
        )
    if lora is not None and finetune != "lora":
        raise InputError(f"from_generalist: lora settings apply only with finetune 'lora' (finetune is {finetune!r}).")
    shrink_perturb = _shrink_perturb(shrink_perturb)
    config = AttTokConfig.coerce(config, **config_overrides)  # refuse an unknown key before building anything
    fresh_parts = _fresh_parts(generalist_parts, finetune, config.attribute_init, shrink_perturb)
    card = read_generalist_card(generalist_dir)
    directory = Path(generalist_dir)
    if config.attribute_init == "generalist" and card.get("attribute_tokens") is not True:
        raise InputError(
            f"from_generalist: attribute_init 'generalist' keeps the attribute rows of a generalist pre-trained with "
            f"attribute tokens; {directory} was pre-trained without them (its {CARD_NAME} has no attribute_tokens "
            f"true). Build one with --attribute_tokens true, or set another attribute_init."
        )
    for key, value in (("image_size", image_size), ("channels", channels)):
        if value is not None and card.get(key) is not None and int(value) != int(card[key]):
            raise InputError(
                f"from_generalist: the generalist in {directory} was trained with {key} {card[key]}, this bundle "
                f"feeds {value}; set --{key} {card[key]}."
            )
    backbone = CompactGPTvBackbone.from_pretrained(directory)
    vocab = AttributeVocabulary.coerce(vocabulary)
    # the generalist's rows as it trained them (before shrink_perturb): "generalist" keeps exactly these
    rows = _generalist_attribute_rows(backbone, vocab, directory) if config.attribute_init == "generalist" else None
    for name, given, used in (("vision", vision, backbone.vision_kwargs), ("llm", llm, backbone.llm_kwargs)):
        differ = sorted(k for k, v in (given or {}).items() if k in used and used[k] != v)
        if differ:
            logger.warning("from_generalist: the bundle's %s %s are ignored; the generalist's are %s", name,
                           {k: given[k] for k in differ}, {k: used[k] for k in differ})
    if max_length is not None:
        backbone.max_length = max(int(max_length), backbone.max_length)
    texts = (templates.all_texts() if templates is not None else []) + [k for a in vocab for k in a.keywords]
    if shrink_perturb is not None:
        shrink_and_perturb(backbone, directory, *shrink_perturb, seed=seed)
    if fresh_parts:
        reinitialise_parts(backbone, directory, fresh_parts, seed=seed)
    unknown = _unknown_words(backbone.tokenizer, list(texts) + list(extra_texts))
    if add_words and unknown and seed is not None:
        torch.manual_seed(seed)  # the new rows' draw
    added = backbone.add_words(unknown) if add_words else []
    if added:
        logger.warning(
            "from_generalist: %d word(s) of this bundle are not in the generalist's tokenizer; added with fresh rows "
            "(they train from here): %s", len(added), ", ".join(added[:10]),
        )
    left = [w for w in unknown if w not in added]
    if left:
        logger.warning(
            "from_generalist: %d word(s) of this bundle are not in the generalist's tokenizer and read as <unk>: %s",
            len(left), ", ".join(left[:10]),
        )
    if finetune == "frozen_vision":
        backbone.freeze_vision()
    if finetune == "lora":
        if seed is not None:  # LoRA's A matrices from the seed; AttTok's modules then from the same seed as "full"
            torch.manual_seed(seed)
        backbone.enable_lora(dict(lora) if lora is not None else True)
    if seed is not None:
        torch.manual_seed(seed)
    model = AttTokGPTv(backbone, vocab, config)
    if rows is not None:
        model.set_attribute_rows(*rows)
    return model


def _generalist_attribute_rows(
    backbone: CompactGPTvBackbone, vocabulary: AttributeVocabulary, directory: Path,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a generalist pre-trained with attribute tokens trained for ``vocabulary``'s attributes:
    ``(a_k (K, d) from its book, lm_head rows (K, d))``, in ``vocabulary``'s order, matched by token name.

    Raises:
        InputError: an attribute token of ``vocabulary`` is not in the generalist's vocabulary.
    """
    trained = AttributeVocabulary.from_json(directory / "vocabulary.json")
    index = {a.token: k for k, a in enumerate(trained.attributes)}
    missing = [a.token for a in vocabulary.attributes if a.token not in index]
    if missing:
        raise InputError(
            f"from_generalist: attribute_init 'generalist': the generalist in {directory} has no row for "
            f"{', '.join(missing[:5])} (its vocabulary.json); set another attribute_init."
        )
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    book = state["book.attribute_embeddings"][[index[a.token] for a in vocabulary.attributes]]
    ids = backbone.tokenizer.convert_tokens_to_ids([a.token for a in vocabulary.attributes])
    head = backbone.output_embeddings().weight.detach()
    return book.clone(), head[torch.tensor(ids, device=head.device)].clone()


def _shrink_perturb(value: Sequence[float] | None) -> tuple[float, float] | None:
    """``shrink_perturb`` checked: None, or ``(shrink, perturb)`` with 0 < shrink <= 1 and perturb >= 0."""
    if value is None:
        return None
    try:
        shrink, perturb = (float(v) for v in value)
    except (TypeError, ValueError):
        shrink = perturb = float("nan")
    if not (0.0 < shrink <= 1.0 and perturb >= 0.0):
        raise InputError(
            f"from_generalist: shrink_perturb must be [shrink, perturb] with 0 < shrink <= 1 and perturb >= 0 "
            f"(e.g. [0.4, 0.1]), got {value!r}."
        )
    return shrink, perturb


def _fresh_backbone(directory: str | os.PathLike, seed: int | None) -> CompactGPTvBackbone:
    """A randomly initialised backbone of ``directory``'s architecture (``backbone.json``), drawn from ``seed`` when
    given: the fresh weights of :func:`shrink_and_perturb` and :func:`reinitialise_parts`."""
    if seed is not None:
        torch.manual_seed(seed)
    return CompactGPTvBackbone.from_config_dir(directory)


def _fresh_parts(parts: str, finetune: str, attribute_init: str, shrink_perturb: Any) -> tuple[str, ...]:
    """The backbone modules ``generalist_parts`` starts fresh, after refusing the combinations that contradict it."""
    if parts not in GENERALIST_PARTS:
        raise InputError(
            f"from_generalist: generalist_parts must be one of {', '.join(repr(p) for p in GENERALIST_PARTS)}, "
            f"got {parts!r}."
        )
    kept = GENERALIST_PARTS[parts]
    fresh = GENERALIST_FRESH.get(parts) or tuple(m for m in GENERALIST_PARTS["all"] if m not in kept)
    if not fresh:
        return fresh
    clash = None
    frozen = COMPACT_FROZEN_PARTS[finetune]
    stuck = [p for p in fresh if any(p == f or p.startswith(f + ".") for f in frozen)]
    if stuck:
        clash = f"finetune {finetune!r} freezes {'/'.join(stuck)}: it would keep its random draw"
    elif attribute_init == "generalist" and "llm.lm_head" in fresh:
        clash = "attribute_init 'generalist' keeps the LM's trained attribute rows"
    elif shrink_perturb is not None:
        clash = "shrink_perturb mixes the trained weights with fresh ones itself"
    if clash:
        raise InputError(f"from_generalist: generalist_parts {parts!r} starts {'/'.join(fresh)} fresh, but {clash}.")
    return fresh


@torch.no_grad()
def reinitialise_parts(
    backbone: CompactGPTvBackbone, directory: str | os.PathLike, parts: Sequence[str], seed: int | None = None,
) -> CompactGPTvBackbone:
    """In place, the named parts of ``backbone`` (state-dict prefixes among ``GENERALIST_PARTS["all"]``: ``"vision"``,
    ``"projector"``, ``"llm.model.embed_tokens"``, ``"llm.model.layers"``, ``"llm.model.norm"``, ``"llm.lm_head"``;
    or the finer patterns of :data:`LM_QUERY_KEY`, ``*`` any layer index) get the parameters and buffers of a fresh, randomly initialised backbone built from ``directory``'s
    ``backbone.json`` (drawn from ``seed`` when given), as a model trained from scratch starts. Returns ``backbone``.

    Raises:
        ValueError: a name in ``parts`` is not one of those parts.
        InputError: (a ValueError) one of ``llm.lm_head`` and ``llm.model.embed_tokens`` without the other for an LM
            whose lm_head is tied to its input embeddings (``tie_word_embeddings``): the one tensor cannot be both
            kept and fresh.
    """
    known = GENERALIST_PARTS["all"] + LM_QUERY_KEY
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"reinitialise_parts: unknown part(s) {unknown}; expected {known}")
    if backbone.llm.config.tie_word_embeddings and ("llm.lm_head" in parts) != ("llm.model.embed_tokens" in parts):
        raise InputError(
            f"from_generalist: the LM in {directory} ties lm_head to its input embeddings (tie_word_embeddings), so "
            f"one of them cannot start fresh while the other is kept; choose another generalist_parts."
        )
    fresh = _fresh_backbone(directory, seed).state_dict()
    state = {k: v for k, v in fresh.items() if any(fnmatch.fnmatchcase(k, p + ".*") for p in parts)}
    backbone.load_state_dict(state, strict=False)  # strict=False: the kept modules' keys are absent on purpose
    logger.info("from_generalist: %s started fresh (%d tensors); the rest as the generalist trained it",
                "/".join(parts), len(state))
    return backbone


@torch.no_grad()
def shrink_and_perturb(
    backbone: CompactGPTvBackbone, directory: str | os.PathLike, shrink: float, perturb: float, seed: int | None = None,
) -> CompactGPTvBackbone:
    """In place, every parameter ``theta`` of ``backbone`` becomes ``shrink * theta + perturb * theta_fresh``, where
    ``theta_fresh`` is the same parameter of a fresh, randomly initialised backbone built from ``directory``'s
    ``backbone.json`` (drawn from ``seed`` when given). Buffers (batch-norm statistics) are kept. Returns ``backbone``.
    """
    fresh = dict(_fresh_backbone(directory, seed).named_parameters())
    for name, p in backbone.named_parameters():
        p.mul_(shrink).add_(fresh[name].to(p.dtype), alpha=perturb)
    logger.info("from_generalist: shrink and perturb (%s, %s) applied to %d parameters", shrink, perturb, len(fresh))
    return backbone


def _unknown_words(tokenizer: Any, texts: Sequence[str]) -> list[str]:
    """Words of ``texts`` (attribute tokens aside) that the word-level tokenizer maps to ``<unk>``, sorted."""
    vocab = tokenizer.get_vocab()
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    out: set[str] = set()
    for text in texts:
        plain = re.sub(r"<\|[a-z0-9_]+\|>", " ", str(text).lower())
        out.update(w for w, _ in pre.pre_tokenize_str(plain) if w not in vocab)
    return sorted(out)
