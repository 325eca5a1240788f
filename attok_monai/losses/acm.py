"""Attribute-centric matching (ACM) loss (AttTok paper section 4.3, eqs. 8-9).

For a predicted attribute embedding f^a of attribute k, the three tokens of its own book B_k are positives and the
tokens of every other book are negatives::

    s(a, b) = cos(theta(a), theta(b))                                                       (8)
    L_ACM   = -log( sum_{p in B_k} e^{s(f,p)/tau} / (sum_{p in B_k} e^{s(f,p)/tau}
                                                    + sum_{n in B_j, j != k} e^{s(f,n)/tau}) )  (9)

The denominator is the sum over all 3K book tokens, so ``L = logsumexp_all(s/tau) - logsumexp_{B_k}(s/tau)``,
computed for all N predictions and K books at once.

The loss holds no parameters: theta is the model's
(:class:`~attok_monai.networks.blocks.ACMProjection`), and the loss takes ``theta(f^a)`` and ``theta(book)``, as
MONAI's ``ContrastiveLoss`` and open_clip's ``ClipLoss`` take already-projected features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["ACMLoss"]


class ACMLoss(_Loss):
    """Multi-positive InfoNCE of projected attribute embeddings against the projected embedding book.

    Args:
        tau: temperature (the paper uses 1).
        reduction: ``"mean"`` (over valid rows), ``"sum"`` or ``"none"`` (per row, 0 for ignored rows).
        ignore_index: target value whose rows are ignored.

    Shapes:
        ``z_a``: (N, d), theta(f^a); ``target``: (N,) long in [0, K) or ``ignore_index``; ``book``: (K, 3, d),
        theta of the book tokens; ``book_mask``: optional (K, 3) bool, True = leave that token out (e.g. a prototype
        never updated). Returns a scalar (``"mean"``, ``"sum"``) or (N,) (``"none"``).
    """

    def __init__(
        self, tau: float = 1.0, reduction: LossReduction | str = LossReduction.MEAN, ignore_index: int = -100
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if tau <= 0:
            raise ValueError(f"ACMLoss: tau must be > 0, got {tau}.")
        self.tau = tau
        self.ignore_index = ignore_index

    @staticmethod
    def similarities(z_a: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        """Cosine similarities of eq. (8) of projected inputs: (N, d) x (K, 3, d) -> (N, K, 3)."""
        k, d = book.shape[0], book.shape[-1]
        z = F.normalize(z_a, dim=-1)
        p = F.normalize(book.reshape(-1, d), dim=-1)
        return (z @ p.t()).view(-1, k, 3)

    def forward(
        self, z_a: torch.Tensor, target: torch.Tensor, book: torch.Tensor, book_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if z_a.ndim != 2:
            raise ValueError(f"ACMLoss: z_a (theta(f_a)) must be (N, d), got {tuple(z_a.shape)}.")
        d = z_a.shape[-1]
        if book.ndim != 3 or book.shape[1:] != (3, d):
            raise ValueError(f"ACMLoss: book must be (K, 3, {d}), got {tuple(book.shape)}.")
        if target.ndim != 1 or target.shape[0] != z_a.shape[0]:
            raise ValueError(f"ACMLoss: target must be ({z_a.shape[0]},), got {tuple(target.shape)}.")
        if target.is_floating_point():
            raise ValueError(f"ACMLoss: target must hold integer attribute indices, got {target.dtype}.")
        k = book.shape[0]
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= k))
        if bad.any():
            raise ValueError(f"ACMLoss: target {int(target[bad][0])} out of range [0, {k}) (K = {k} books).")
        if book_mask is not None and (book_mask.shape != (k, 3) or book_mask.dtype != torch.bool):
            raise ValueError(f"ACMLoss: book_mask must be bool ({k}, 3), got {tuple(book_mask.shape)}.")

        logits = self.similarities(z_a, book).float() / self.tau  # (N, K, 3)
        if book_mask is not None:
            logits = logits.masked_fill(book_mask.to(logits.device), -torch.inf)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        log_all = torch.logsumexp(logits.flatten(1), dim=1)  # (N,)
        pos = logits.gather(1, safe_target.view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)  # (N, 3)
        log_pos = torch.logsumexp(pos, dim=1)  # (N,)
        loss = torch.where(valid, log_all - log_pos, torch.zeros_like(log_all))
        if self.reduction == LossReduction.MEAN.value:
            return loss.sum() / valid.sum().clamp(min=1)
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
