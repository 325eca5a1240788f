"""Attribute-centric cross-attention (ACC) adapter (AttTok paper section 4.2, eqs. 6-7).

Visual tokens are the queries; all 3K tokens of the embedding book are keys and values::

    Att(F, B) = softmax((F W_Q)(B W_K)^T / sqrt(d_head)) (B W_V)          (6)
    F_hat     = F + gamma * Att(F, B) W_O                                   (7)

Two exact evaluation orders are implemented:

- ``"projected"``: project the book once per call for the whole batch (``B W_K``, ``B W_V``: 2 * 3K * d^2 MACs),
  then attend with ``scaled_dot_product_attention``. With a frozen book (inference) the projections are cached.
- ``"reassociated"``: never project the book. Per head h, the scores are ``((F W_Q^h) W_K^h^T) B^T`` and the output is
  ``(softmax(.) B) W_V^h^T``: the cost grows with (visual tokens) x K x d x heads rather than K x d^2, which wins for a
  single head whenever 3K exceeds the number of visual tokens in the batch. The value bias passes through because
  attention rows sum to one.

The key projection has no bias: a key bias only adds a per-query constant to the scores, which softmax removes, so it
would never receive a gradient (and DDP without ``find_unused_parameters`` rejects a trainable parameter that never
does).

``inner_dim`` (default ``d``, the paper's square ``W_Q, W_K, W_V``) sets the width of queries, keys and values
(``W_Q, W_K, W_V: d x r``, ``W_O: r x d``). With ``r << d`` the projected order costs ``3K d r`` for the book and
``(visual tokens) x 3K x r`` for the attention: the option that keeps K = 10,000 attributes at about 1% of a 7B step
(see ``docs/benchmarks.md``). It is **not** the paper's ACC; its effect on accuracy is not measured here.

``norm=True`` puts a ``LayerNorm`` on the queries and one on the book tokens before the attention (pre-norm
cross-attention, as in Flamingo's gated cross-attention blocks); the residual still adds to the raw visual tokens.
The paper's eq. 6 has no norm (``norm=False``, the default). It exists because, in the compact GPTv, visual tokens are
~45x larger in norm than ``a_k``/``e_k`` and the visual prototypes ~15-35x larger than ``a_k``: without a norm the
scores are dominated by the prototypes and are nearly the same for every image (``docs/study_defaults.md``).

``logit_scale`` (default 1.0: eq. 6) multiplies the scaled dot products, i.e. an inverse attention temperature:
``softmax(s (F W_Q)(B W_K)^T / sqrt(d_head))``. With ``learn_logit_scale=True`` it is a trained parameter, stored as
``log s`` (CLIP's learned logit scale) and started at ``logit_scale``. It exists because in a compact GPTv whose visual
tokens sit at the text embeddings' scale (norm ~0.5) ACC's logits spread by ~0.01 over the book: the attention is
uniform and adds the same vector to every image; with ``norm=True`` they spread by 2-8 and each model attends to one
kind of book token (``docs/study_defaults.md``, round 14). The scale is the setting between the two. Not in the
paper; a scale of 1.0, not learned, computes exactly what it did before the option existed.

``mode="auto"`` (default) picks the cheaper order from a multiply-add count for each call, and always uses the cached
projections when they are valid. MONAI's ``CrossAttentionBlock`` projects the context on every call and cannot take
the re-associated order or a cache, so it is not reused here; the member names follow it (``q_proj`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACCAdapter"]

_MODES = ("auto", "projected", "reassociated")


class ACCAdapter(nn.Module):
    """Cross-attention from visual tokens to the attribute embedding book, added as a gated residual.

    Args:
        dim: d, the width of visual tokens and book tokens.
        num_heads: attention heads; ``inner_dim`` must be divisible by it. ``1`` is eq. (6) literally.
        gamma: residual weight of eq. (7); ``gamma=0`` returns the input unchanged.
        bias: whether the query, value and output projections have biases (the key projection never has one: it
            would be softmax-invariant).
        mode: ``"auto"``, ``"projected"`` or ``"reassociated"`` (see the module docstring). All give the same output.
        inner_dim: r, the query/key/value width (default ``dim``: eq. 6 as in the paper; smaller = low-rank ACC).
        norm: LayerNorm the queries and the book tokens (each token on its own) before the attention (default False:
            eq. 6 as in the paper).
        logit_scale: s, the factor on the scaled dot products (> 0; default 1.0: eq. 6), or its start when learned.
        learn_logit_scale: train ``log s`` as a parameter (``log_logit_scale``, a 0-d tensor; default False).

    Shapes:
        ``visual_tokens``: (B, N, d); ``book_tokens``: (K, 3, d) or (3K, d);
        ``key_padding_mask``: (K, 3) or (3K,) bool, True = ignore that book token; output (B, N, d); attention
        (returned with ``return_attention=True``): (B, heads, N, 3K).
    """

    def __init__(
        self, dim: int, num_heads: int = 1, gamma: float = 0.1, bias: bool = True, mode: str = "auto",
        inner_dim: int | None = None, norm: bool = False, logit_scale: float = 1.0, learn_logit_scale: bool = False,
    ) -> None:
        super().__init__()
        inner = int(inner_dim or dim)
        if inner % num_heads != 0:
            raise ValueError(f"ACCAdapter: inner_dim {inner} is not divisible by num_heads {num_heads}.")
        if mode not in _MODES:
            raise ValueError(f"ACCAdapter: mode must be one of {_MODES}, got {mode!r}.")
        self.dim = dim
        self.inner_dim = inner
        self.num_heads = num_heads
        self.head_dim = inner // num_heads
        self.gamma = gamma
        self.mode = mode
        self.q_proj = nn.Linear(dim, inner, bias=bias)
        self.k_proj = nn.Linear(dim, inner, bias=False)  # a key bias is softmax-invariant
        self.v_proj = nn.Linear(dim, inner, bias=bias)
        self.o_proj = nn.Linear(inner, dim, bias=bias)
        self.norm = bool(norm)
        self.q_norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.kv_norm = nn.LayerNorm(dim) if norm else nn.Identity()
        logit_scale = float(logit_scale)
        if not (logit_scale > 0 and math.isfinite(logit_scale)):
            raise ValueError(f"ACCAdapter: logit_scale must be a finite number > 0, got {logit_scale}.")
        self.learn_logit_scale = bool(learn_logit_scale)
        self._fixed_logit_scale = logit_scale
        if self.learn_logit_scale:
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self._cache: tuple[Hashable, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ helpers
    def logit_scale(self) -> torch.Tensor | float:
        """s, the factor on the scaled dot products: ``exp(log_logit_scale)`` when learned, else the fixed float."""
        return self.log_logit_scale.exp() if self.learn_logit_scale else self._fixed_logit_scale

    def _check(self, visual_tokens: torch.Tensor, book_tokens: torch.Tensor, key_padding_mask: torch.Tensor | None):
        if visual_tokens.ndim != 3 or visual_tokens.shape[-1] != self.dim:
            raise ValueError(
                f"ACCAdapter: visual_tokens must be (B, N, {self.dim}), got {tuple(visual_tokens.shape)}."
            )
        if book_tokens.ndim == 3:
            if book_tokens.shape[1:] != (3, self.dim):
                raise ValueError(f"ACCAdapter: book_tokens must be (K, 3, {self.dim}), got {tuple(book_tokens.shape)}.")
            book_tokens = book_tokens.reshape(-1, self.dim)
        elif book_tokens.ndim != 2 or book_tokens.shape[-1] != self.dim:
            raise ValueError(
                f"ACCAdapter: book_tokens must be (K, 3, {self.dim}) or (3K, {self.dim}), "
                f"got {tuple(book_tokens.shape)}."
            )
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.reshape(-1)
            if key_padding_mask.shape[0] != book_tokens.shape[0] or key_padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"ACCAdapter: key_padding_mask must be bool with {book_tokens.shape[0]} entries, "
                    f"got {tuple(key_padding_mask.shape)} {key_padding_mask.dtype}."
                )
        return book_tokens, key_padding_mask

    def _weights_version(self) -> tuple:
        ts = [p for m in (self.k_proj, self.v_proj) for p in (m.weight, m.bias) if p is not None]
        ts += list(self.kv_norm.parameters())
        return tuple((id(t), t._version, t.dtype, t.device) for t in ts)

    def projected_book(self, book: torch.Tensor, book_version: Hashable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B W_K + b_K, B W_V + b_V)``, each (3K, d) (``book`` already normalised when ``norm``); cached when
        ``book_version`` is given and no gradient is
        needed. The cache key includes the book version and the versions of the key/value weights, so an optimizer
        step, ``load_state_dict`` or ``.to()`` invalidates it."""
        key = None
        if book_version is not None and not self._needs_grad(book):
            key = (book_version, self._weights_version(), book.dtype, book.device)
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1], self._cache[2]
        k, v = self.k_proj(book), self.v_proj(book)
        if key is not None:
            self._cache = (key, k, v)
        return k, v

    def clear_cache(self) -> None:
        self._cache = None

    def _choose(self, n_queries: int, n_keys: int, cached: bool) -> str:
        if self.mode != "auto":
            return self.mode
        if cached:  # frozen book: projections cached, the attention alone is cheaper than re-association
            return "projected"
        d, r, h = self.dim, self.inner_dim, self.num_heads
        projected = 2 * n_keys * d * r + 2 * n_queries * n_keys * r
        reassociated = 2 * n_queries * d * r + 2 * h * n_queries * n_keys * d
        return "reassociated" if reassociated < projected else "projected"

    def _needs_grad(self, book: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (
            book.requires_grad or self.k_proj.weight.requires_grad or self.v_proj.weight.requires_grad
            or any(p.requires_grad for p in self.kv_norm.parameters())
        )

    def _cacheable(self, book: torch.Tensor, book_version: Hashable | None) -> bool:
        """With a frozen book (a version given, no gradient needed) the projections are computed once and reused,
        so the projected order costs only the attention itself from the second call on."""
        return book_version is not None and not self._needs_grad(book)

    # ------------------------------------------------------------------ forward
    def attention(
        self,
        visual_tokens: torch.Tensor,
        book_tokens: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        book_version: Hashable | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``Att(F, B)`` of eq. (6) before ``W_O``: (B, N, inner_dim), and the (B, heads, N, 3K) weights if asked."""
        book, kpm = self._check(visual_tokens, book_tokens, key_padding_mask)
        b, n, d = visual_tokens.shape
        h, dh = self.num_heads, self.head_dim
        book = book.to(visual_tokens.dtype)
        cached = self._cacheable(book, book_version)
        mode = self._choose(b * n, book.shape[0], cached)
        book = self.kv_norm(book)  # (3K, d); identity unless norm
        q = self.q_proj(self.q_norm(visual_tokens)).view(b, n, h, dh).transpose(1, 2)  # (B, h, N, dh)
        if self.learn_logit_scale or self._fixed_logit_scale != 1.0:
            # s on the queries = s on every score (SDPA's ``scale`` takes no tensor); at 1.0 nothing is multiplied
            q = q * self.logit_scale()
        bias_mask = None
        if kpm is not None:
            bias_mask = torch.zeros(kpm.shape, dtype=q.dtype, device=q.device).masked_fill(kpm.to(q.device), -math.inf)
        scale = 1.0 / math.sqrt(dh)
        if mode == "projected":
            k, v = self.projected_book(book, book_version)
            k = k.view(-1, h, dh).transpose(0, 1).unsqueeze(0)  # (1, h, 3K, dh), shared by the batch
            v = v.view(-1, h, dh).transpose(0, 1).unsqueeze(0)
            if return_attention:
                scores = q @ k.transpose(-1, -2) * scale
                if bias_mask is not None:
                    scores = scores + bias_mask
                attn = scores.softmax(-1)
                out = attn @ v
            else:
                attn = None
                out = F.scaled_dot_product_attention(
                    q, k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1),
                    attn_mask=None if kpm is None else ~kpm.to(q.device).view(1, 1, 1, -1),
                )
        else:
            wk = self.k_proj.weight.view(h, dh, d)  # rows of head h
            wv = self.v_proj.weight.view(h, dh, d)
            q_book = torch.einsum("bhne,hed->bhnd", q, wk)  # (B, h, N, d): queries in book space
            scores = q_book @ book.t() * scale  # (B, h, N, 3K)
            if bias_mask is not None:
                scores = scores + bias_mask
            attn = scores.softmax(-1)
            mixed = attn @ book  # (B, h, N, d)
            out = torch.einsum("bhnd,hed->bhne", mixed, wv)  # (B, h, N, dh)
            if self.v_proj.bias is not None:
                out = out + self.v_proj.bias.view(1, h, 1, dh)
            if not return_attention:
                attn = None
        out = out.transpose(1, 2).reshape(b, n, self.inner_dim)
        return out, attn

    def forward(
        self,
        visual_tokens: torch.Tensor,
        book_tokens: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        book_version: Hashable | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Eq. (7): ``F + gamma * Att(F, B) W_O``.

        Args:
            visual_tokens: (B, N, d) queries.
            book_tokens: (K, 3, d) or (3K, d) keys and values.
            key_padding_mask: optional (K, 3) / (3K,) bool, True = ignore.
            return_attention: also return the (B, heads, N, 3K) attention weights.
            book_version: any hashable that changes when the book changes (``EmbeddingBook.version()``); enables the
                projection cache when no gradient is needed.
        """
        if self.gamma == 0 and not return_attention:
            self._check(visual_tokens, book_tokens, key_padding_mask)
            return visual_tokens
        # tokens from a bf16 backbone with fp32 ACC weights: compute in the weights' dtype, return the input's
        x = visual_tokens.to(self.q_proj.weight.dtype)
        att, weights = self.attention(x, book_tokens, key_padding_mask, return_attention, book_version)
        out = (x + self.gamma * self.o_proj(att)).to(visual_tokens.dtype)
        return (out, weights) if return_attention else out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, inner_dim={self.inner_dim}, num_heads={self.num_heads}, gamma={self.gamma}, "
                f"mode={self.mode!r}, norm={self.norm}, logit_scale={torch.as_tensor(self.logit_scale()).item():.4g}, "
                f"learn_logit_scale={self.learn_logit_scale}")
