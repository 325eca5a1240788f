"""AttTokConfig: the hyper-parameters of :class:`~attok_monai.networks.nets.AttTokGPTv`, validated once and saved
with the model as ``attok.json`` (the ``LoraConfig`` of PEFT's config / layer / model split)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attok_monai.errors import InputError, require_flag
from attok_monai.fileio import atomic_write

__all__ = ["AttTokConfig", "ACM_WEIGHTINGS", "ATTRIBUTE_INITS", "FA_POSITIONS", "PROTOTYPE_INITS"]

FA_POSITIONS = ("decision", "attribute")
PROTOTYPE_INITS = ("first_batch", "class_means")
ATTRIBUTE_INITS = ("keyword", "distinct", "first_token", "generalist")
# the weightings :class:`attok_monai.losses.AttTokLoss` knows (the network records the key, the loss applies it;
# networks do not import losses, a test checks that the two lists agree)
ACM_WEIGHTINGS = ("mean", "per_token", "ntp_sum")


@dataclass
class AttTokConfig:
    """What AttTok adds to a GPTv backbone, and how (paper section 4; Table 3 for the switches).

    Args:
        use_attribute_tokens, use_acc, use_acm: the ablation switches. All False is the baseline (plain-text
            answers); ``+ACC``, ``+ACM`` and ``+All`` add the modules on top of the attribute tokens.
        acc_heads, gamma: ACC heads and residual weight (paper: 1 head, gamma=0.1).
        acc_inner_dim: ACC query/key/value width (None = d, the paper; smaller = the low-rank option, see
            :class:`~attok_monai.networks.blocks.ACCAdapter`).
        acc_norm: LayerNorm ACC's queries and book tokens before its attention (default False: eq. 6 as in the
            paper; see ``docs/study_defaults.md``).
        acc_bias: whether ACC's query, value and output projections have biases (default True, as before; the paper's
            eqs. 6-7 have none: W_Q, W_K, W_V, W_O are matrices). With inputs at the text scale (norm ~0.5) the
            default biases are as large as the input-dependent parts, and the output bias adds one vector to every
            image (``docs/study_defaults.md``, round 15).
        acc_logit_scale: ACC's inverse attention temperature, a factor on its scaled dot products (> 0; default 1.0:
            eq. 6 as in the paper), or its start when ``acc_logit_scale_learned``; see
            :class:`~attok_monai.networks.blocks.ACCAdapter` and ``docs/study_defaults.md`` (round 15).
        acc_logit_scale_learned: train ACC's logit scale (as ``log s``) with the model (default False).
        acc_book_grad: whether ACC's keys and values pass gradient to the book's ``a_k`` and ``e_k`` (default True: the
            paper trains both jointly with the model, section 4.1, and does not single out a path). False detaches the
            book where ACC reads it; ``a_k`` still trains as the attribute token's embedding and through ACM, ``e_k``
            through ACM (without ACM and with False, ``e_k`` stays as initialised).
        momentum: EMA momentum of the visual prototypes (paper: 0.99), in [0, 1].
        tau: ACM temperature (paper: 1), > 0. The model records it; the training loss
            (:class:`~attok_monai.losses.AttTokLoss`) takes the same key.
        fa_position: which final hidden state is f^a, the input of ACM (section 4.3 does not say):
            ``"decision"`` (default, as before): the position whose next token is the attribute token (for the first
            attribute, ``<|attribute_begin|>``): the vector the LM head turns into the class decision;
            ``"attribute"``: the attribute token's own position (the state after the model has read ``a_k``).
            Plain-text answers (no attribute tokens): the last prompt position, or the first answer token.
            The default stays ``"decision"`` so that models saved before the key existed rebuild as trained; the
            classification bundles set ``"attribute"``, chosen by the study in ``docs/study_defaults.md``.
        acm_bias: whether ACM's projection theta has a bias (see :class:`~attok_monai.networks.blocks.ACMProjection`;
            default True, as before).
        acm_weighting: how the training loss weighs ACM against NTP (``"mean"``, ``"per_token"``, ``"ntp_sum"``; see
            :class:`~attok_monai.losses.AttTokLoss`). The model does not use it; it is saved so that a model
            (``attok.json``) records how it was trained. The bundles pass the same key to the loss.
        prototype_init: how the visual prototypes start: ``"first_batch"`` (default, as before: each prototype is
            the mean visual token of its class in the first training batch that holds the class, then eq. 5) or
            ``"class_means"``: :meth:`AttTokGPTv.init_prototypes` sets them to the class means over the first
            ``prototype_init_batches`` training batches before the first step (``PrototypeEMAHandler`` calls it).
        prototype_init_batches: batches for ``"class_means"`` (>= 1).
        attribute_init: how the new attribute-token rows (``a_k``, its input-embedding row and its lm_head row)
            start; the paper does not say. ``"keyword"`` (default, as before): the mean of the rows of the first
            keyword's tokens, the same vector as ``e_k``. ``"distinct"``: the mean of the rows of the keyword tokens
            that no other attribute's first keyword has (``"mild"`` for "mild non-proliferative diabetic
            retinopathy" beside "moderate non-proliferative diabetic retinopathy"), all of them when none is unique.
            With ``"keyword"``, grades that share most of their words start with nearly the same lm_head row (the
            class decision starts tied). ``"first_token"``: the rows of the keyword's first token (the first word
            of the answer, whose lm_head row makes the plain-text model's class decision), when no other
            attribute's keyword starts with it, else as ``"distinct"``: a model that already names the classes (a
            generalist) then starts with the attribute token deciding as its first answer word does, where a mean
            of several rows averages that word's logit with the words after it. ``"generalist"``: the rows a
            generalist pre-trained with attribute tokens trained (``a_k`` from its book, its lm_head rows; the
            generalist bundle's ``attribute_tokens: true``, a departure from the paper for study); only a model started
            from such a generalist takes it (:func:`~attok_monai.engines.generalist.build_compact_from_generalist`
            sets the rows; the module alone starts them as ``"distinct"``). ``e_k`` is the whole keyword's mean in
            every mode.
        attribute_markers: whether the answer wraps its attribute tokens in ``<|attribute_begin|>`` ...
            ``<|attribute_end|>`` (default True, as before) or places them alone in front of the text (False:
            ``<|a|> text``, as the paper words it, section 5.1 "all attribute tokens are placed in front of the
            original text"; it names no markers). With markers the class decision is read at ``<|attribute_begin|>``,
            a new row the backbone has never seen; without them at the last prompt position, where the plain-text
            model reads its first answer word (with ``attribute_init="first_token"`` a generalist then starts deciding
            as its plain-text answer does). The marker tokens stay in the tokenizer either way.
        plain_markers: a control for the markers alone (default False): with ``use_attribute_tokens=False`` the plain
            answer is wrapped in the two markers with no attribute token between them,
            ``<|attribute_begin|><|attribute_end|> text``, and the class probabilities score each class's text after
            them. It separates what the markers' new rows do to fine-tuning from what the attribute tokens carry;
            with attribute tokens it is refused (``attribute_markers`` sets their markers).

    Raises:
        ValueError: a value out of its range or choices (from ``__post_init__``), or an unknown key
            (:meth:`from_dict`, :meth:`from_json_file`).
    """

    use_attribute_tokens: bool = True
    use_acc: bool = True
    use_acm: bool = True
    acc_heads: int = 1
    gamma: float = 0.1
    momentum: float = 0.99
    tau: float = 1.0
    acc_inner_dim: int | None = None
    fa_position: str = "decision"
    acm_bias: bool = True
    acm_weighting: str = "mean"
    prototype_init: str = "first_batch"
    prototype_init_batches: int = 8
    acc_norm: bool = False
    acc_book_grad: bool = True
    attribute_init: str = "keyword"
    acc_logit_scale: float = 1.0
    acc_bias: bool = True
    acc_logit_scale_learned: bool = False
    attribute_markers: bool = True
    plain_markers: bool = False

    def __post_init__(self) -> None:
        for name in ("use_attribute_tokens", "use_acc", "use_acm", "acm_bias", "acc_norm", "acc_book_grad",
                     "acc_logit_scale_learned", "acc_bias", "attribute_markers", "plain_markers"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
                value = bool(value)  # 0 / 1, as older hand-made dicts held them
            setattr(self, name, require_flag(value, f"AttTokConfig: {name}"))  # the text "false" is not False
        for name, choices in (("fa_position", FA_POSITIONS), ("acm_weighting", ACM_WEIGHTINGS),
                              ("prototype_init", PROTOTYPE_INITS), ("attribute_init", ATTRIBUTE_INITS)):
            if getattr(self, name) not in choices:
                raise InputError(f"AttTokConfig: {name} must be one of {choices}, got {getattr(self, name)!r}.")
        if self.plain_markers and self.use_attribute_tokens:
            raise InputError("AttTokConfig: plain_markers wraps a plain-text answer (use_attribute_tokens false); "
                             "with attribute tokens, attribute_markers sets their markers.")
        self.acc_heads = int(self.acc_heads)
        self.prototype_init_batches = int(self.prototype_init_batches)
        if self.acc_heads < 1:
            raise InputError(f"AttTokConfig: acc_heads must be >= 1, got {self.acc_heads}.")
        if self.prototype_init_batches < 1:
            raise InputError(f"AttTokConfig: prototype_init_batches must be >= 1, got {self.prototype_init_batches}.")
        if self.acc_inner_dim is not None:
            self.acc_inner_dim = int(self.acc_inner_dim)
            if self.acc_inner_dim < 1:
                raise InputError(f"AttTokConfig: acc_inner_dim must be None or >= 1, got {self.acc_inner_dim}.")
        if not 0.0 <= self.momentum <= 1.0:
            raise InputError(f"AttTokConfig: momentum must be in [0, 1], got {self.momentum}.")
        self.acc_logit_scale = float(self.acc_logit_scale)
        if not (self.acc_logit_scale > 0 and math.isfinite(self.acc_logit_scale)):
            raise InputError(f"AttTokConfig: acc_logit_scale must be a finite number > 0, got {self.acc_logit_scale}.")
        if self.tau <= 0:
            raise InputError(f"AttTokConfig: tau must be > 0, got {self.tau}.")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "") -> AttTokConfig:
        """A config from a dict (e.g. ``attok.json``); keys left out take their defaults (files saved before a key
        existed), unknown keys are refused by name."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            where = f" in {source}" if source else ""
            raise InputError(
                f"AttTokConfig: unknown key(s) {unknown}{where}; known keys: {', '.join(cls.field_names())}."
            )
        return cls(**values)

    @classmethod
    def coerce(cls, config: AttTokConfig | Mapping[str, Any] | None = None, **overrides: Any) -> AttTokConfig:
        """``config`` (a config, a dict of its keys or None for the defaults) with ``overrides`` applied (keys as
        keyword arguments, as the bundle configs pass them to the model builders); unknown keys refused by name."""
        if isinstance(config, AttTokConfig):
            return cls.from_dict({**config.to_dict(), **overrides}) if overrides else config
        if config is not None and not isinstance(config, Mapping):
            raise InputError(f"AttTokConfig: expected an AttTokConfig, a dict or None, got {type(config).__name__}.")
        return cls.from_dict({**(config or {}), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write ``attok.json`` (atomic)."""
        text = json.dumps(self.to_dict(), indent=2)

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        atomic_write(path, write)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> AttTokConfig:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise InputError(f"AttTokConfig: {path} must hold a JSON object, got {type(values).__name__}.")
        return cls.from_dict(values, source=str(path))
