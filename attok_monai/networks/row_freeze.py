"""Row-wise freezing of embedding and lm_head weights (AttTok appendix A.1).

The paper keeps the embedding and classifier rows of all original tokens unchanged and trains only the rows of the
new attribute tokens, "by zeroing their gradients ... via PyTorch hook functions". A gradient hook alone is not
enough with AdamW: decoupled weight decay shrinks every row of a parameter whatever its gradient. So the
partially-frozen weights go to an optimizer group with ``weight_decay=0``
(:func:`attok_monai.optimizers.optimizer_param_groups`); with a zero gradient from the first step Adam's moments stay
zero and the frozen rows stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["freeze_rows_except", "RowFreeze"]


class RowFreeze:
    """A gradient hook on a (M, d) weight that zeroes the gradient of every row not in ``trainable_rows``."""

    def __init__(self, weight: nn.Parameter, trainable_rows: Sequence[int]) -> None:
        if weight.ndim != 2:
            raise ValueError(f"RowFreeze: expected a 2D (rows, dim) weight, got shape {tuple(weight.shape)}.")
        rows = torch.as_tensor(list(trainable_rows), dtype=torch.long)
        if rows.numel() and (rows.min() < 0 or rows.max() >= weight.shape[0]):
            raise ValueError(f"RowFreeze: trainable rows must be in [0, {weight.shape[0]}), got {rows.tolist()}.")
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[rows] = 1
        self.weight = weight
        self.mask = mask
        self.trainable_rows = rows
        self.handle: RemovableHandle = weight.register_hook(self._hook)
        weight._attok_row_freeze = self  # marks the parameter for optimizers.optimizer_param_groups

    def _hook(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.mask.to(device=grad.device, dtype=grad.dtype)

    def remove(self) -> None:
        self.handle.remove()
        if getattr(self.weight, "_attok_row_freeze", None) is self:
            del self.weight._attok_row_freeze


def freeze_rows_except(module_or_weight: nn.Module | nn.Parameter, trainable_rows: Sequence[int]) -> RowFreeze:
    """Train only ``trainable_rows`` of an ``nn.Embedding``/``nn.Linear`` weight (or a 2D parameter).

    A tied lm_head shares the embedding's parameter: one call covers both uses. Returns the :class:`RowFreeze`
    (``.remove()`` undoes it). The parameter keeps ``requires_grad=True``.
    """
    weight = module_or_weight if isinstance(module_or_weight, nn.Parameter) else module_or_weight.weight
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"freeze_rows_except: expected a module with a .weight Parameter, got {type(weight)}.")
    existing = getattr(weight, "_attok_row_freeze", None)
    if existing is not None:
        existing.remove()
    weight.requires_grad_(True)
    return RowFreeze(weight, trainable_rows)
