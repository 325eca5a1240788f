"""The multimodal embedding book of AttTok (paper section 4.1, eq. 5).

For every attribute k the book holds three d-dimensional tokens ``B_k = {a_k, e_ind(k), f~v_k}``:

- ``a_k``: the learnable attribute-token embedding (the new row ``<|modality_concept|>`` of the LLM's embedding table),
- ``e_ind(k)``: the learnable keyword text embedding, initialised from the mean of the keyword's token embeddings,
- ``f~v_k``: the visual prototype, a buffer updated by exponential moving average of the mean visual tokens of the
  images that carry attribute k (no gradient).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["EmbeddingBook"]


class EmbeddingBook(nn.Module):
    """K embedding books of three d-dimensional tokens each.

    Args:
        num_attributes: K, the number of attributes.
        dim: d, the embedding width (the LLM hidden size).
        momentum: mu of eq. (5); ``new = mu * old + (1 - mu) * batch_mean``.
        init_std: standard deviation of the random initialisation of ``a_k`` and ``e_k``.
        first_update: what the first update of an attribute's prototype does. ``"copy"`` (default) sets the
            prototype to the batch mean, so that a prototype is a real visual mean from its first step instead of a
            near-zero vector that needs ~1/(1-mu) = 100 updates to reach scale; ``"ema"`` applies eq. (5) literally
            from the zero initialisation. Prototypes never updated stay zero and are reported by
            :meth:`key_padding_mask` so attention can ignore them.

    Shapes:
        ``attribute_embeddings``: (K, d) parameter; ``keyword_embeddings``: (K, d) parameter;
        ``prototypes``: (K, d) float32 buffer; ``tokens()``: (K, 3, d) in the order (attribute, keyword, visual).
    """

    def __init__(
        self, num_attributes: int, dim: int, momentum: float = 0.99, init_std: float = 0.02, first_update: str = "copy"
    ) -> None:
        super().__init__()
        if num_attributes < 1:
            raise ValueError(f"EmbeddingBook: num_attributes must be >= 1, got {num_attributes}.")
        if dim < 1:
            raise ValueError(f"EmbeddingBook: dim must be >= 1, got {dim}.")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EmbeddingBook: momentum must be in [0, 1], got {momentum}.")
        if first_update not in ("copy", "ema"):
            raise ValueError(f"EmbeddingBook: first_update must be 'copy' or 'ema', got {first_update!r}.")
        self.num_attributes = num_attributes
        self.dim = dim
        self.momentum = momentum
        self.first_update = first_update
        self.attribute_embeddings = nn.Parameter(torch.randn(num_attributes, dim) * init_std)
        self.keyword_embeddings = nn.Parameter(torch.randn(num_attributes, dim) * init_std)
        self.register_buffer("prototypes", torch.zeros(num_attributes, dim))
        self.register_buffer("prototype_initialized", torch.zeros(num_attributes, dtype=torch.bool))

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_keyword_embeddings(self, embedding_table: torch.Tensor, keyword_token_ids: Sequence[Sequence[int]]) -> None:
        """Set ``e_k`` to the mean of the rows of ``embedding_table`` (M, d) indexed by ``keyword_token_ids[k]``."""
        if len(keyword_token_ids) != self.num_attributes:
            raise ValueError(
                f"EmbeddingBook.init_keyword_embeddings: got {len(keyword_token_ids)} keyword id lists for "
                f"{self.num_attributes} attributes."
            )
        if embedding_table.ndim != 2 or embedding_table.shape[1] != self.dim:
            raise ValueError(
                f"EmbeddingBook.init_keyword_embeddings: embedding_table must be (M, {self.dim}), "
                f"got {tuple(embedding_table.shape)}."
            )
        for k, ids in enumerate(keyword_token_ids):
            if len(ids) == 0:
                raise ValueError(f"EmbeddingBook.init_keyword_embeddings: attribute {k} has no keyword token ids.")
            rows = embedding_table[torch.as_tensor(list(ids), device=embedding_table.device)]
            self.keyword_embeddings[k].copy_(rows.float().mean(0).to(self.keyword_embeddings.dtype))

    @torch.no_grad()
    def init_attribute_embeddings(self, values: torch.Tensor) -> None:
        """Set ``a_k`` from a (K, d) tensor (e.g. the keyword embeddings, as the paper initialises new token rows)."""
        if values.shape != self.attribute_embeddings.shape:
            raise ValueError(
                f"EmbeddingBook.init_attribute_embeddings: expected {tuple(self.attribute_embeddings.shape)}, "
                f"got {tuple(values.shape)}."
            )
        self.attribute_embeddings.copy_(values.to(self.attribute_embeddings))

    # ------------------------------------------------------------------ eq. (5)
    def _targets_to_weights(self, targets: torch.Tensor, batch: int) -> torch.Tensor:
        """(B,) long indices (negative = no attribute) or (B, K) multi-hot -> (B, K) float 0/1 weights."""
        k = self.num_attributes
        if targets.ndim == 1 and not targets.is_floating_point() and targets.dtype != torch.bool:
            if targets.shape[0] != batch:
                raise ValueError(f"EmbeddingBook.update_prototypes: {targets.shape[0]} targets for {batch} images.")
            if (targets >= k).any():
                raise ValueError(
                    f"EmbeddingBook.update_prototypes: target {int(targets.max())} out of range [0, {k})."
                )
            valid = targets >= 0
            w = torch.zeros(batch, k, device=targets.device)
            w[valid.nonzero(as_tuple=True)[0], targets[valid]] = 1.0
            return w
        if targets.ndim == 2:
            if targets.shape != (batch, k):
                raise ValueError(
                    f"EmbeddingBook.update_prototypes: multi-hot targets must be ({batch}, {k}), "
                    f"got {tuple(targets.shape)}."
                )
            return (targets > 0).float()
        raise ValueError(
            "EmbeddingBook.update_prototypes: targets must be (B,) long class indices or (B, K) multi-hot, "
            f"got shape {tuple(targets.shape)} dtype {targets.dtype}."
        )

    @torch.no_grad()
    def update_prototypes(self, visual_tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """EMA update of eq. (5).

        For each attribute k present in the batch: ``new = mu * old + (1 - mu) * mean of all visual tokens of the
        images with attribute k`` (the mean over images and tokens). Absent attributes are unchanged. Under
        ``torch.distributed`` the per-attribute sums and counts are all-reduced first, so every rank applies the
        same update and holds the same prototypes.

        Args:
            visual_tokens: (B, N_v, d) visual tokens (any dtype; detached here).
            targets: (B,) long attribute indices (negative values are ignored) or (B, K) multi-hot.

        Returns:
            (K,) bool mask of the attributes updated.
        """
        if visual_tokens.ndim != 3 or visual_tokens.shape[-1] != self.dim:
            raise ValueError(
                f"EmbeddingBook.update_prototypes: visual_tokens must be (B, N_v, {self.dim}), "
                f"got {tuple(visual_tokens.shape)}."
            )
        b, n_v, _ = visual_tokens.shape
        w = self._targets_to_weights(targets.to(visual_tokens.device), b)  # (B, K)
        per_image = visual_tokens.detach().float().sum(dim=1)  # (B, d)
        sums = w.t() @ per_image  # (K, d)
        counts = w.sum(0) * n_v  # (K,)
        if dist.is_available() and dist.is_initialized():
            packed = torch.cat([sums, counts[:, None]], dim=1)
            dist.all_reduce(packed)
            sums, counts = packed[:, :-1], packed[:, -1]
        present = counts > 0
        if not present.any():
            return present
        mean = sums[present] / counts[present, None]
        old = self.prototypes[present]
        ema = self.momentum * old + (1.0 - self.momentum) * mean
        if self.first_update == "copy":
            first = ~self.prototype_initialized[present]
            ema = torch.where(first[:, None], mean, ema)
        self.prototypes[present] = ema.to(self.prototypes.dtype)
        self.prototype_initialized |= present
        return present

    @torch.no_grad()
    def set_class_means(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Set the prototypes of the attributes with ``counts > 0`` to ``sums / counts`` and mark them initialised
        (the start of the book from class means, before eq. 5 takes over). Under ``torch.distributed`` the sums and
        counts are all-reduced first.

        Args:
            sums: (K, d) per-attribute sums of visual tokens; counts: (K,) how many tokens each sum holds.

        Returns:
            (K,) bool mask of the attributes set.
        """
        if sums.shape != (self.num_attributes, self.dim) or counts.shape != (self.num_attributes,):
            raise ValueError(
                f"EmbeddingBook.set_class_means: expected sums ({self.num_attributes}, {self.dim}) and counts "
                f"({self.num_attributes},), got {tuple(sums.shape)} and {tuple(counts.shape)}."
            )
        sums, counts = sums.float().to(self.prototypes.device), counts.float().to(self.prototypes.device)
        if dist.is_available() and dist.is_initialized():
            packed = torch.cat([sums, counts[:, None]], dim=1)
            dist.all_reduce(packed)
            sums, counts = packed[:, :-1], packed[:, -1]
        present = counts > 0
        self.prototypes[present] = (sums[present] / counts[present, None]).to(self.prototypes.dtype)
        self.prototype_initialized |= present
        return present

    # ------------------------------------------------------------------ the book
    def tokens(self) -> torch.Tensor:
        """The (K, 3, d) book: attribute embedding, keyword embedding, visual prototype (detached buffer)."""
        dtype = self.attribute_embeddings.dtype
        return torch.stack(
            [self.attribute_embeddings, self.keyword_embeddings, self.prototypes.to(dtype)], dim=1
        )

    def key_padding_mask(self) -> torch.Tensor | None:
        """(K, 3) bool, True where a token should be ignored (prototypes never updated); None when all are valid."""
        if bool(self.prototype_initialized.all()):
            return None
        mask = torch.zeros(self.num_attributes, 3, dtype=torch.bool, device=self.prototypes.device)
        mask[:, 2] = ~self.prototype_initialized
        return mask

    def version(self) -> tuple:
        """A key that changes whenever any book tensor is modified or replaced (for caches of book projections)."""
        return tuple(
            (id(t), t._version) for t in (self.attribute_embeddings, self.keyword_embeddings, self.prototypes)
        ) + ((id(self.prototype_initialized), self.prototype_initialized._version),)

    def extra_repr(self) -> str:
        return f"num_attributes={self.num_attributes}, dim={self.dim}, momentum={self.momentum}"
