"""AttTokGPTv: a GPTv backbone with attribute tokens, the embedding book, the ACC adapter and the ACM projection.

The wrapper works over a backbone interface (see :class:`CompactGPTvBackbone`), so other backbones slot in:

- ``tokenizer``, ``hidden_size``, ``input_embeddings()``, ``output_embeddings()``;
- ``encode_images(pixel) -> (B, N_v, d)`` visual tokens at the LLM width;
- ``build_inputs(prompts, answers) -> {"input_ids" (B, L; -1 at visual slots), "attention_mask", "labels",
  "prompt_lengths"}``; ``merge_visual(embeds, ids, visual)``;
- ``forward_embeds(inputs_embeds, attention_mask, past_key_values, use_cache) -> (logits, hidden, past)``.

Backbones that merge the visual tokens inside their own model (``merges_visual = True``, e.g.
:class:`~attok_monai.networks.nets.hf_qwen2vl.Qwen2VLBackbone`) take two callables instead
(``set_transforms(token_transform, visual_transform)``, applied by hooks: the attribute-token inputs tied to ``a_k``
and ACC on the merged visual tokens) and provide ``build_inputs(prompts, answers, images, padding_side)``,
``forward_inputs(batch) -> (logits, hidden, raw visual tokens)``, ``generate_ids``/``decode`` and
``save_weights``/``load_weights`` (only the trained parts are saved; the base model is referenced by id/path).

Ablation switches (paper Table 3): ``use_attribute_tokens=False, use_acc=False, use_acm=False`` is the baseline
(plain-text answers); ``+ACC``, ``+ACM`` and ``+All`` add the modules on top of the attribute tokens.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attok_monai.attributes import AttributeVocabulary, block_answer
from attok_monai.fileio import atomic_write
from attok_monai.networks.blocks import ACCAdapter, ACMProjection, EmbeddingBook
from attok_monai.networks.nets.attok_config import AttTokConfig

__all__ = ["AttTokGPTv", "AttTokOutput"]



@dataclass
class AttTokOutput:
    """What one training forward returns.

    ``logits`` (B, L, V) and ``labels`` (B, L) for NTP; ``f_a`` (N, d) final hidden states at the positions that
    predict an attribute token and ``attr_targets`` (N,) their attribute indices (for ACM); ``visual_tokens``
    (B, N_v, d) encoder tokens before ACC (detached, for the EMA update) and ``visual_targets`` (B,) or (B, K);
    ``num_tokens``: non-padding tokens the LLM processed (visual tokens included), for tokens/s.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    f_a: torch.Tensor
    attr_targets: torch.Tensor
    visual_tokens: torch.Tensor
    visual_targets: torch.Tensor
    num_tokens: int = 0


class AttTokGPTv(nn.Module):
    """Args:
    backbone: the GPTv backbone (its tokenizer must already hold the vocabulary's special tokens, or
        ``add_tokens`` support on the backbone).
    vocabulary: the attribute vocabulary (object, dict or JSON path).
    config: the AttTok hyper-parameters (:class:`AttTokConfig`, or a dict of its keys; None = the defaults).
    overrides: :class:`AttTokConfig` keys as keyword arguments (``use_acc=False``, ``tau=0.5``, ...), applied over
        ``config``; unknown keys are refused by name.

    The config is saved with the model as ``attok.json`` (:meth:`save_pretrained`) and kept as ``self.config``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        vocabulary: AttributeVocabulary | dict | str,
        config: AttTokConfig | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        config = AttTokConfig.coerce(config, **overrides)
        self.config = config
        self.prototype_init = config.prototype_init
        self.prototype_init_batches = config.prototype_init_batches
        self.fa_position = config.fa_position
        self.attribute_markers = config.attribute_markers
        self.plain_markers = config.plain_markers
        self.backbone = backbone
        self.vocabulary = AttributeVocabulary.coerce(vocabulary)
        self.use_attribute_tokens = config.use_attribute_tokens
        self.use_acc = config.use_acc
        self.use_acm = config.use_acm
        tok = backbone.tokenizer
        if hasattr(backbone, "add_tokens"):
            backbone.add_tokens(self.vocabulary.special_tokens)
        ids = tok.convert_tokens_to_ids(self.vocabulary.special_tokens)
        missing = [t for t, i in zip(self.vocabulary.special_tokens, ids) if i is None or i == tok.unk_token_id]
        if missing:
            raise ValueError(f"AttTokGPTv: the backbone tokenizer lacks the attribute tokens {missing[:5]}.")
        self.begin_id, self.end_id = ids[0], ids[1]
        self.register_buffer("attr_ids", torch.tensor(ids[2:], dtype=torch.long), persistent=False)
        d = backbone.hidden_size
        k = len(self.vocabulary)
        self.book = EmbeddingBook(k, d, momentum=config.momentum)
        self.acc = ACCAdapter(
            d, num_heads=config.acc_heads, gamma=config.gamma, inner_dim=config.acc_inner_dim, norm=config.acc_norm,
            logit_scale=config.acc_logit_scale, learn_logit_scale=config.acc_logit_scale_learned, bias=config.acc_bias,
        ) if config.use_acc else None
        # theta of eq. (8), created where the loss used to create it (same random-init order for a given seed)
        self.acm_projection = ACMProjection(d, bias=config.acm_bias) if config.use_acm else None
        self._register_load_state_dict_pre_hook(rename_legacy_acm_keys, with_module=True)
        self._init_attribute_rows()
        self.merges_visual = bool(getattr(backbone, "merges_visual", False))
        if self.merges_visual:
            backbone.set_transforms(self._substitute_attributes, self._visual_transform)

    @property
    def hparams(self) -> dict[str, Any]:
        """The config as a dict (what ``attok.json`` holds)."""
        return self.config.to_dict()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _init_attribute_rows(self) -> None:
        """Keyword embeddings from the keyword's token rows; attribute rows (input and lm_head) from the keywords."""
        tok = self.backbone.tokenizer
        kw_ids = []
        for a in self.vocabulary:
            ids = tok.encode(" ".join(a.keywords[:1]), add_special_tokens=False)
            ids = [i for i in ids if i != tok.unk_token_id] or [tok.unk_token_id]
            kw_ids.append(ids)
        distinct = self.attribute_row_token_ids(kw_ids)
        # "generalist": as "distinct" here; build_compact_from_generalist then sets the generalist's trained rows
        row_ids = {"keyword": kw_ids, "distinct": distinct, "generalist": distinct,
                   "first_token": self.first_token_ids(kw_ids)}[self.config.attribute_init]
        emb = self.backbone.input_embeddings().weight
        self.book.init_keyword_embeddings(emb, kw_ids)
        head = self.backbone.output_embeddings().weight
        # a_k: the mean of its rows, computed as e_k's (the same vector as e_k with attribute_init="keyword")
        self.set_attribute_rows(
            torch.stack([emb[torch.as_tensor(ids, device=emb.device)].float().mean(0) for ids in row_ids]),
            torch.stack([head[torch.tensor(ids)].mean(0) for ids in row_ids]) if head is not emb else None,
        )

    @torch.no_grad()
    def set_attribute_rows(self, attribute_embeddings: torch.Tensor, head_rows: torch.Tensor | None = None) -> None:
        """Set ``a_k`` to ``attribute_embeddings`` (K, d), with the input-embedding rows of the attribute tokens (which
        ``a_k`` stands in for), and, where the lm_head is not tied to the input embedding, the attribute tokens'
        lm_head rows to ``head_rows`` (K, d; None leaves them)."""
        self.book.init_attribute_embeddings(attribute_embeddings)
        emb = self.backbone.input_embeddings().weight
        emb[self.attr_ids] = self.book.attribute_embeddings.detach().to(emb.dtype)
        head = self.backbone.output_embeddings().weight
        if head is not emb and head_rows is not None:
            head[self.attr_ids] = head_rows.to(head)

    @staticmethod
    def attribute_row_token_ids(keyword_ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """For ``attribute_init="distinct"``: per attribute, its keyword's token ids that no other attribute's
        keyword contains (all of them when none is unique)."""
        owners = Counter(i for ids in keyword_ids for i in set(ids))
        return [[i for i in ids if owners[i] == 1] or list(ids) for ids in keyword_ids]

    @classmethod
    def first_token_ids(cls, keyword_ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """For ``attribute_init="first_token"``: per attribute, its keyword's first token id when no other
        attribute's keyword starts with the same token, else :meth:`attribute_row_token_ids`' choice."""
        firsts = Counter(ids[0] for ids in keyword_ids)
        distinct = cls.attribute_row_token_ids(keyword_ids)
        return [[ids[0]] if firsts[ids[0]] == 1 else rows for ids, rows in zip(keyword_ids, distinct)]

    @torch.no_grad()
    def init_prototypes(self, batches: Iterable[tuple[torch.Tensor, Sequence[Sequence[int]]]]) -> torch.Tensor:
        """Set the visual prototypes to the class means of the visual tokens (before ACC) of ``batches``.

        Args:
            batches: ``(images (B, C, H, W), attributes)`` pairs, ``attributes`` as in :meth:`forward`.

        The encoder runs in training mode (the tokens eq. 5 averages during training); buffers it updates (batch-norm
        running statistics) are restored afterwards, so the only effect is on the book. Returns the (K,) bool mask
        of the attributes set.
        """
        device = self.book.prototypes.device
        sums = torch.zeros(len(self.vocabulary), self.backbone.hidden_size, device=device)
        counts = torch.zeros(len(self.vocabulary), device=device)
        saved = {n: b.detach().clone() for n, b in self.backbone.named_buffers()}
        was_training = self.training
        self.train()
        try:
            for images, attributes in batches:
                raw = self.backbone.encode_images(images.to(device).float()).float()  # (B, N_v, d)
                w = self.book._targets_to_weights(self.visual_targets(attributes, device), raw.shape[0])  # (B, K)
                sums += w.t() @ raw.sum(1)
                counts += w.sum(0) * raw.shape[1]
        finally:
            for n, b in self.backbone.named_buffers():
                b.copy_(saved[n])
            self.train(was_training)
        return self.book.set_class_means(sums, counts)

    # ------------------------------------------------------------------ text
    def format_answer(self, attributes: Sequence[int], text: str | None) -> str:
        """The target answer: attribute tokens then text (AttTok), or the text alone (baseline)."""
        attributes = list(attributes)
        if self.use_attribute_tokens and attributes:
            return self.vocabulary.format_answer(attributes, text, markers=self.attribute_markers)
        plain = text if text is not None else self.vocabulary.format_text_answer(attributes)
        return block_answer("", plain) if self.plain_markers else plain

    def embed(self, input_ids: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the attribute tokens tied to the book's ``a_k`` and the visual slots filled."""
        safe = input_ids.clamp(min=0)
        embeds = self._substitute_attributes(safe, self.backbone.input_embeddings()(safe))
        if visual is not None:
            embeds = self.backbone.merge_visual(embeds, input_ids, visual)
        return embeds

    def _substitute_attributes(self, ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """(B, L) ids (>= 0), (B, L, d) token embeddings -> the embeddings with attribute tokens set to ``a_k``."""
        k = self.attr_ids.numel()
        pos = torch.searchsorted(self.attr_ids_sorted, ids).clamp(max=k - 1)
        is_attr = self.attr_ids_sorted[pos] == ids
        if is_attr.any():
            attr_index = self.attr_sort_index[pos]
            # F.embedding, not weight[attr_index]: advanced indexing backpropagates by index_put_(accumulate=True),
            # whose multi-threaded CPU sum is not bit-reproducible (the same seed gave another model at 2 threads)
            a = F.embedding(attr_index, self.book.attribute_embeddings.to(embeds.dtype))
            embeds = torch.where(is_attr[..., None], a, embeds)
        return embeds

    @property
    def attr_ids_sorted(self) -> torch.Tensor:
        return self.attr_ids.sort().values

    @property
    def attr_sort_index(self) -> torch.Tensor:
        return self.attr_ids.sort().indices

    # ------------------------------------------------------------------ vision
    def visual_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F^v before ACC, F^v after ACC)``, each (B, N_v, d)."""
        raw = self.backbone.encode_images(images)
        return raw, self._visual_transform(raw)

    def _visual_transform(self, raw: torch.Tensor) -> torch.Tensor:
        """ACC on (B, N_v, d) visual tokens (identity without ACC); the book is detached with ``acc_book_grad: false``."""
        if self.acc is None:
            return raw
        version = None if self.training else self.book.version()
        book = self.book.tokens() if self.config.acc_book_grad else self.book.tokens().detach()
        return self.acc(raw, book, self.book.key_padding_mask(), book_version=version)

    # ------------------------------------------------------------------ training forward
    def forward(
        self, images: torch.Tensor, prompts: Sequence[str], answers: Sequence[str | None],
        attributes: Sequence[Sequence[int]],
    ) -> AttTokOutput:
        """Args:
        images: (B, C, H, W) in [0, 1]; prompts: B questions; answers: B answer texts (None = clinical names);
        attributes: B lists of attribute indices (the first is the sample's class for single-label data).
        """
        device = images.device
        targets_text = [self.format_answer(a, t) for a, t in zip(attributes, answers)]
        if self.merges_visual:
            batch = self.backbone.build_inputs(prompts, targets_text, images)
            logits, hidden, raw = self.backbone.forward_inputs(batch)
            labels = batch["labels"].to(logits.device)
            f_a, attr_targets = self._attribute_positions(hidden, labels, batch["prompt_lengths"], attributes)
            return AttTokOutput(
                logits, labels, f_a, attr_targets, raw.detach(), self.visual_targets(attributes, device),
                int(batch["attention_mask"].sum()),
            )
        raw, visual = self.visual_tokens(images)
        batch = {k: v.to(device) for k, v in self.backbone.build_inputs(prompts, targets_text).items()}
        embeds = self.embed(batch["input_ids"], visual)
        logits, hidden, _ = self.backbone.forward_embeds(embeds, batch["attention_mask"])
        labels = batch["labels"]
        f_a, attr_targets = self._attribute_positions(hidden, labels, batch["prompt_lengths"], attributes)
        return AttTokOutput(
            logits, labels, f_a, attr_targets, raw.detach(), self.visual_targets(attributes, device),
            int(batch["attention_mask"].sum()),
        )

    def _attribute_positions(self, hidden, labels, prompt_lengths, attributes):
        """f^a (N, d) and its attribute indices (N,). With attribute tokens: the final hidden state at each position
        whose next token is an attribute token (``fa_position="decision"``) or at the attribute token itself
        (``"attribute"``); plain-text answers: the last prompt position (``"decision"``) or the first answer
        position (``"attribute"``), with the sample's first attribute.

        hidden: (B, L, d); labels: (B, L) aligned with the inputs (-100 off the answer); prompt_lengths: (B,)."""
        k = self.attr_ids.numel()
        shift = 1 if self.fa_position == "attribute" else 0
        if self.use_attribute_tokens:
            nxt = labels[:, 1:]
            pos = torch.searchsorted(self.attr_ids_sorted, nxt.clamp(min=0)).clamp(max=k - 1)
            hit = (self.attr_ids_sorted[pos] == nxt) & (nxt >= 0)
            b_idx, t_idx = hit.nonzero(as_tuple=True)
            return hidden[b_idx, t_idx + shift], self.attr_sort_index[pos[b_idx, t_idx]]
        rows = [i for i, a in enumerate(attributes) if len(a)]
        b_idx = torch.tensor(rows, dtype=torch.long, device=hidden.device)
        t_idx = prompt_lengths.to(hidden.device)[b_idx] - 1 + shift
        tgt = torch.tensor([attributes[i][0] for i in rows], dtype=torch.long, device=hidden.device)
        return hidden[b_idx, t_idx], tgt

    def visual_targets(self, attributes: Sequence[Sequence[int]], device) -> torch.Tensor:
        """(B,) class indices when every sample has one attribute, else (B, K) multi-hot."""
        if all(len(a) == 1 for a in attributes):
            return torch.tensor([a[0] for a in attributes], dtype=torch.long, device=device)
        multi = torch.zeros(len(attributes), len(self.vocabulary), device=device)
        for i, a in enumerate(attributes):
            multi[i, list(a)] = 1
        return multi

    def acm_inputs(self, f_a: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The inputs of :class:`~attok_monai.losses.ACMLoss`: ``(theta(f^a) (N, d), theta(book tokens) (K, 3, d))``
        from f^a (N, d) of :meth:`forward`; ``(None, None)`` without ACM (``use_acm=False``)."""
        if self.acm_projection is None:
            return None, None
        book = self.book.tokens()  # (K, 3, d)
        projected = self.acm_projection(book.reshape(-1, book.shape[-1])).view(book.shape[0], 3, -1)
        return self.acm_projection(f_a), projected

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 16) -> list[str]:
        """Greedy decoding with a KV cache; attribute tokens stay visible in the returned text."""
        device = images.device
        if self.merges_visual:
            batch = self.backbone.build_inputs(prompts, None, images, padding_side="left")
            return [self.backbone.decode(o) for o in self.backbone.generate_ids(batch, max_new_tokens)]
        _, visual = self.visual_tokens(images)
        batch = {k: v.to(device) for k, v in self.backbone.build_inputs(prompts, None).items()}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(1)
        # left-align is not needed: feed the prompt, then step each row from its own last position
        logits, _, past = self.backbone.forward_embeds(self.embed(ids, visual), mask, use_cache=True)
        next_logits = logits[torch.arange(len(prompts), device=device), lengths - 1]
        eos = self.backbone.tokenizer.eos_token_id
        out: list[list[int]] = [[] for _ in prompts]
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        # append new tokens after the padded width; the mask hides the padding in between
        for step in range(max_new_tokens):
            nxt = next_logits.argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    out[i].append(t)
            done |= nxt == eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype, device=device)], dim=1)
            step_embeds = self.embed(nxt[:, None])
            positions = (lengths + step)[:, None]  # each row continues from its own length, as in training
            logits, _, past = self.backbone.forward_embeds(
                step_embeds, mask, past_key_values=past, use_cache=True, position_ids=positions
            )
            next_logits = logits[:, -1]
        tok = self.backbone.tokenizer
        return [tok.decode([t for t in o if t != eos], skip_special_tokens=False).strip() for o in out]

    def decision_inputs(
        self, prompts: Sequence[str], device: torch.device | str = "cpu", markers: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The prompts as the class decision reads them (compact backbones): ``(ids (B, L), mask (B, L), at (B,))``,
        ``at`` the position whose logits decide. With ``markers`` (default: ``attribute_markers``)
        ``<|attribute_begin|>`` is appended at each row's end and read; without, the prompt's last token (which
        predicts the attribute token, or the plain answer's first word)."""
        markers = self.attribute_markers if markers is None else markers
        batch = {k: v.to(device) for k, v in self.backbone.build_inputs(prompts, None).items()}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(1)
        if not markers:
            return ids, mask, lengths - 1
        rows = torch.arange(len(prompts), device=ids.device)
        ids = torch.cat([ids, torch.full_like(ids[:, :1], self.backbone.tokenizer.pad_token_id)], 1)
        mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
        ids[rows, lengths] = self.begin_id
        mask[rows, lengths] = 1
        return ids, mask, lengths

    @torch.no_grad()
    def class_probabilities(
        self, images: torch.Tensor, prompts: Sequence[str], visual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K) class probabilities: a softmax over the K attribute-token logits after ``<|attribute_begin|>``
        (attribute tokens; after the prompt's last token with ``attribute_markers=False``), or over the answer
        log-likelihoods of the K clinical names (plain-text baseline).
        ``visual``: the (B, N_v, d) visual tokens after ACC when already computed (:meth:`screen`)."""
        device = images.device
        if self.merges_visual:
            return self._class_probabilities_merged(images, prompts)
        if visual is None:
            _, visual = self.visual_tokens(images)
        if self.use_attribute_tokens:
            ids, mask, at = self.decision_inputs(prompts, device)
            rows = torch.arange(len(prompts), device=device)
            logits, _, _ = self.backbone.forward_embeds(self.embed(ids, visual), mask)
            return logits[rows, at][:, self.attr_ids].float().softmax(-1)
        scores = []
        for k in range(len(self.vocabulary)):
            answers = [self.format_answer([k], None)] * len(prompts)
            batch = {kk: v.to(device) for kk, v in self.backbone.build_inputs(prompts, answers).items()}
            logits, _, _ = self.backbone.forward_embeds(self.embed(batch["input_ids"], visual), batch["attention_mask"])
            logp = F.log_softmax(logits[:, :-1].float(), -1)
            lab = batch["labels"][:, 1:]
            valid = lab != -100
            tok_lp = logp.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1) * valid
            scores.append(tok_lp.sum(1))
        return torch.stack(scores, 1).softmax(-1)

    def _class_probabilities_merged(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """:meth:`class_probabilities` for merging backbones: the answer ``<|attribute_begin|>`` (attribute tokens)
        or each clinical name (plain text) is scored after the prompt."""
        if self.use_attribute_tokens:
            # score the position that predicts the first attribute token: <|attribute_begin|>'s, or without markers
            # the prompt's last (any attribute token stands in as the answer; the prompt cannot see it)
            first = self.vocabulary.begin_token if self.attribute_markers else self.vocabulary.tokens[0]
            batch = self.backbone.build_inputs(prompts, [first] * len(prompts), images)
            logits, _, _ = self.backbone.forward_inputs(batch)
            rows = torch.arange(len(prompts), device=logits.device)
            at = batch["prompt_lengths"].to(logits.device) - (0 if self.attribute_markers else 1)
            return logits[rows, at][:, self.attr_ids].float().softmax(-1)
        scores = []
        for k in range(len(self.vocabulary)):
            batch = self.backbone.build_inputs(prompts, [self.format_answer([k], None)] * len(prompts), images)
            logits, _, _ = self.backbone.forward_inputs(batch)
            logp = F.log_softmax(logits[:, :-1].float(), -1)
            lab = batch["labels"][:, 1:].to(logits.device)
            valid = lab != -100
            scores.append((logp.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1) * valid).sum(1))
        return torch.stack(scores, 1).softmax(-1)

    @torch.no_grad()
    def acc_attention(self, images: torch.Tensor) -> torch.Tensor:
        """ACC's attention from each visual token to each attribute's book (eq. 6), summed over the book's three
        tokens and averaged over heads: (B, C, H, W) -> (B, N_v, K); each token's row sums to one over the 3K book
        tokens. The visual tokens are laid out as ``backbone.token_grid(images)`` (row-major).

        Raises:
            ValueError: the model has no ACC (``use_acc=False``).
        """
        if self.acc is None:
            raise ValueError("acc_attention: this model has no ACC adapter (use_acc=False), so it has no attention maps.")
        raw = self.backbone.encode_images(images).to(self.acc.q_proj.weight.dtype)
        _, attn = self.acc.attention(raw, self.book.tokens(), self.book.key_padding_mask(), return_attention=True)
        b, _, n, _ = attn.shape
        return attn.float().mean(1).view(b, n, -1, 3).sum(-1)

    @torch.no_grad()
    def retrieval_scores(self, images: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) cosine similarity of each image's mean visual token (after ACC) to the attribute tokens a_k used
        as classifier weights (paper Table 6); through theta when the model has ACM. ``visual``: as in
        :meth:`class_probabilities`.

        Raises:
            ValueError: the model has no attribute tokens (``use_attribute_tokens=False``): its a_k are the keyword
                rows it was built with and never trained, so a "retrieval" would score nothing the model learned.
        """
        if not self.use_attribute_tokens:
            raise ValueError("retrieval_scores: this model has no attribute tokens (use_attribute_tokens=False), so "
                             "there is no trained attribute embedding to retrieve; use class_probabilities.")
        if visual is None:
            _, visual = self.visual_tokens(images)
        v, a = visual.mean(1), self.book.attribute_embeddings
        if self.acm_projection is not None:
            v, a = self.acm_projection(v), self.acm_projection(a)
        return F.normalize(v.float(), dim=-1) @ F.normalize(a.float(), dim=-1).t()

    @torch.no_grad()
    def screen(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One-pass screening: ``(class probabilities (B, K), retrieval scores (B, K))`` with the vision encoder and
        ACC run once for both, no decoding. Retrieval is ``None`` for a model without attribute tokens (plain-text
        baseline; see :meth:`retrieval_scores`)."""
        visual = None if self.merges_visual else self.visual_tokens(images)[1]  # merging: each scorer runs its own
        probs = self.class_probabilities(images, prompts, visual)
        return probs, self.retrieval_scores(images, visual) if self.use_attribute_tokens else None

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """One folder: backbone config + tokenizer, vocabulary, switches and all weights (atomic per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_config(directory)
        self.vocabulary.to_json(directory / "vocabulary.json")
        self.config.to_json_file(directory / "attok.json")
        state = self.state_dict()
        if self.merges_visual:  # the backbone saves its trained parts; the base model is referenced, not copied
            self.backbone.save_weights(directory)
            state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        atomic_write(directory / "model.pt", lambda tmp: torch.save(state, tmp))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> AttTokGPTv:
        """Rebuild a model saved by :meth:`save_pretrained`, in eval mode."""
        from attok_monai.networks.nets.compact_gptv import CompactGPTvBackbone

        directory = Path(directory)
        if not (directory / "model.pt").exists():
            raise FileNotFoundError(f"AttTokGPTv.from_pretrained: {directory} has no model.pt.")
        kind = json.loads((directory / "backbone.json").read_text()).get("type", "compact")
        if kind == "hf_qwen2vl":
            from attok_monai.networks.nets.hf_qwen2vl import Qwen2VLBackbone

            backbone = Qwen2VLBackbone.from_config_dir(directory)
        else:
            backbone = CompactGPTvBackbone.from_config_dir(directory)
        config = AttTokConfig.from_json_file(directory / "attok.json")
        model = cls(backbone, AttributeVocabulary.from_json(directory / "vocabulary.json"), config)
        state = torch.load(directory / "model.pt", map_location=map_location, weights_only=True)
        if model.merges_visual:
            result = model.load_state_dict(state, strict=False)
            missing = [k for k in result.missing_keys if not k.startswith("backbone.")]
            if missing or result.unexpected_keys:
                raise ValueError(
                    f"AttTokGPTv.from_pretrained: {directory / 'model.pt'} does not match the model "
                    f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})."
                )
            backbone.load_weights(directory)
        else:
            model.load_state_dict(state)
        return model.eval()  # like transformers' from_pretrained: ready for inference


# state-dict prefix of theta before it moved from the loss (``ACMLoss.projection``) into the network
_LEGACY_ACM_PREFIX = "acm.projection."
_ACM_PREFIX = "acm_projection.linear."


def rename_legacy_acm_keys(module: nn.Module, state_dict: dict, prefix: str, *args, **kwargs) -> None:
    """Load-state-dict pre-hook: models and checkpoints saved when theta lived in the loss name it
    ``acm.projection.{weight,bias}``; rename those keys to ``acm_projection.linear.*`` in place."""
    old = prefix + _LEGACY_ACM_PREFIX
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + _ACM_PREFIX + key[len(old):]] = state_dict.pop(key)
