"""AdamW parameter groups: which parameters are decayed, and at what learning rate each part of the model trains."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from attok_monai.errors import InputError

__all__ = ["optimizer_param_groups"]


def optimizer_param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Iterable[str] = ("bias", "norm", "book"),
    lr: float | None = None,
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict]:
    """AdamW parameter groups: decayed weights; and a ``weight_decay=0`` group for biases, norms, the embedding
    book and every row-frozen weight (so that decay cannot move frozen rows). Only parameters that require grad.

    A parameter is exempt when it is 1-D, row-frozen, or one of the dot-separated parts of its lower-case name
    contains an entry of ``no_decay``: with the default, ``*.bias``, ``*layernorm*``/``*norm*`` and everything under
    a module named ``book`` (``AttTokGPTv.book``: ``a_k`` and ``e_k``, which the paper treats as token embeddings).
    (Up to this version the default entry was ``"embedding_book"``, which matched no parameter: the book was decayed.)

    ``lr_scales`` (with ``lr``) trains parts of the model at their own learning rate (discriminative fine-tuning):
    ``{"backbone.vision": 0.1}`` puts every parameter whose name starts with ``backbone.vision.`` into groups with
    ``lr = 0.1 * lr`` (decayed and exempt as above); the first matching prefix wins, everything else keeps the
    optimizer's ``lr``. Schedulers scale each group's own ``lr``, so the ratio holds through warm-up and decay. A
    prefix that matches no trainable parameter is an error (a misspelt module name would otherwise change nothing).
    ``lr_scales=None`` or ``{}`` gives the groups above, unchanged.
    """
    scales = dict(lr_scales or {})
    if scales and lr is None:
        raise InputError("optimizer_param_groups: lr_scales needs lr (the optimizer's base learning rate)")
    for prefix, scale in scales.items():
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise InputError(f"optimizer_param_groups: lr_scales[{prefix!r}] must be a positive number, got {scale!r}")
    groups: dict[tuple[str | None, bool], list] = {}
    matched: set[str] = set()
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        parts = name.lower().split(".")
        exempt = hasattr(p, "_attok_row_freeze") or p.ndim < 2 or any(s in part for part in parts for s in no_decay)
        prefix = next((k for k in scales if name == k or name.startswith(k + ".")), None)
        if prefix is not None:
            matched.add(prefix)
        groups.setdefault((prefix, exempt), []).append(p)
    missing = sorted(set(scales) - matched)
    if missing:
        raise InputError(f"optimizer_param_groups: lr_scales names {missing}, which match no trainable parameter")
    out = []
    for prefix in [None, *scales]:
        for exempt in (False, True):
            params = groups.get((prefix, exempt))
            if not params:
                continue
            group = {"params": params, "weight_decay": 0.0 if exempt else weight_decay}
            if prefix is not None:
                group["lr"] = float(lr) * float(scales[prefix])
            out.append(group)
    return out
