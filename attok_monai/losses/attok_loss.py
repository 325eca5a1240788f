"""The AttTok training objective ``L_NTP + lambda * L_ACM`` (paper section 4.3); lambda is set from outside
(:class:`~attok_monai.handlers.LambdaScheduleHandler` steps :class:`~attok_monai.optimizers.LambdaSchedule`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from attok_monai.errors import InputError

from .acm import ACMLoss

__all__ = ["AttTokLoss", "ACM_WEIGHTINGS"]


ACM_WEIGHTINGS = ("mean", "per_token", "ntp_sum")


class AttTokLoss(_Loss):
    """Next-token prediction cross-entropy plus ``lambda * ACM``.

    Args:
        use_acm: add the ACM term (False: NTP only, whatever is passed; with True, ACM is added when ``f_a`` is
            given, so a model without ACM, whose training step passes ``f_a=None``, trains on NTP alone).
        tau: the ACM temperature (paper: 1), see :class:`ACMLoss`.
        lambda_weight: the current lambda; :class:`attok_monai.handlers.LambdaScheduleHandler` steps it.
        ignore_index: label value of positions without NTP loss (prompt, padding).
        acm_weighting: how ACM is weighed against NTP (the paper writes ``L_NTP + lambda L_ACM`` without saying over
            what each is averaged). With T answer tokens (labels != ignore_index after the shift), S answers (rows
            with at least one such token), N predicted attribute embeddings and per-item losses ``ce_t``, ``acm_n``:

            - ``"mean"`` (default, as before): ``sum(ce)/T + lambda * sum(acm)/N``. An answer has ~8 tokens and one
              ACM term, so ACM counts as much as all answer tokens together;
            - ``"per_token"``: ``(sum(ce) + lambda * sum(acm)) / T``: each ACM term weighs as one answer token;
            - ``"ntp_sum"``: ``sum(ce)/S + lambda * sum(acm)/N``: NTP summed over each answer, averaged over
              answers (same NTP:ACM ratio as ``"per_token"``, but a ~T/S times larger loss and gradient, which
              matters under gradient clipping).

            Without ACM the loss is ``sum(ce)/T`` for ``"mean"`` and ``"per_token"`` and ``sum(ce)/S`` for
            ``"ntp_sum"``.

    ``forward(logits (B, L, V), labels (B, L), f_a (N, d) | None, attr_targets (N,) | None, book (K, 3, d) | None,
    book_mask=None)``: ``f_a`` and ``book`` are already projected by the model's theta
    (:meth:`attok_monai.networks.nets.AttTokGPTv.acm_inputs`); labels are aligned with the input positions and shifted here (position t predicts t+1), as in
    Hugging Face causal LMs. Returns the total loss; ``last_components`` holds the detached ``ntp``, ``acm`` and
    ``lambda`` of the last call for logging.
    """

    def __init__(
        self, use_acm: bool = True, tau: float = 1.0, lambda_weight: float = 1.0, ignore_index: int = -100,
        acm_weighting: str = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(use_acm, bool):
            raise TypeError(
                f"AttTokLoss: use_acm must be a bool, got {type(use_acm).__name__} (the loss no longer takes an ACMLoss: "
                "theta is the network's acm_projection, and the training step passes theta(f^a) and theta(book))."
            )
        if acm_weighting not in ACM_WEIGHTINGS:
            raise InputError(f"AttTokLoss: acm_weighting must be one of {ACM_WEIGHTINGS}, got {acm_weighting!r}.")
        self.acm = ACMLoss(tau=tau) if use_acm else None
        self.acm_weighting = acm_weighting
        self.lambda_weight = float(lambda_weight)
        self.ignore_index = ignore_index
        self.last_components: dict[str, float] = {}

    def ntp(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. (4): cross-entropy of the shifted answer tokens, the mean over tokens (``"ntp_sum"``: the sum over
        each answer, the mean over answers)."""
        if logits.ndim != 3 or labels.shape != logits.shape[:2]:
            raise ValueError(
                f"AttTokLoss: logits must be (B, L, V) and labels (B, L); got {tuple(logits.shape)} and "
                f"{tuple(labels.shape)}."
            )
        shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
        shift_labels = labels[:, 1:].reshape(-1)
        if (shift_labels != self.ignore_index).sum() == 0:
            return shift_logits.sum() * 0.0
        ce = F.cross_entropy(shift_logits, shift_labels, ignore_index=self.ignore_index)
        if self.acm_weighting == "ntp_sum":  # sum over each answer, mean over answers: mean * T / S
            valid = labels[:, 1:] != self.ignore_index
            ce = ce * valid.sum() / valid.any(1).sum()
        return ce

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        f_a: torch.Tensor | None = None,
        attr_targets: torch.Tensor | None = None,
        book: torch.Tensor | None = None,
        book_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ntp = self.ntp(logits, labels)
        total = ntp
        acm_value = 0.0
        if self.acm is not None and f_a is not None and f_a.shape[0] > 0:
            if attr_targets is None or book is None:
                raise ValueError("AttTokLoss: ACM needs attr_targets and book together with f_a.")
            acm = self.acm(f_a, attr_targets, book, book_mask)
            acm_value = float(acm.detach())
            if self.acm_weighting == "per_token":  # lambda * sum(acm) / T, with acm the mean over N terms
                valid_acm = (attr_targets != self.acm.ignore_index).sum()
                acm = acm * valid_acm / (labels[:, 1:] != self.ignore_index).sum().clamp(min=1)
            if self.lambda_weight != 0:
                total = total + self.lambda_weight * acm
            else:
                total = total + 0.0 * acm  # keep theta in the graph (DDP needs every parameter used)
        self.last_components = {"ntp": float(ntp.detach()), "acm": acm_value, "lambda": self.lambda_weight}
        return total
