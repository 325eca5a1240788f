"""The ACM projection theta (AttTok paper section 4.3, eq. 8): a learnable linear map applied to the predicted
attribute embeddings f^a and to the embedding book before the cosine similarities of the ACM loss.

theta belongs to the model (it is trained and saved with it, and retrieval scores use it);
:class:`~attok_monai.losses.ACMLoss` takes the projected features and holds no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ACMProjection"]


class ACMProjection(nn.Module):
    """theta(x) = W x (+ b), applied on the last dimension.

    Args:
        dim: d, the embedding width (theta is d -> d).
        bias: whether theta has a bias (default True). The paper does not say. With a bias, theta(x) = W x + b, and
            when ``|b|`` dominates ``|W x|`` (it does at the start of training: the default init gives ``|b| ~ 0.58``
            against ``|W x| ~ 0.08`` for book tokens of norm ~0.3), every projected token points along ``b`` and all
            cosines of eq. (8) start near 1. ``bias=False`` makes theta linear, so the cosines after theta start at
            those of the inputs.

    Shapes:
        ``forward(x)``: (..., d) -> (..., d), in theta's dtype (inputs from a bf16 backbone are cast to it; autocast
        may lower it).
    """

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"ACMProjection: dim must be >= 1, got {dim}.")
        self.dim = dim
        self.linear = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"ACMProjection: expected (..., {self.dim}), got {tuple(x.shape)}.")
        lead = x.shape[:-1]
        out = self.linear(x.reshape(-1, self.dim).to(self.linear.weight.dtype))
        return out.view(*lead, self.dim)
