"""AdamW parameter groups: which parameters are decayed."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["optimizer_param_groups"]


def optimizer_param_groups(
    model: nn.Module, weight_decay: float, no_decay: Iterable[str] = ("bias", "norm", "book")
) -> list[dict]:
    """AdamW parameter groups: decayed weights; and a ``weight_decay=0`` group for biases, norms, the embedding
    book and every row-frozen weight (so that decay cannot move frozen rows). Only parameters that require grad.

    A parameter is exempt when it is 1-D, row-frozen, or one of the dot-separated parts of its lower-case name
    contains an entry of ``no_decay``: with the default, ``*.bias``, ``*layernorm*``/``*norm*`` and everything under
    a module named ``book`` (``AttTokGPTv.book``: ``a_k`` and ``e_k``, which the paper treats as token embeddings).
    (Up to this version the default entry was ``"embedding_book"``, which matched no parameter: the book was decayed.)
    """
    decay, no_dec = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        parts = name.lower().split(".")
        if hasattr(p, "_attok_row_freeze") or p.ndim < 2 or any(s in part for part in parts for s in no_decay):
            no_dec.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_dec:
        groups.append({"params": no_dec, "weight_decay": 0.0})
    return groups
