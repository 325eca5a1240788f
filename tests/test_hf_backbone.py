"""Qwen2-VL / Qwen2.5-VL backbone with LoRA and attribute tokens: tiny randomly initialised models on CPU, an offline
tokenizer (``tokenizers``) with the Qwen-VL special tokens and a directly constructed image processor. No download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attok_monai.networks.nets.attok_gptv import AttTokGPTv
from attok_monai.networks.nets.hf_qwen2vl import Qwen2VLBackbone
from attok_monai.optimizers import optimizer_param_groups

REPO = Path(__file__).resolve().parents[1]
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB = {
    "modality": "fundus",
    "labels": {
        "0": {"concept": "nodr", "keywords": ["no diabetic retinopathy"]},
        "1": {"concept": "mildnpdr", "keywords": ["mild retinopathy"]},
        "2": {"concept": "pdr", "keywords": ["proliferative retinopathy"]},
    },
}
PROMPT = "what is the grade of this fundus image?"
TEXTS = [PROMPT, "no diabetic retinopathy", "mild retinopathy", "proliferative retinopathy", "user assistant system"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=QWEN_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def tiny_parts():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)  # 4x4 patches -> 4 tokens
    return {"tokenizer": tiny_tokenizer(), "image_processor": image_processor, "chat_template": CHAT_TEMPLATE}


def tiny_config(kind: str, vocab_size: int, tie: bool):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    ids = {t: i for i, t in enumerate(QWEN_SPECIALS)}
    text = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=vocab_size, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
        bos_token_id=0, eos_token_id=2, pad_token_id=0,
    )
    vision = dict(depth=1, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2)
    if kind == "qwen2_vl":
        vision.update(embed_dim=32, mlp_ratio=2)
        vision["hidden_size"] = 64  # Qwen2-VL: vision hidden_size is the output (LLM) width
        cls = Qwen2VLConfig
    else:
        vision.update(intermediate_size=64, out_hidden_size=64, window_size=56, fullatt_block_indexes=[0])
        cls = Qwen2_5_VLConfig
    return cls(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=tie,
    )


def tiny_attok(kind="qwen2_vl", vocab_size=384, tie=False, seed=0, **attok) -> AttTokGPTv:
    torch.manual_seed(seed)
    backbone = Qwen2VLBackbone.from_config(tiny_config(kind, vocab_size, tie), tiny_parts(), max_length=128)
    return AttTokGPTv(backbone, VOCAB, **attok)


def images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 56, 56, generator=g)


def train_steps(model, steps=3, lr=1e-2, answers_attrs=((0,), (2,))):
    opt = torch.optim.AdamW(optimizer_param_groups(model, 1e-4), lr=lr)
    model.train()
    x = images(len(answers_attrs))
    attrs = [list(a) for a in answers_attrs]
    for _ in range(steps):
        out = model(x, [PROMPT] * len(attrs), [None] * len(attrs), attrs)
        loss = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float(), out.labels[:, 1:].reshape(-1),
            ignore_index=-100,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.book.update_prototypes(out.visual_tokens, out.visual_targets)
    return loss


# ---------------------------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_tokens_added_without_shrinking_and_ids(kind):
    model = tiny_attok(kind, vocab_size=384)  # padded vocabulary: 320 tokens + 5 attribute tokens fit
    tok, bb = model.backbone.tokenizer, model.backbone
    specials = model.vocabulary.special_tokens
    ids = tok.convert_tokens_to_ids(specials)
    assert ids == list(range(320, 320 + len(specials)))
    assert bb.input_embeddings().weight.shape[0] == 384 and bb.output_embeddings().weight.shape[0] == 384
    assert model.begin_id == ids[0] and model.end_id == ids[1] and model.attr_ids.tolist() == ids[2:]
    # special tokens are never split and the image placeholder is expanded to the merged token count
    batch = bb.build_inputs([PROMPT], [model.format_answer([1], None)], images(1))
    row = batch["input_ids"][0].tolist()
    assert row.count(bb.image_token_id) == 4 and batch["mm_token_type_ids"][0].sum() == 4
    answer = row[int(batch["prompt_lengths"][0]):]
    assert answer[:3] == [ids[0], ids[3], ids[1]] and answer[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert (batch["labels"][0, : int(batch["prompt_lengths"][0])] == -100).all()
    # attribute rows initialised from the keyword embeddings
    emb = bb.input_embeddings().weight
    kw = tok.encode("mild retinopathy", add_special_tokens=False)
    assert torch.allclose(emb[ids[3]], emb[kw].mean(0), atol=1e-6)


def test_embedding_grows_when_tokenizer_outgrows_it():
    model = tiny_attok(vocab_size=322)  # 320 + 5 > 322: grows to 325
    assert model.backbone.input_embeddings().weight.shape[0] == len(model.backbone.tokenizer) == 325
    assert model.backbone.output_embeddings().weight.shape[0] == 325


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("tie", [False, True])
def test_frozen_rows_bit_identical_attribute_rows_move_lora_count(tie):
    model = tiny_attok("qwen2_5_vl", tie=tie)
    bb = model.backbone
    ids = model.attr_ids
    frozen = torch.ones(bb.input_embeddings().weight.shape[0], dtype=torch.bool)
    frozen[bb.trainable_token_ids] = False
    e0 = bb.input_embeddings().weight.detach().clone()
    h0 = bb.output_embeddings().weight.detach().clone()
    visual0 = {n: p.detach().clone() for n, p in bb.hf.model.visual.named_parameters()}
    # LoRA on the 7 LLM linear layers of each of the 2 layers only; r * (in + out) parameters each
    cfg = bb.hf.config.text_config
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = 16 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert sum(p.numel() for p in lora.values()) == per_layer * cfg.num_hidden_layers
    assert all(p.requires_grad for p in lora.values()) and not any("visual" in n for n in lora)
    assert bb.peft.peft_config["default"].r == 16 and bb.peft.peft_config["default"].lora_alpha == 32
    assert not any(p.requires_grad for p in bb.hf.model.visual.parameters())
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == set(lora_n.removeprefix("backbone.") for lora_n in lora) | {
        n for n, p in bb.named_parameters() if p is bb.input_embeddings().weight or p is bb.output_embeddings().weight
    }
    lora_b0 = {n: p.detach().clone() for n, p in lora.items()}
    train_steps(model, steps=3)
    e1, h1 = bb.input_embeddings().weight.detach(), bb.output_embeddings().weight.detach()
    assert torch.equal(e1[frozen], e0[frozen]) and torch.equal(h1[frozen], h0[frozen])
    assert not torch.equal(h1[ids], h0[ids])  # lm_head attribute rows (== embed rows when tied) move
    assert any(not torch.equal(p, lora_b0[n]) for n, p in lora.items())
    assert all(torch.equal(p, visual0[n]) for n, p in bb.hf.model.visual.named_parameters())


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_acc_changes_llm_image_inputs_and_gamma_zero_does_not(kind):
    seen = {}

    def capture(model):
        lm = model.backbone.hf.model.language_model
        handle = lm.register_forward_pre_hook(lambda m, a, k: seen.__setitem__("e", k["inputs_embeds"].detach()),
                                              with_kwargs=True)
        batch = model.backbone.build_inputs([PROMPT, PROMPT], ["a", "b"], images(2))
        model.backbone.forward_inputs(batch)
        handle.remove()
        return seen["e"][batch["input_ids"] == model.backbone.image_token_id], batch

    on = tiny_attok(kind, gamma=0.5).eval()
    off = tiny_attok(kind, gamma=0.0).eval()
    plain = tiny_attok(kind, use_acc=False).eval()
    v_on, batch = capture(on)
    v_off, _ = capture(off)
    v_plain, _ = capture(plain)
    raw = on.backbone.encode_images(images(2))  # (B, N_v, d) raw merged tokens, no ACC
    assert raw.shape == (2, 4, 64)
    assert torch.equal(v_off, v_plain) and torch.allclose(v_off, raw.reshape(-1, 64), atol=1e-6)
    assert not torch.allclose(v_on, v_off, atol=1e-4)
    expected = on._visual_transform(raw).reshape(-1, 64)
    if kind == "qwen2_vl":  # Qwen2.5-VL keeps its window order inside each image; compare per-image means there
        assert torch.allclose(v_on, expected, atol=1e-5)
    assert torch.allclose(v_on.view(2, 4, 64).mean(1), expected.view(2, 4, 64).mean(1), atol=1e-5)
    # the raw tokens (for the EMA) are recorded before ACC
    on.backbone.forward_inputs(batch)
    assert torch.allclose(on.backbone.last_visual_raw.mean(1), raw.mean(1), atol=1e-6)


def test_f_a_at_positions_predicting_attribute_tokens():
    model = tiny_attok("qwen2_vl")
    model.train()
    out = model(images(2), [PROMPT, PROMPT + " ok"], [None, None], [[2], [0]])
    lab = out.labels
    assert out.f_a.shape == (2, 64) and out.attr_targets.tolist() == [2, 0]
    # the row of each f^a is the position just before the attribute token
    for b in range(2):
        t = (lab[b] == model.attr_ids[out.attr_targets[b]]).nonzero().item()
        assert lab[b, t - 1] == model.begin_id
    assert out.visual_tokens.shape == (2, 4, 64) and out.visual_targets.tolist() == [2, 0]


def test_generation_emits_attribute_block_after_training():
    model = tiny_attok("qwen2_vl", seed=1)
    train_steps(model, steps=80, lr=1e-2, answers_attrs=((1,),))
    model.eval()
    text = model.generate(images(1), [PROMPT], max_new_tokens=6)[0]
    assert text.startswith("<|attribute_begin|><|fundus_mildnpdr|><|attribute_end|>"), text
    assert model.vocabulary.parse_answer(text).indices == [1]
    probs = model.class_probabilities(images(1), [PROMPT])
    assert probs.shape == (1, 3) and int(probs.argmax()) == 1
    # decoding keeps the special tokens; skip_special_tokens would drop them
    ids = model.backbone.tokenizer.convert_tokens_to_ids(model.vocabulary.special_tokens[:3])
    assert model.backbone.tokenizer.decode(ids, skip_special_tokens=True) == ""
    assert "<|attribute_begin|>" in model.backbone.decode(ids)


def test_attribute_markers_false_on_the_merging_backbone():
    """Without markers the Qwen2-VL path reads the class decision at the prompt's last position (it predicts the
    attribute token, the first answer token), the f^a row the same, and generation starts with the bare token."""
    model = tiny_attok("qwen2_vl", seed=1, attribute_markers=False)
    assert model.format_answer([1], None) == "<|fundus_mildnpdr|> " + model.vocabulary.names[1]
    out = model(images(2), [PROMPT] * 2, [None, None], [[2], [0]])
    lab = out.labels
    assert not bool(torch.isin(lab, torch.tensor([model.begin_id, model.end_id])).any())
    model.eval()
    batch = model.backbone.build_inputs([PROMPT], [model.format_answer([1], None)], images(1))
    with torch.no_grad():
        logits, _, _ = model.backbone.forward_inputs(batch)
    last = int(batch["prompt_lengths"][0]) - 1
    assert int(batch["input_ids"][0, last + 1]) == int(model.attr_ids[1])
    expected = logits[0, last][model.attr_ids].float().softmax(-1)
    torch.testing.assert_close(model.class_probabilities(images(1), [PROMPT])[0], expected, atol=1e-5, rtol=1e-4)
    train_steps(model, steps=80, lr=1e-2, answers_attrs=((1,),))
    model.eval()
    text = model.generate(images(1), [PROMPT], max_new_tokens=6)[0]
    assert text.startswith("<|fundus_mildnpdr|>"), text
    assert model.vocabulary.parse_answer(text).indices == [1]
    assert int(model.class_probabilities(images(1), [PROMPT]).argmax()) == 1


# ---------------------------------------------------------------------------------------------------- persistence
def save_base(tmp: Path, kind="qwen2_vl", tie=False) -> Path:
    torch.manual_seed(0)
    parts = tiny_parts()
    from transformers import AutoModelForImageTextToText

    base = tmp / f"base_{kind}"
    AutoModelForImageTextToText.from_config(tiny_config(kind, 384, tie)).save_pretrained(base)
    parts["tokenizer"].chat_template = CHAT_TEMPLATE
    parts["tokenizer"].save_pretrained(base)
    parts["image_processor"].save_pretrained(base)
    return base


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_save_load_identical_logits(tmp_path, kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = save_base(tmp_path, kind)
    bb = Qwen2VLBackbone.from_pretrained(str(base), min_pixels=56 * 56, max_pixels=56 * 56, max_length=128)
    model = AttTokGPTv(bb, VOCAB)
    train_steps(model, steps=2)
    model.eval()
    out_dir = tmp_path / "trained"
    model.save_pretrained(out_dir)
    assert (out_dir / "adapter" / "adapter_model.safetensors").exists() and (out_dir / "token_rows.pt").exists()
    assert not list(out_dir.glob("**/model.safetensors"))  # the base model is referenced, not copied
    assert json.loads((out_dir / "backbone.json").read_text())["model_id"] == str(base)
    loaded = AttTokGPTv.from_pretrained(out_dir)
    assert loaded.backbone.tokenizer.convert_tokens_to_ids(VOCAB_TOKENS(model)) == model.attr_ids.tolist()
    batch = model.backbone.build_inputs([PROMPT], [model.format_answer([1], None)], images(1))
    with torch.no_grad():
        a = model.backbone.forward_inputs(batch)[0]
        b = loaded.backbone.forward_inputs(batch)[0]
    assert torch.equal(a, b)
    assert torch.equal(loaded.book.prototypes, model.book.prototypes)


def VOCAB_TOKENS(model):  # noqa: N802
    return model.vocabulary.tokens


# ---------------------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_ranks_identical_parameters(tmp_path):
    base = save_base(tmp_path)
    script = REPO / "tests" / "ddp_hf_worker.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(base), str(tmp_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys() and len(r0) > 10
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert not torch.equal(r0["__initial_lora_b__"], r0["__final_lora_b__"])  # it trained


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_attention_maps_on_the_merged_token_grid(kind):
    """ACC attention maps work on the Hugging Face backbones: the visual-token grid comes from the processor's patch
    grid over the merge size, and each map sums to one over the image."""
    from attok_monai.engines.attention_maps import attention_maps

    model = tiny_attok(kind).eval()
    x = images(2)
    grid = model.backbone.token_grid(x)
    n_tokens = model.backbone.encode_images(x).shape[1]
    assert all(gh * gw == n_tokens for gh, gw in grid)
    maps, attrs = attention_maps(model, x, [0, 2])
    assert maps.shape == (2, *x.shape[-2:]) and attrs.tolist() == [0, 2]
    assert torch.allclose(maps.sum((1, 2)), torch.ones(2), atol=1e-4)
