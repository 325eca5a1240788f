"""AttributeClassifier: the image-only entry point of a trained compact AttTokGPTv, for export and serving.

``AttTokGPTv.forward`` takes images, prompts, answers and attributes (training); ``generate`` decodes token by token.
Neither can be checked by MONAI's ``verify_net_in_out`` or exported with ``ckpt_export`` (TorchScript) or
``onnx_export``. This module fixes the question at build time (tokenised once, held as buffers) and maps

    image (B, C, H, W) float in [0, 1]  ->  (B, K) attribute probabilities

with one forward of the LM and no decoding:

- attribute tokens (AttTok): the sequence is ``<bos> [N_v visual tokens] question <sep> <|attribute_begin|>`` (without
  ``<|attribute_begin|>`` for a model trained with ``attribute_markers=False``) and the
  output is a softmax over the K attribute-token logits at the last position, as
  :meth:`AttTokGPTv.class_probabilities` computes it;
- plain-text baseline (``use_attribute_tokens=False``): the K clinical names are scored as answers (the K sequences
  ``... <sep> name_k <eos>`` run as one batch of B*K rows); the output is a softmax over their summed token
  log-likelihoods, again as :meth:`AttTokGPTv.class_probabilities` does.

The forward has a fixed sequence layout, no Python-side tokenisation and no data-dependent control flow, so
``torch.jit.trace`` and ``torch.onnx.export`` record it with a free batch dimension. The visual tokens are placed by
concatenation (the visual slots follow ``<bos>``), and no attention mask is needed: every row of the attribute path
has the same length, and in the baseline's right-padded rows causal attention never lets a scored position see
the padding after it. The causal mask itself is a fixed (1, 1, L, L) additive buffer handed to the LM as a prepared
4D mask: ``transformers`` builds its mask from the batch size it sees while tracing, which would fix the batch of the
exported model.

The wrapper holds the trained model's modules under the model's own names (``backbone``, ``book``, ``acc``,
``acm_projection``), so its state dict is the model's: ``model.pt`` of a model folder (or a MONAI checkpoint's
``network`` entry) loads into it unchanged, which is what MONAI's ``ckpt_export``/``onnx_export`` do (files saved
before theta moved out of the loss, with ``acm.projection.*`` keys, are renamed on load).

Backbones that merge visual tokens inside their own model (Hugging Face Qwen2-VL) are not supported: their image
processor turns each image into a variable number of patches on the Python side, so the sequence layout is not
fixed; :class:`AttributeClassifier` raises ``NotImplementedError`` for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attok_monai.networks.nets.attok_gptv import AttTokGPTv, rename_legacy_acm_keys

__all__ = ["AttributeClassifier"]


class AttributeClassifier(nn.Module):
    """Image-only attribute probabilities of a trained compact :class:`AttTokGPTv` for one fixed question.

    Args:
        model: a trained compact AttTokGPTv (``AttTokGPTv.from_pretrained(model_dir)``); its modules are shared,
            not copied.
        question: the question asked of every image (e.g. the bundle's first open-ended template,
            ``InstructionTemplates.question("open")``, which ``inference`` asks too).

    Shapes:
        input ``image``: (B, C, H, W) float in [0, 1], the size the model was trained on; output: (B, K) float32
        probabilities over the K attributes in vocabulary order (rows sum to 1).

    Raises:
        NotImplementedError: the backbone merges visual tokens itself (Hugging Face Qwen2-VL).
        ValueError: the question contains attribute tokens, or the backbone's sequence layout is not
            ``<bos> [visual] ...``.
    """

    def __init__(self, model: AttTokGPTv, question: str) -> None:
        super().__init__()
        if model.merges_visual:
            raise NotImplementedError(
                "AttributeClassifier: the Hugging Face backbone's image processor turns each image into a variable "
                "number of patches in Python before the model runs, so its input layout is not fixed and cannot be "
                "traced or exported; export is supported for the compact backbone (score the HF model with "
                "AttTokGPTv.class_probabilities instead)."
            )
        # the model's own module names: the state dict is the model's
        self.backbone = model.backbone
        self.book = model.book
        self.acc = model.acc
        self.acm_projection = model.acm_projection
        # model.pt files saved before theta moved out of the loss
        self._register_load_state_dict_pre_hook(rename_legacy_acm_keys, with_module=True)
        self.question = question
        self.use_attribute_tokens = model.use_attribute_tokens
        self.vocabulary = model.vocabulary
        self.register_buffer("attr_ids", model.attr_ids.clone(), persistent=False)
        n_v = model.backbone.num_visual_tokens
        k = len(model.vocabulary)
        if model.use_attribute_tokens:
            batch = model.backbone.build_inputs([question], None)
            ids = batch["input_ids"]  # (1, L): the last prompt token predicts the attribute without markers
            if model.attribute_markers:
                ids = torch.cat([ids, torch.tensor([[model.begin_id]])], 1)  # (1, L)
            labels = torch.full_like(ids, -100)
        else:
            answers = [model.format_answer([i], None) for i in range(k)]  # plain_markers: after the markers
            batch = model.backbone.build_inputs([question] * k, answers)
            ids, labels = batch["input_ids"], batch["labels"]  # (K, L), right padded
        slots = ids == -1
        if not bool(slots[:, 1 : 1 + n_v].all()) or int(slots.sum()) != n_v * ids.shape[0]:
            raise ValueError("AttributeClassifier: expected the layout <bos> [visual tokens] question <sep> ...")
        text = torch.cat([ids[:, :1], ids[:, 1 + n_v :]], 1)
        if bool(torch.isin(text, model.attr_ids).any()):
            raise ValueError(f"AttributeClassifier: the question {question!r} contains attribute tokens.")
        self.register_buffer("prefix_ids", ids[:, :1].clone(), persistent=False)  # (S, 1): <bos>
        self.register_buffer("suffix_ids", ids[:, 1 + n_v :].clone(), persistent=False)  # (S, T)
        self.register_buffer("target_ids", labels[:, 1:].clone(), persistent=False)  # (S, L - 1) next tokens
        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        additive = torch.zeros(length, length).masked_fill(~causal, torch.finfo(torch.float32).min)
        self.register_buffer("causal_mask", additive[None, None], persistent=False)  # (1, 1, L, L)
        self.num_visual_tokens = n_v

    @property
    def num_attributes(self) -> int:
        return len(self.vocabulary)

    def _book_padding_mask(self) -> torch.Tensor:
        """(K, 3) bool, True at visual prototypes never updated (the book's mask without its Python branch)."""
        missing = ~self.book.prototype_initialized
        keep = torch.zeros_like(missing)
        return torch.stack([keep, keep, missing], dim=1)

    def visual_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N_v, d) visual tokens after ACC (identity without ACC)."""
        raw = self.backbone.encode_images(image)
        if self.acc is None:
            return raw
        return self.acc(raw, self.book.tokens(), self._book_padding_mask())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> (B, K) float32 attribute probabilities."""
        visual = self.visual_tokens(image)  # (B, N_v, d)
        table = self.backbone.input_embeddings()
        prefix = table(self.prefix_ids).to(visual.dtype)  # (S, 1, d)
        suffix = table(self.suffix_ids).to(visual.dtype)  # (S, T, d)
        b, s = visual.shape[0], self.prefix_ids.shape[0]
        embeds = torch.cat(
            [
                prefix.unsqueeze(0).expand(b, -1, -1, -1),
                visual.unsqueeze(1).expand(-1, s, -1, -1),
                suffix.unsqueeze(0).expand(b, -1, -1, -1),
            ],
            dim=2,
        ).flatten(0, 1)  # (B*S, L, d)
        logits, _, _ = self.backbone.forward_embeds(embeds, self.causal_mask.to(embeds.dtype))  # (B*S, L, V)
        if self.use_attribute_tokens:
            return logits[:, -1].index_select(-1, self.attr_ids).float().softmax(-1)
        logp = F.log_softmax(logits[:, :-1].float(), -1)  # (B*K, L - 1, V)
        targets = self.target_ids.repeat(b, 1)  # (B*K, L - 1)
        valid = targets != -100
        token_logp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
        return token_logp.sum(1).view(b, s).softmax(-1)

    def extra_repr(self) -> str:
        return (f"question={self.question!r}, num_attributes={self.num_attributes}, "
                f"attribute_tokens={self.use_attribute_tokens}")
