"""The paper's open choices as config keys (issue #21): each key does what it says."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.instructions import InstructionTemplates
from attok_monai.data.sampling import class_balanced_sampler
from attok_monai.losses import ACMLoss, AttTokLoss
from attok_monai.networks.blocks import ACMProjection
from attok_monai.networks.builders import build_compact_attok
from attok_monai.networks.nets import AttTokGPTv
from attok_monai.optimizers import optimizer_param_groups
from tests.conftest import tiny_attok

REPO = Path(__file__).resolve().parents[1]
CLASSIFICATION = ["derma_isic", "fundus_dr", "oct_retina", "pathology_crc", "pathology_lung", "xray_pneumonia"]


# ------------------------------------------------------------------ fa_position
@pytest.mark.parametrize("position, shift", [("decision", 0), ("attribute", 1)])
def test_fa_position_indices_on_hand_built_batch(position, shift):
    net = tiny_attok(fa_position=position)
    a = net.attr_ids.tolist()
    # hidden[b, t] = (b, t, 0, ...) so that each returned row names its own position
    hidden = torch.zeros(2, 7, 32)
    hidden[..., 0] = torch.arange(2)[:, None].float()
    hidden[..., 1] = torch.arange(7)[None].float()
    # row 0: prompt of 2, answer <begin> a_2 <end> text; row 1: prompt of 3, answer <begin> a_0 a_1 <end>
    labels = torch.tensor([
        [-100, -100, net.begin_id, a[2], net.end_id, 5, -100],
        [-100, -100, -100, net.begin_id, a[0], a[1], net.end_id],
    ])
    f_a, targets = net._attribute_positions(hidden, labels, torch.tensor([2, 3]), [[2], [0, 1]])
    # the decision position t predicts the attribute token at t + 1; the attribute position is t + 1 itself
    assert f_a[:, :2].tolist() == [[0, 2 + shift], [1, 3 + shift], [1, 4 + shift]]
    assert targets.tolist() == [2, 0, 1]


@pytest.mark.parametrize("position, expected", [("decision", [1, 2]), ("attribute", [2, 3])])
def test_fa_position_plain_text_answers(position, expected):
    net = tiny_attok(fa_position=position, use_attribute_tokens=False)
    hidden = torch.arange(2 * 6).float().view(2, 6, 1).expand(2, 6, 32)
    f_a, targets = net._attribute_positions(hidden, torch.full((2, 6), -100), torch.tensor([2, 3]), [[1], [2]])
    assert f_a[:, 0].tolist() == [expected[0], 6 + expected[1]] and targets.tolist() == [1, 2]


def test_fa_position_in_forward_and_bad_value():
    x = torch.rand(2, 1, 16, 16)
    q = ["what is this radiology image?"] * 2
    for position in ("decision", "attribute"):
        net = tiny_attok(fa_position=position)
        out = net(x, q, [None, None], [[0], [2]])
        assert out.f_a.shape == (2, 32) and out.attr_targets.tolist() == [0, 2]
    with pytest.raises(ValueError, match="fa_position"):
        tiny_attok(fa_position="end")


# ------------------------------------------------------------------ acc_book_grad
def test_acc_book_grad_detaches_the_book_in_acc_only():
    x = torch.rand(2, 1, 16, 16)
    grads, outs = {}, {}
    for flag in (True, False):
        net = tiny_attok(acc_book_grad=flag).train()
        net.book.prototypes.normal_()  # prototypes valid, so every book token is a key
        net.book.prototype_initialized.fill_(True)
        raw = net.backbone.encode_images(x)
        out = net._visual_transform(raw)
        out.square().sum().backward()
        outs[flag] = out.detach()
        grads[flag] = (net.book.attribute_embeddings.grad, net.book.keyword_embeddings.grad, net.acc.v_proj.weight.grad)
    assert torch.equal(outs[True], outs[False])  # the same forward pass
    a, e, v = grads[True]
    assert a.abs().sum() > 0 and e.abs().sum() > 0 and v.abs().sum() > 0
    a, e, v = grads[False]
    assert a is None and e is None and v.abs().sum() > 0  # ACC itself still trains
    # a_k still trains through the attribute token when the book is detached in ACC
    net = tiny_attok(acc_book_grad=False, use_acm=False).train()
    out = net(x, ["what is this radiology image?"] * 2, [None, None], [[0], [2]])
    F.cross_entropy(out.logits[:, :-1].flatten(0, 1), out.labels[:, 1:].flatten(), ignore_index=-100).backward()
    assert net.book.attribute_embeddings.grad.abs().sum() > 0 and net.book.keyword_embeddings.grad is None


# ------------------------------------------------------------------ acc_logit_scale
def test_acc_logit_scale_reaches_acc_trains_and_is_not_decayed(tmp_path):
    assert tiny_attok().acc.logit_scale() == 1.0 and not hasattr(tiny_attok().acc, "log_logit_scale")
    net = tiny_attok(acc_logit_scale=50.0, acc_logit_scale_learned=True).train()
    assert math.isclose(net.acc.logit_scale().item(), 50.0, rel_tol=1e-6)
    groups = optimizer_param_groups(net, weight_decay=0.1)
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)["params"]
    assert any(p is net.acc.log_logit_scale for p in no_decay)  # decay would pull s towards 1
    net.book.prototypes.normal_()
    net.book.prototype_initialized.fill_(True)
    net._visual_transform(net.backbone.encode_images(torch.rand(2, 1, 16, 16))).square().sum().backward()
    assert net.acc.log_logit_scale.grad.abs() > 0
    # saved and rebuilt with the key: the learned value comes back
    with torch.no_grad():
        net.acc.log_logit_scale.add_(0.5)
    net.save_pretrained(tmp_path)
    back = AttTokGPTv.from_pretrained(tmp_path)
    assert back.config.acc_logit_scale_learned and torch.equal(back.acc.log_logit_scale, net.acc.log_logit_scale)


# ------------------------------------------------------------------ acc_bias
def test_acc_bias_switch():
    """acc_bias false: eqs. 6-7 as the paper writes them, W_Q, W_K, W_V, W_O without biases; with equal weights the
    output differs from the default's by the biases' part only."""
    with_bias, without = tiny_attok(), tiny_attok(acc_bias=False)
    assert {n for n, _ in with_bias.acc.named_parameters() if n.endswith("bias")} == {"q_proj.bias", "v_proj.bias",
                                                                                      "o_proj.bias"}
    assert not any(n.endswith("bias") for n, _ in without.acc.named_parameters())
    assert without.config.acc_bias is False and without.acc.k_proj.bias is None
    f, book = torch.randn(2, 4, 32), torch.randn(3, 3, 32)
    with torch.no_grad():
        for name in ("q_proj", "v_proj", "o_proj"):
            getattr(without.acc, name).weight.copy_(getattr(with_bias.acc, name).weight)
            getattr(with_bias.acc, name).bias.zero_()
        without.acc.k_proj.weight.copy_(with_bias.acc.k_proj.weight)
    torch.testing.assert_close(without.acc(f, book), with_bias.acc(f, book))


# ------------------------------------------------------------------ acm_bias
def test_acm_bias_switch():
    assert ACMProjection(8).linear.bias is not None
    theta = ACMProjection(8, bias=False)
    assert theta.linear.bias is None and [n for n, _ in theta.named_parameters()] == ["linear.weight"]
    net = tiny_attok(acm_bias=False)
    assert net.acm_projection.linear.bias is None
    assert not any(n.startswith("acm_projection.") and n.endswith("bias") for n, _ in net.named_parameters())
    # without a bias theta is linear: theta(2x) = 2 theta(x), so the cosines of eq. (8) are scale-free
    x = torch.randn(4, 8)
    assert torch.allclose(theta(2 * x), 2 * theta(x), atol=1e-6)


# ------------------------------------------------------------------ acm_weighting
def _hand_example():
    torch.manual_seed(0)
    acm = ACMLoss()
    logits = torch.randn(2, 5, 11)
    # 3 answer tokens in row 0, 1 in row 1: T = 4, S = 2
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, -100, -100, -100]])
    f_a, target, book = torch.randn(3, 8), torch.tensor([0, 2, 1]), torch.randn(3, 3, 8)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), reduction="none")
    ce = ce[labels[:, 1:].reshape(-1) != -100]
    per_sample_acm = ACMLoss(reduction="none")
    acm_terms = per_sample_acm(f_a, target, book)
    return acm, logits, labels, f_a, target, book, ce, acm_terms


@pytest.mark.parametrize("weighting", ["mean", "per_token", "ntp_sum"])
def test_acm_weighting_hand_computed(weighting):
    acm, logits, labels, f_a, target, book, ce, acm_terms = _hand_example()
    assert ce.numel() == 4 and acm_terms.numel() == 3
    lam = 0.5
    expected = {
        "mean": ce.sum() / 4 + lam * acm_terms.sum() / 3,
        "per_token": (ce.sum() + lam * acm_terms.sum()) / 4,
        "ntp_sum": ce.sum() / 2 + lam * acm_terms.sum() / 3,
    }[weighting]
    loss = AttTokLoss(lambda_weight=lam, acm_weighting=weighting)
    assert torch.allclose(loss(logits, labels, f_a, target, book), expected, atol=1e-5)
    # NTP alone (baseline / +ACC): the same NTP normalisation
    ntp_only = {"mean": ce.sum() / 4, "per_token": ce.sum() / 4, "ntp_sum": ce.sum() / 2}[weighting]
    assert torch.allclose(AttTokLoss(use_acm=False, acm_weighting=weighting)(logits, labels), ntp_only, atol=1e-5)


def test_acm_weighting_bad_value():
    with pytest.raises(ValueError, match="acm_weighting"):
        AttTokLoss(use_acm=False, acm_weighting="sum")
    with pytest.raises(ValueError, match="acm_weighting"):
        tiny_attok(acm_weighting="sum")


# ------------------------------------------------------------------ saved with the model
def test_new_keys_saved_and_rebuilt(tmp_path):
    net = tiny_attok(fa_position="attribute", acm_bias=False, acm_weighting="per_token")
    net.save_pretrained(tmp_path)
    hp = json.loads((tmp_path / "attok.json").read_text())
    assert hp["fa_position"] == "attribute" and hp["acm_bias"] is False and hp["acm_weighting"] == "per_token"
    again = AttTokGPTv.from_pretrained(tmp_path)
    assert again.fa_position == "attribute" and again.acm_projection.linear.bias is None
    assert again.hparams == net.hparams


# ------------------------------------------------------------------ attribute_init
def test_attribute_row_token_ids_hand_example():
    ids = [[5, 7, 8, 9], [6, 7, 8, 9], [10, 8, 9], [7, 8]]
    # 5, 6, 10 belong to one keyword each; the last keyword has no token of its own -> all of its tokens
    assert AttTokGPTv.attribute_row_token_ids(ids) == [[5], [6], [10], [7, 8]]


def test_first_token_ids_hand_example():
    ids = [[5, 7, 8, 9], [6, 7, 8, 9], [5, 10, 9], [7, 8]]
    # 6 and 7 start one keyword each; 5 starts two, which fall back to their distinct tokens (10 for the third;
    # none for the first, so all of its tokens)
    assert AttTokGPTv.first_token_ids(ids) == [[5, 7, 8, 9], [6], [10], [7]]


def test_attribute_init_distinct_rows():
    names = {0: "mild lung disease", 1: "severe lung disease", 2: "normal"}
    kw, ds = (build_compact_attok(
        AttributeVocabulary.from_label_map("rad", names),
        InstructionTemplates("radiology", list(names.values()), ["what is this {modality} image?"], ["which of {options}?"]),
        vision={"in_channels": 1, "img_size": 16, "widths": [8, 8, 8, 8], "grid": 2},
        llm={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2},
        seed=0, attribute_init=init) for init in ("keyword", "distinct"))
    ft = build_compact_attok(
        AttributeVocabulary.from_label_map("rad", names),
        InstructionTemplates("radiology", list(names.values()), ["what is this {modality} image?"], ["which of {options}?"]),
        vision={"in_channels": 1, "img_size": 16, "widths": [8, 8, 8, 8], "grid": 2},
        llm={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2},
        seed=0, attribute_init="first_token")
    tok = kw.backbone.tokenizer
    kw_ids = [tok.encode(a.keywords[0], add_special_tokens=False) for a in kw.vocabulary]
    rows = AttTokGPTv.attribute_row_token_ids(kw_ids)
    assert rows[0] != kw_ids[0] and set(rows[0]) < set(kw_ids[0])  # "lung disease" shared with "severe ..."
    firsts = [[ids[0]] for ids in kw_ids]  # "mild", "severe", "normal": each starts one keyword only
    assert AttTokGPTv.first_token_ids(kw_ids) == firsts
    for net, use in ((kw, kw_ids), (ds, rows), (ft, firsts)):
        head = net.backbone.output_embeddings().weight
        emb = net.backbone.input_embeddings().weight
        for k, ids in enumerate(use):
            assert torch.allclose(head[net.attr_ids[k]], head[torch.tensor(ids)].mean(0))
            assert torch.allclose(emb[net.attr_ids[k]], emb[torch.tensor(ids)].mean(0))
            assert torch.allclose(net.book.attribute_embeddings[k], emb[torch.tensor(ids)].mean(0))
        # e_k is the whole keyword's mean in both modes
        for k, ids in enumerate(kw_ids):
            assert torch.allclose(net.book.keyword_embeddings[k], emb[torch.tensor(ids)].mean(0), atol=1e-6)
    # outside the attribute rows the two models are the same model (same seed)
    mask = torch.ones(kw.backbone.output_embeddings().weight.shape[0], dtype=torch.bool)
    mask[kw.attr_ids] = False
    assert torch.equal(kw.backbone.output_embeddings().weight[mask], ds.backbone.output_embeddings().weight[mask])
    assert ds.hparams["attribute_init"] == "distinct" and ft.hparams["attribute_init"] == "first_token"
    with pytest.raises(ValueError, match="attribute_init"):
        tiny_attok(attribute_init="random")


# ------------------------------------------------------------------ weight decay groups
def test_weight_decay_groups_exempt_the_book():
    net = tiny_attok()
    groups = optimizer_param_groups(net, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    exempt = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    names = dict(net.named_parameters())
    for name in ("book.attribute_embeddings", "book.keyword_embeddings", "acm_projection.linear.bias"):
        assert id(names[name]) in exempt, name
    for name in ("acc.q_proj.weight", "acm_projection.linear.weight"):
        assert id(names[name]) in decayed, name
    assert all(id(p) in exempt for n, p in names.items() if "norm" in n or p.ndim < 2)
    assert decayed.isdisjoint(exempt) and len(decayed | exempt) == len({id(p) for p in net.parameters()})


# ------------------------------------------------------------------ balanced sampling
def test_balanced_sampler_frequencies():
    labels = [0] * 800 + [1] * 150 + [2] * 50
    sampler = class_balanced_sampler(labels, num_samples=30000, seed=0)
    counts = Counter(labels[i] for i in sampler)
    assert all(abs(counts[k] / 30000 - 1 / 3) < 0.02 for k in range(3)), counts
    assert list(class_balanced_sampler(labels, seed=3)) == list(class_balanced_sampler(labels, seed=3))


# ------------------------------------------------------------------ bundles
@pytest.mark.parametrize("bundle", CLASSIFICATION)
def test_bundle_keys_defaults_and_tokens_only(bundle):
    from attok_monai.bundle.resolve import resolve_files

    cfg = resolve_files([str(REPO / "bundles" / bundle / "configs" / "train.json")])  # the shared base pulled in
    # fa_position "attribute" and attribute_init "distinct" chosen by docs/study_defaults.md; the others keep the
    # behaviour before issue #21 (acc_norm: measured, not chosen)
    assert cfg["fa_position"] == "attribute" and cfg["acm_bias"] is True and cfg["acm_weighting"] == "mean"
    assert cfg["prototype_init"] == "first_batch" and cfg["prototype_init_batches"] == 8
    assert cfg["attribute_init"] == "distinct" and cfg["acc_norm"] is False and cfg["acc_book_grad"] is True
    assert cfg["acc_logit_scale"] == 1.0 and cfg["acc_logit_scale_learned"] is False and cfg["acc_bias"] is True
    assert cfg["attribute_markers"] is True and cfg["plain_markers"] is False
    for key in ("fa_position", "acm_bias", "acm_weighting", "prototype_init", "prototype_init_batches", "acc_norm",
                "attribute_init", "acc_book_grad", "acc_logit_scale", "acc_logit_scale_learned", "acc_bias",
                "attribute_markers", "plain_markers"):
        assert cfg["network_def"][key] == f"@{key}"
        assert f"{key}=@{key}" in cfg["hyperparameters"]
    assert cfg["loss"]["acm_weighting"] == "@acm_weighting"
    text = json.dumps(cfg)
    assert cfg["cv_folds"] == 0 and cfg["cv_fold"] == 0  # cross-validation off: the official parts
    assert "cv_folds=@cv_folds" in cfg["hyperparameters"] and "cv_fold=@cv_fold" in cfg["hyperparameters"]
    for module in ("attok_monai.data.sampling", "attok_monai.optimizers", "attok_monai.data.splits"):
        if module + "." in text:
            assert f"$import {module}" in cfg["imports"], module
    tokens = json.loads((REPO / "bundles" / bundle / "configs" / "tokens_only.json").read_text())
    assert tokens["use_attribute_tokens"] is True and tokens["use_acc"] is False and tokens["use_acm"] is False


@pytest.mark.parametrize("bundle", ["fundus_dr", "pathology_lung"])
def test_cv_folds_hold_out_a_fold_of_the_training_part(bundle):
    """cv_folds / cv_fold: the run trains on the other folds of the training part and validates on the held fold;
    the official validation part is not read. Real shared data (a MedMNIST file and an image table)."""
    from attok_monai.configs import read_config
    from tests.conftest import require, shared_data_root

    require(shared_data_root())
    os.environ.setdefault("ATTOK_DATA_ROOT", str(shared_data_root()))
    parser = read_config(REPO / "bundles" / bundle / "configs" / "train.json")
    full = [it["id"] for it in parser.get_parsed_content("train#datalist")]
    official_val = {it["id"] for it in parser.get_parsed_content("validate#datalist")}
    held = []
    for k in (0, 4):
        parser = read_config(REPO / "bundles" / bundle / "configs" / "train.json")
        parser["cv_folds"], parser["cv_fold"] = 5, k
        train = [it["id"] for it in parser.get_parsed_content("train#datalist")]
        val = [it["id"] for it in parser.get_parsed_content("validate#datalist")]
        assert set(train) | set(val) == set(full) and not set(train) & set(val)
        assert not set(val) & official_val
        assert abs(len(val) - len(full) / 5) <= 0.02 * len(full)
        held.append(set(val))
    assert not held[0] & held[1]


def test_vqa_rad_cv_folds_hold_out_images_of_its_training_part(tmp_path):
    """vqa_rad's cv_folds / cv_fold: folds of the training part's images (every pair of an image in one fold, the
    organ shares kept); the official validation images are read by neither part; the vocabulary is built on the
    fold's training part; a cv_fold without cv_folds is refused. Real shared data (VQA-RAD's question file)."""
    from attok_monai.vqa.datalists import cv_parts, prepare_vqa
    from tests.conftest import require, shared_data_root

    require(shared_data_root())
    root = shared_data_root() / "vqa_rad"
    official = prepare_vqa(root, tmp_path / "official")
    official_val_images = {r.image for r in official.val_records}
    train_ids = {r.id for r in official.train_records}
    held = []
    for k in (0, 4):
        data = prepare_vqa(root, tmp_path / f"fold{k}", cv_folds=5, cv_fold=k)
        train_images, val_images = ({r.image for r in rs} for rs in (data.train_records, data.val_records))
        assert {r.id for r in data.train_records} | {r.id for r in data.val_records} == train_ids
        assert not train_images & val_images and not (train_images | val_images) & official_val_images
        n_images = len({r.image for r in official.train_records})
        assert abs(len(val_images) - n_images / 5) <= 0.03 * n_images
        assert data.split_info["cv_folds"] == 5 and data.split_info["cv_fold"] == k
        assert data.split_info["num_val"] == len(data.val) == len(data.val_records)
        held.append(val_images)
    assert not held[0] & held[1]
    assert official.split_info["cv_folds"] == 0
    with pytest.raises(ValueError, match="cv_fold: 2 with cv_folds 0"):
        prepare_vqa(root, tmp_path / "bad", cv_fold=2)
    with pytest.raises(ValueError, match="cv_fold: 5"):
        prepare_vqa(root, tmp_path / "bad", cv_folds=5, cv_fold=5)

    # organ shares kept per fold (2 images of each organ, 2 pairs each), the same folds on every call
    records = [{"image": f"img{i // 2}.jpg", "organ": ("HEAD", "CHEST", "ABD")[i // 2 % 3], "q": i} for i in range(60)]
    for k in range(5):
        train, val = cv_parts(records, 5, k)
        assert len(train) + len(val) == 60 and not {r["image"] for r in train} & {r["image"] for r in val}
        assert sorted(r["organ"] for r in val) == ["ABD"] * 4 + ["CHEST"] * 4 + ["HEAD"] * 4
        assert cv_parts(records, 5, k) == (train, val)
    with pytest.raises(ValueError, match="cv_folds: 5 folds of 3 images"):
        cv_parts(records[:6], 5, 0)
    cfg = json.loads((REPO / "bundles" / "vqa_rad" / "configs" / "train.json").read_text())
    assert cfg["cv_folds"] == 0 and "cv_folds=@cv_folds, cv_fold=@cv_fold" in cfg["data"]


def test_vqa_rad_takes_the_chosen_defaults():
    """vqa_rad keeps its own full config; the study's keys come from the one shared place, so a default chosen for the
    classification bundles reaches it too (before, its model fell back to AttTokConfig's own defaults: fa_position
    "decision", attribute_init "keyword")."""
    from attok_monai.bundle.resolve import resolve_files

    shared = resolve_files([str(REPO / "attok_monai" / "configs" / "classification" / "train.json")])
    keys = ("fa_position", "acm_bias", "acc_norm", "attribute_init", "acm_weighting", "acc_book_grad",
            "acc_logit_scale", "acc_logit_scale_learned", "acc_bias", "attribute_markers", "plain_markers")
    configs = REPO / "bundles" / "vqa_rad" / "configs"
    train, qwen = (resolve_files([str(configs / f) for f in files])
                   for files in (["train.json"], ["train.json", "train_qwen25vl.json"]))
    for name, cfg in (("train.json", train), ("train_qwen25vl.json", qwen)):
        for key in keys:
            assert cfg[key] == shared[key], (name, key)
            assert cfg["network_def"][key] == f"@{key}", (name, key)
        assert cfg["fa_position"] == "attribute" and cfg["attribute_init"] == "distinct"
    assert all(f"{key}=@{key}" in train["hyperparameters"] for key in keys)
    assert train["loss"]["acm_weighting"] == "@acm_weighting"
    for files in (["train.json"], ["train.json", "multi_gpu_train.json"]):  # refused with attribute tokens at start-up
        cfg = resolve_files([str(configs / f) for f in files])
        assert any("plain_markers=@plain_markers" in str(e) for e in cfg.get("initialize", [])), files


# ------------------------------------------------------------------ prototype_init
def test_book_set_class_means_hand_computed():
    from attok_monai.networks.blocks import EmbeddingBook

    book = EmbeddingBook(3, 2)
    set_ = book.set_class_means(torch.tensor([[2.0, 4.0], [0.0, 0.0], [3.0, 3.0]]), torch.tensor([2.0, 0.0, 3.0]))
    assert set_.tolist() == [True, False, True] and book.prototype_initialized.tolist() == [True, False, True]
    assert torch.allclose(book.prototypes, torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 1.0]]))


def test_prototype_init_class_means_and_handler():
    from ignite.engine import Engine

    from attok_monai.handlers import PrototypeEMAHandler

    torch.manual_seed(0)
    images = torch.rand(6, 1, 16, 16)
    labels = torch.tensor([0, 2, 0, 2, 2, 0])
    loader = [{"image": images[:3], "label": labels[:3]}, {"image": images[3:], "label": labels[3:]},
              {"image": torch.rand(2, 1, 16, 16), "label": torch.tensor([1, 1])}]  # beyond prototype_init_batches
    net = tiny_attok(prototype_init="class_means", prototype_init_batches=2)
    net.train()
    with torch.no_grad():
        # batch-norm in training mode normalises per batch: encode the loader's batches as they come
        raw = torch.cat([net.backbone.encode_images(images[:3]), net.backbone.encode_images(images[3:])])
    expected = torch.stack([raw[labels == k].mean((0, 1)) for k in (0, 2)])
    buffers = {n: b.clone() for n, b in net.backbone.named_buffers()}
    handler = PrototypeEMAHandler(net.book, network=net, init_loader=loader)
    handler.attach(engine := Engine(lambda e, b: {}))  # no visual tokens: no EMA step
    engine.run([0], max_epochs=1)  # STARTED -> class means of the first 2 batches
    assert net.book.prototype_initialized.tolist() == [True, False, True]
    assert torch.allclose(net.book.prototypes[[0, 2]], expected, atol=1e-5)
    assert all(torch.equal(b, buffers[n]) for n, b in net.backbone.named_buffers())  # BN statistics restored
    assert json.loads(json.dumps(net.hparams))["prototype_init"] == "class_means"
    # the default starts nothing: the first training batch sets each prototype, as before
    plain = tiny_attok()
    PrototypeEMAHandler(plain.book, network=plain, init_loader=loader).init_prototypes()
    assert not plain.book.prototype_initialized.any()
    with pytest.raises(ValueError, match="prototype_init"):
        tiny_attok(prototype_init="zeros")


def test_diagnose_mean_offdiag_cos():
    from benchmarks.diagnose_attok import mean_offdiag_cos

    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # pairs: 0, 1, 0 (each counted twice)
    assert abs(mean_offdiag_cos(x) - 1 / 3) < 1e-6


def test_diagnose_acc_attention_shares_and_val_decisions():
    from attok_monai.data.instructions import InstructionTemplates
    from benchmarks.diagnose_attok import acc_attention_shares, acc_attention_weights, val_decisions

    net = tiny_attok().eval()
    net.book.prototypes.normal_()
    net.book.prototype_initialized.fill_(True)
    x = torch.rand(3, 1, 16, 16)
    shares = acc_attention_shares(acc_attention_weights(net, net.backbone.encode_images(x))[0])
    assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-5 and min(shares) >= 0

    class Parser:  # what val_decisions reads of a bundle's parsed config
        def get_parsed_content(self, key):
            if key == "templates":
                return InstructionTemplates("radiology", net.vocabulary.names, ["what is this {modality} image?"],
                                            ["which of {options}?"])
            return [{"image": x, "label": torch.tensor([0, 1, 2])}]

    probs = net.class_probabilities(x, ["what is this radiology image?"] * 3).argmax(-1)
    expected = 100 * float((probs == torch.tensor([0, 1, 2])).float().mean())
    res = val_decisions(net, Parser())
    assert res["images"] == 3 and abs(res["prob_accuracy"] - expected) < 1e-4 and "prob_accuracy_acc_off" in res
    net.acc.gamma = 0.0  # ACC adds nothing: the two decisions agree
    res = val_decisions(net, Parser())
    assert res["decisions_changed"] == 0 and res["prob_accuracy"] == res["prob_accuracy_acc_off"]
    net.acc = None  # no ACC (tokens alone, the baselines): the accuracy alone
    probs = net.class_probabilities(x, ["what is this radiology image?"] * 3).argmax(-1)
    res = val_decisions(net, Parser())
    assert set(res) == {"images", "prob_accuracy", "true_class_nll"}
    assert abs(res["prob_accuracy"] - 100 * float((probs == torch.tensor([0, 1, 2])).float().mean())) < 1e-4
    p = net.class_probabilities(x, ["what is this radiology image?"] * 3)
    assert abs(res["true_class_nll"] + float(p[torch.arange(3), torch.tensor([0, 1, 2])].log().mean())) < 1e-4


def test_diagnose_vision_share_before_and_after_clipping():
    from benchmarks.diagnose_attok import vision_share

    grad = torch.tensor([3.0, 4.0, 12.0])  # |all| = 13, the encoder's two entries: |(3, 4)| = 5
    in_vision = torch.tensor([True, True, False])
    res = vision_share(grad, in_vision, clip=1.0)
    assert abs(res["ntp_grad_all"] - 13) < 1e-6 and abs(res["ntp_grad_vision"] - 5) < 1e-6
    assert abs(res["ntp_grad_vision_clipped"] - 5 / 13) < 1e-6  # clip_grad_norm_ scales everything by 1/13
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = grad.clone()
    torch.nn.utils.clip_grad_norm_([param], 1.0)  # what the training step does
    assert abs(float(param.grad[:2].norm()) - res["ntp_grad_vision_clipped"]) < 1e-6
    res = vision_share(grad, in_vision, clip=None)  # no clipping: the encoder keeps its norm
    assert abs(res["ntp_grad_vision_clipped"] - 5) < 1e-6
    assert vision_share(grad, in_vision, clip=100.0)["ntp_grad_vision_clipped"] == res["ntp_grad_vision"]
    assert vision_share(grad, torch.zeros(3, dtype=torch.bool), clip=1.0)["ntp_grad_vision"] == 0.0  # frozen encoder


def test_diagnose_gradient_cosine():
    from benchmarks.diagnose_attok import gradient_cosine

    a = torch.tensor([1.0, 0.0, 2.0, 0.0])
    assert abs(gradient_cosine(a, torch.tensor([3.0, 5.0, 6.0, 0.0])) - 1.0) < 1e-9  # entry 1: b only, left out
    assert abs(gradient_cosine(a, torch.tensor([-1.0, 1.0, -2.0, 1.0])) + 1.0) < 1e-9
    assert abs(gradient_cosine(a, torch.tensor([2.0, 0.0, -1.0, 0.0]))) < 1e-9
    assert gradient_cosine(a, torch.tensor([0.0, 1.0, 0.0, 1.0])) == 0.0  # nothing shared


def test_diagnose_gradient_coherence():
    from benchmarks.diagnose_attok import gradient_coherence

    same = torch.tensor([[1.0, 2.0], [2.0, 4.0]])  # one direction
    assert abs(gradient_coherence(same) - 1.0) < 1e-6
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert gradient_coherence(opposite) == 0.0
    orthogonal = torch.eye(4)  # |(1, 1, 1, 1)| / 4 = 1 / sqrt(4)
    assert abs(gradient_coherence(orthogonal) - 0.5) < 1e-6
    assert gradient_coherence(torch.zeros(3, 2)) == 0.0


def test_diagnose_load_checkpoint_restores_the_epochs_network(tmp_path):
    """--checkpoint: the network part of a CheckpointSaver file (beside optimizer and trainer state) replaces a model
    built from the same config; a checkpoint of another model is refused, not half-loaded."""
    from benchmarks.diagnose_attok import load_checkpoint

    trained = tiny_attok()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)
    path = tmp_path / "checkpoint_epoch=3.pt"
    torch.save({"network": trained.state_dict(), "optimizer": {"state": {}}, "trainer": {"epoch": 3}}, path)
    fresh = tiny_attok()
    assert not torch.equal(next(fresh.parameters()), next(trained.parameters()))
    files = load_checkpoint(fresh, str(path))  # the file as loaded, once: its optimizer entry for adam_by_part
    assert len(files) == 1 and files[0]["trainer"] == {"epoch": 3}
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    other = tiny_attok(use_attribute_tokens=False, use_acc=False, use_acm=False)
    with pytest.raises(RuntimeError):
        load_checkpoint(other, str(path))


def test_diagnose_average_states_and_averaged_checkpoints(tmp_path):
    """Several --checkpoint files load their uniform weight average; integer / bool buffers come from the last."""
    from benchmarks.diagnose_attok import average_states, load_checkpoint

    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4), "set": torch.tensor([True, False])}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7), "set": torch.tensor([True, True])}
    avg = average_states([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 7 and bool(avg["set"].all())
    with pytest.raises(ValueError, match="no state"):
        average_states([])
    nets = [tiny_attok() for _ in range(2)]
    paths = []
    for i, net in enumerate(nets):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(i))  # 0 and 1: the average is 0.5 everywhere
        paths.append(str(tmp_path / f"checkpoint_epoch={i + 1}.pt"))
        torch.save({"network": net.state_dict()}, paths[-1])
    fresh = tiny_attok()
    load_checkpoint(fresh, paths)
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in fresh.parameters())


def test_diagnose_adam_state_by_part():
    """Adam's sqrt(v) and |m| / sqrt(v) by part, read from an optimizer state dict in the optimizer's order."""
    from benchmarks.diagnose_attok import adam_state_by_part, model_part

    assert model_part("backbone.vision.stem.weight") == "backbone.vision"
    assert model_part("backbone.llm.model.embed_tokens.weight") == "backbone.embeddings_and_head"
    assert model_part("backbone.llm.lm_head.weight") == "backbone.embeddings_and_head"
    assert model_part("backbone.llm.model.layers.0.mlp.up_proj.weight") == "backbone.llm"
    assert model_part("book.attribute_embeddings") == "book" and model_part("acc.q.weight") == "acc"
    vision, llm, unused = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = torch.optim.AdamW([vision, llm, unused], lr=0.1)
    vision.grad, llm.grad = torch.tensor([3.0, -4.0]), torch.tensor([1.0, 1.0])  # `unused` gets no gradient
    opt.step()
    res = adam_state_by_part([("backbone.vision.w", vision), ("backbone.llm.model.w", llm), ("acc.w", unused)],
                             opt.state_dict()["state"])
    assert set(res) == {"backbone.vision", "backbone.llm"}  # no state, no entry
    # after one step: v = (1 - 0.999) g^2, m = (1 - 0.9) g
    assert abs(res["backbone.vision"]["sqrt_v"] - 0.001 ** 0.5 * 3.5) < 1e-6
    assert abs(res["backbone.llm"]["update_over_lr"] - 0.1 / 0.001 ** 0.5) < 1e-4


def test_epoch_table_reads_curves_and_pairs_them(tmp_path):
    """benchmarks/epoch_table.py: per-epoch scores and weight averages from diagnose_attok outputs; a run still being
    scored (fewer epochs) is left out; paired differences per seed."""
    import json

    from benchmarks.epoch_table import read_scores, tables

    def put(name, acc):
        (tmp_path / name).write_text(json.dumps({"val": {"images": 120, "prob_accuracy": acc}}))

    for seed, base in ((0, 50.0), (1, 60.0)):
        for epoch, step in ((1, 0.0), (2, 2.0), (3, 4.0)):
            put(f"val_baseline_s{seed}_ep{epoch}.json", base + step)
            put(f"val_tokens_s{seed}_ep{epoch}.json", base + step + 3.0)
        put(f"avg_tokens_s{seed}_2-3.json", base + 10.0)
        put(f"avg_baseline_s{seed}_2-3.json", base)
    put("val_all_s0_ep1.json", 10.0)  # still being scored
    put("notes.json", 0.0)  # not a score file: ignored
    curves, averages = read_scores(tmp_path)
    assert curves[("tokens", 1)] == {1: 63.0, 2: 65.0, 3: 67.0} and averages[("tokens", 0)] == 60.0
    text = tables(curves, averages, ["baseline", "tokens", "all"], 2, [("tokens", "baseline"), ("all", "baseline")])
    assert "| tokens | 1 | 63.0 65.0 67.0 | 66.0 | 1.0 |" in text  # mean and spread of epochs 2-3
    assert "| baseline | 0,1 | 59.0 ± 7.1 | 58.0 ± 7.1 | 55.0 ± 7.1 |" in text
    assert "| tokens − baseline | 0,1 | +3.0 (+3.0, +3.0) | +3.0 (+3.0, +3.0) | +10.0 (+10.0, +10.0) |" in text
    assert "| all " not in text and "all − baseline" not in text


def test_diagnose_acc_logit_spread_recovers_the_logits():
    from benchmarks.diagnose_attok import acc_logit_spread

    # two images, one head, one visual token, four book tokens; the last one masked
    logits = torch.tensor([[[[0.0, 1.0, 2.0, 5.0]]], [[[2.0, 1.0, 0.0, 5.0]]]])
    mask = torch.tensor([False, False, False, True])
    attn = torch.softmax(logits.masked_fill(mask, float("-inf")), -1)
    res = acc_logit_spread(attn, mask)
    kept = logits[..., :3]
    assert abs(res["over_book"] - float(kept.std(-1, unbiased=False).mean())) < 1e-5  # sqrt(2/3) for both images
    centred = kept - kept.mean(-1, keepdim=True)
    assert abs(res["over_images"] - float(centred.std(0, unbiased=False).mean())) < 1e-5
    uniform = acc_logit_spread(torch.full((3, 2, 5, 6), 1 / 6))
    assert uniform["over_book"] < 1e-6 and uniform["over_images"] < 1e-6
    assert acc_logit_spread(attn[:1])["over_images"] == 0.0  # one image: nothing to compare


# ------------------------------------------------------------------ attribute_markers
def test_format_answer_without_markers_and_parse_back():
    vocab = AttributeVocabulary.from_label_map("rad", {0: "ct", 1: "mri", 2: "lung"})
    assert vocab.format_answer([1]) == "<|attribute_begin|><|rad_mri|><|attribute_end|> mri"
    bare = vocab.format_answer([1, 2], markers=False)
    assert bare == "<|rad_mri|><|rad_lung|> mri, lung"
    parsed = vocab.parse_answer(bare)
    assert parsed.indices == [1, 2] and parsed.text == "mri, lung" and not parsed.has_block


@pytest.mark.parametrize("position, shift", [("decision", 0), ("attribute", 1)])
def test_fa_position_without_markers_on_hand_built_batch(position, shift):
    """Without markers the decision position is the prompt's last token (it predicts the first attribute token)."""
    net = tiny_attok(fa_position=position, attribute_markers=False)
    a = net.attr_ids.tolist()
    hidden = torch.zeros(2, 6, 32)
    hidden[..., 0] = torch.arange(2)[:, None].float()
    hidden[..., 1] = torch.arange(6)[None].float()
    # row 0: prompt of 2, answer a_2 text; row 1: prompt of 3, answer a_0 a_1 text
    labels = torch.tensor([[-100, -100, a[2], 5, 6, -100], [-100, -100, -100, a[0], a[1], 5]])
    f_a, targets = net._attribute_positions(hidden, labels, torch.tensor([2, 3]), [[2], [0, 1]])
    assert f_a[:, :2].tolist() == [[0, 1 + shift], [1, 2 + shift], [1, 3 + shift]]
    assert targets.tolist() == [2, 0, 1]


def test_attribute_markers_false_in_forward_and_class_probabilities(tmp_path):
    """The training target has no marker tokens; the class decision is read where the prompt ends, from the same
    forward the training step runs (teacher forcing), and the setting is saved with the model."""
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    q = ["what is this radiology image?"] * 2
    net = tiny_attok(attribute_markers=False).eval()
    assert net.format_answer([1], None) == "<|rad_mri|> mri"
    batch = net.backbone.build_inputs(q, [net.format_answer([k], None) for k in (0, 2)])
    assert not bool(torch.isin(batch["input_ids"], torch.tensor([net.begin_id, net.end_id])).any())
    _, visual = net.visual_tokens(x)
    with torch.no_grad():
        logits, _, _ = net.backbone.forward_embeds(net.embed(batch["input_ids"], visual), batch["attention_mask"])
    last = batch["prompt_lengths"] - 1  # predicts the attribute token at prompt_lengths
    assert batch["input_ids"][torch.arange(2), batch["prompt_lengths"]].tolist() == net.attr_ids[[0, 2]].tolist()
    expected = logits[torch.arange(2), last][:, net.attr_ids].softmax(-1)
    torch.testing.assert_close(net.class_probabilities(x, q), expected, atol=1e-5, rtol=1e-4)
    # with markers the same weights decide one position later, after <|attribute_begin|>: another distribution
    with_markers = tiny_attok().eval()
    with_markers.load_state_dict(net.state_dict())
    assert not torch.allclose(with_markers.class_probabilities(x, q), expected, atol=1e-4)
    out = net(x, q, [None, None], [[0], [2]])
    assert out.attr_targets.tolist() == [0, 2]
    net.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "attok.json").read_text())["attribute_markers"] is False
    assert AttTokGPTv.from_pretrained(tmp_path).attribute_markers is False
    with pytest.raises(ValueError, match="attribute_markers"):
        tiny_attok(attribute_markers="no")


def test_plain_markers_wraps_the_plain_answer_and_scores_after_the_markers(tmp_path):
    """plain_markers (a baseline's control for the markers alone): the target is the plain answer after an empty
    marker block, generated answers parse back to their class, the class probabilities score each class's text after
    the markers (by hand below), the image-only classifier agrees, and the setting is saved with the model."""
    from attok_monai.metrics import parse_prediction
    from attok_monai.networks.nets import AttributeClassifier

    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    q = ["what is this radiology image?"] * 2
    net = tiny_attok(use_attribute_tokens=False, use_acc=False, use_acm=False, plain_markers=True).eval()
    assert net.format_answer([1], None) == "<|attribute_begin|><|attribute_end|> mri"
    assert net.format_answer([0], "a ct scan") == "<|attribute_begin|><|attribute_end|> a ct scan"
    assert parse_prediction(net.vocabulary, net.format_answer([2], None)) == 2
    _, visual = net.visual_tokens(x)
    scores = []
    for k in range(len(net.vocabulary)):
        batch = net.backbone.build_inputs(q, [f"<|attribute_begin|><|attribute_end|> {net.vocabulary.names[k]}"] * 2)
        assert bool((batch["input_ids"] == net.begin_id).any(1).all())  # the markers are in every scored answer
        with torch.no_grad():
            logits, _, _ = net.backbone.forward_embeds(net.embed(batch["input_ids"], visual), batch["attention_mask"])
        logp = F.log_softmax(logits[:, :-1].float(), -1)
        lab = batch["labels"][:, 1:]
        scores.append((logp.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1) * (lab != -100)).sum(1))
    expected = torch.stack(scores, 1).softmax(-1)
    torch.testing.assert_close(net.class_probabilities(x, q), expected, atol=1e-5, rtol=1e-4)
    clf = AttributeClassifier(net, q[0]).eval()
    with torch.no_grad():
        torch.testing.assert_close(clf(x), expected, atol=1e-5, rtol=1e-4)
    plain = tiny_attok(use_attribute_tokens=False, use_acc=False, use_acm=False).eval()  # the default: no markers
    assert plain.format_answer([1], None) == "mri"
    net.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "attok.json").read_text())["plain_markers"] is True
    assert AttTokGPTv.from_pretrained(tmp_path).format_answer([1], None) == "<|attribute_begin|><|attribute_end|> mri"
    with pytest.raises(ValueError, match="plain_markers"):
        tiny_attok(plain_markers=True)  # with attribute tokens: attribute_markers is their key
    with pytest.raises(ValueError, match="plain_markers"):
        tiny_attok(use_attribute_tokens=False, use_acc=False, use_acm=False, plain_markers="yes")


def test_attribute_classifier_without_markers_matches_class_probabilities():
    from attok_monai.networks.nets import AttributeClassifier

    net = tiny_attok(attribute_markers=False).eval()
    question = "what is this radiology image?"
    clf = AttributeClassifier(net, question).eval()
    assert int(clf.suffix_ids[0, -1]) != net.begin_id
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net.class_probabilities(x, [question] * 3), atol=1e-5, rtol=1e-4)


def test_cv_table_reads_folds_from_the_records_and_pairs_them(tmp_path):
    """cv_table takes a run's fold from its recorded overrides (not its seed), skips runs of no or other folds, refuses
    two runs of one fold, and pairs rows by fold."""
    from benchmarks.cv_table import fold_of, paired, read_row, summary, tables

    def rec(acc, f1, fold, folds=5, extra=()):
        return {"open_accuracy": acc, "open_macro_f1": f1, "open_balanced_accuracy": 0.3, "retrieval_accuracy": 0.4,
                "num_samples": 216, "overrides": [f"cv_folds={folds}", f"cv_fold={fold}", *extra]}

    state = {"tokens/0": rec(0.60, 0.40, 1), "tokens/7": rec(0.50, 0.30, 0), "tokens/3": rec(0.5, 0.3, 2, folds=3),
             "tokens/9": {"open_accuracy": 0.9, "overrides": []},
             "all/0": rec(0.55, 0.41, 1, extra=("gamma=0.0",)), "all/1": rec(0.52, 0.25, 0)}
    (tmp_path / "s.json").write_text(json.dumps(state))
    assert fold_of(state["all/0"]) == (5, 1) and fold_of(state["tokens/9"]) is None
    tokens, all_ = read_row("s", "tokens", 5, tmp_path), read_row("s", "all", 5, tmp_path)
    assert sorted(tokens) == [0, 1] and tokens[1]["open_accuracy"] == 0.60  # seed 0 held out fold 1
    diffs = paired(all_, tokens, "open_accuracy")
    assert [round(d, 6) for d in diffs] == [2.0, -5.0]  # fold 0: 52 - 50; fold 1: 55 - 60
    assert summary(diffs) == "-1.5 (3.5) 1/2"
    text = tables({"tokens": tokens, "all": all_}, [("all", "tokens")])
    assert "| tokens | 55.0 ± 5.0 | 35.0 ± 5.0 |" in text and "| 0,1 | 432 |" in text
    assert "| all - tokens | +2.0, -5.0 | -1.5 (3.5) 1/2 |" in text
    state["tokens/8"] = rec(0.1, 0.1, 1)
    (tmp_path / "s.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="fold 1"):
        read_row("s", "tokens", 5, tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({"baseline/0": rec(0.5, 0.3, 0)}))  # an old baseline record
    base = read_row("b", "baseline", 5, tmp_path)
    assert "retrieval_accuracy" not in base[0] and base[0]["open_accuracy"] == 0.5  # no book, no retrieval shown
    assert "| base | 50.0 ± 0.0 | 30.0 ± 0.0 | 30.0 ± 0.0 | - |" in tables({"base": base}, [])
    (tmp_path / "o.json").write_text(json.dumps({"probe/0": rec(0.5, 0.3, 0)}))  # not a bench_bundles variant
    assert read_row("o", "probe", 5, tmp_path)[0]["retrieval_accuracy"] == 0.4


def test_cv_table_pairs_official_part_runs_by_seed(tmp_path):
    """--folds 0: the runs that did not cross-validate, keyed and paired by the seed of their record's key."""
    from benchmarks.cv_table import read_row, tables

    def rec(acc, overrides=()):
        return {"open_accuracy": acc, "open_macro_f1": acc / 2, "num_samples": 1000, "overrides": list(overrides)}

    (tmp_path / "d.json").write_text(json.dumps({
        "baseline/0": rec(0.50), "baseline/2": rec(0.60), "baseline/1": rec(0.9, ["cv_folds=5", "cv_fold=1"]),
        "all/0": rec(0.55, ["generalist_parts=all_but_layers"]), "all/2": rec(0.58)}))
    base, all_ = read_row("d", "baseline", 0, tmp_path), read_row("d", "all", 0, tmp_path)
    assert sorted(base) == [0, 2] and base[2]["open_accuracy"] == 0.60  # the fold run is not an official-part run
    text = tables({"base": base, "all": all_}, [("all", "base")], unit="seed")
    assert "| row | open acc | macro-F1 | bal. acc | retrieval | runs (seeds) | held out |" in text
    assert "| base | 55.0 ± 5.0 |" in text and "| 0,2 | 2000 |" in text
    assert "open acc per seed" in text and "| all - base | +5.0, -2.0 | +1.5 (3.5) 1/2 |" in text
    from benchmarks.cv_table import only  # --keys: the seeds (or folds) a table shows, of a set that holds more

    assert only(base, {2}) == {2: base[2]} and only(base, None) is base
    assert only({(0, 1): 1, (1, 1): 2, (0, 3): 3}, {1}) == {(0, 1): 1, (1, 1): 2}


def test_cv_table_reads_the_official_part_scores(tmp_path):
    from benchmarks.cv_table import official_table, read_official

    for label, fold, acc in (("a", 0, 50.0), ("a", 1, 60.0), ("b", 0, 45.0), ("b", 1, 62.5)):
        (tmp_path / f"off_{label}_f{fold}.json").write_text(json.dumps({"val": {"images": 120, "prob_accuracy": acc}}))
    rows = {"a": {0: {}, 1: {}, 2: {}}, "b": {0: {}, 1: {}}}  # fold 2 of a was not scored: left out
    off = read_official(tmp_path, rows)
    assert sorted(off["a"]) == [0, 1] and off["b"][1]["open_accuracy"] == 0.625
    text = official_table(off, [("a", "b")])
    assert "| a | 55.0 ± 5.0 | 0,1 | 120 |" in text and "| a - b | +5.0, -2.5 | +1.2 (3.8) 1/2 |" in text


def test_cv_table_vqa_measures(tmp_path):
    """--task vqa: vqa_rad's records (open, closed, overall accuracy) in the rows, pairs in open and closed accuracy;
    the official part read from evaluate's metrics.json."""
    from benchmarks.cv_table import official_table, read_official, read_row, tables

    def rec(o, c, fold):
        return {"open_accuracy": o, "closed_accuracy": c, "overall_accuracy": (o + c) / 2, "open_token_f1": o,
                "num_samples": 325, "overrides": ["cv_folds=5", f"cv_fold={fold}"]}

    (tmp_path / "v.json").write_text(json.dumps({"baseline/0": rec(0.20, 0.60, 0), "baseline/1": rec(0.30, 0.70, 1),
                                                  "all/0": rec(0.25, 0.55, 0), "all/1": rec(0.30, 0.75, 1)}))
    rows = {v: read_row("v", v, 5, tmp_path) for v in ("baseline", "all")}
    text = tables(rows, [("all", "baseline")], "vqa")
    assert "| row | open acc | closed acc | overall | open token F1 | runs (folds) | held out |" in text
    assert "| baseline | 25.0 ± 5.0 | 65.0 ± 5.0 | 45.0 ± 5.0 | 25.0 ± 5.0 | 0,1 | 650 |" in text
    assert "| all - baseline | +5.0, +0.0 | +2.5 (2.5) 1/2 | -5.0, +5.0 | +0.0 (5.0) 1/2 |" in text
    for label, fold, o, c in (("a", 0, 0.2, 0.6), ("b", 0, 0.1, 0.7)):
        (tmp_path / f"off_{label}_f{fold}.json").write_text(json.dumps(
            {"metrics": {"open_accuracy": o, "closed_accuracy": c, "num_samples": 171}}))
    off = read_official(tmp_path, {"a": {0: {}}, "b": {0: {}}})
    text = official_table(off, [("a", "b")], "vqa")
    assert "| a | 20.0 ± 0.0 | 60.0 ± 0.0 | 0 | 171 |" in text and "| a - b | +10.0 | +10.0 (nan) 1/1 | -10.0 |" in text


def test_cv_table_pools_repetitions_of_the_folds(tmp_path):
    """A row over two result sets (the same folds, other seeds) pairs repetition i with repetition i, per fold."""
    from benchmarks.cv_table import read_spec, tables

    def rec(acc, fold):
        return {"open_accuracy": acc, "open_macro_f1": acc / 2, "num_samples": 216,
                "overrides": ["cv_folds=5", f"cv_fold={fold}"]}

    (tmp_path / "r1.json").write_text(json.dumps({"baseline/0": rec(0.50, 0), "tokens/0": rec(0.40, 0)}))
    (tmp_path / "r2.json").write_text(json.dumps({"baseline/5": rec(0.50, 0), "tokens/5": rec(0.60, 0)}))
    base = read_spec("r1:baseline,r2:baseline", 5, tmp_path)
    tok = read_spec("r1:tokens,r2:tokens", 5, tmp_path)
    assert sorted(base) == [(0, 0), (1, 0)] and read_spec("r1:tokens", 5, tmp_path)[0]["open_accuracy"] == 0.40
    text = tables({"base": base, "tok": tok}, [("tok", "base")])
    assert "| tok - base | -10.0, +10.0 | +0.0 (10.0) 1/2 |" in text and "| 2 runs | 432 |" in text
    with pytest.raises(ValueError, match="state:variant"):
        read_spec("r1", 5, tmp_path)


def test_vqa_bootstrap_pairs_questions_and_resamples_images(tmp_path):
    """benchmarks/vqa_bootstrap.py: per-question differences of the rows' mean correctness, averaged; the bootstrap
    draws images (their questions together); only questions of the asked answer type are read."""
    from benchmarks.vqa_bootstrap import image_bootstrap, read_correct

    path = tmp_path / "p.csv"
    path.write_text("id,answer_type,correct\nq1,open,1\nq2,open,0\nq3,closed,1\n")
    assert read_correct([str(path)]) == [{"q1": 1, "q2": 0}]
    assert read_correct([str(path)], "closed") == [{"q3": 1}]
    a = [{"q1": 1, "q2": 1, "q3": 0}, {"q1": 1, "q2": 0, "q3": 0}]
    b = [{"q1": 0, "q2": 0, "q3": 0, "q4": 1}, {"q1": 0, "q2": 0, "q3": 0}]
    res = image_bootstrap(a, b, {"q1": "x", "q2": "x", "q3": "y"}, draws=500)
    assert res["questions"] == 3 and res["images"] == 2  # q4 is not in every run
    assert abs(res["mean"] - 100 * (1 + 0.5 + 0) / 3) < 1e-9
    assert res["low"] <= res["mean"] <= res["high"] and res["se"] > 0
    same = image_bootstrap([{"q1": 1, "q2": 1}], [{"q1": 0, "q2": 0}], {}, draws=50)
    assert same["mean"] == 100.0 and same["se"] == 0.0 and same["images"] == 2
    with pytest.raises(ValueError, match="share no question"):
        image_bootstrap([{"q1": 1}], [{"q2": 0}], {})
