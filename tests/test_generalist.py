"""The compact medical generalist: its bundle trains a few iterations on the union of the real shared training parts
and saves a marked model folder; fundus_dr (a classification bundle) and vqa_rad start from that folder with
``from_generalist.json``, adding their attribute tokens to the trained embedding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from attok_monai.provenance import cpu_kernel_pins, file_md5
from tests.conftest import REPO, require

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUNDLES = REPO / "bundles"
GENERALIST = BUNDLES / "compact_generalist"
SOURCES = {
    "medmnist/retinamnist.npz", "medmnist/pneumoniamnist.npz", "ham10000/HAM10000_metadata.csv",
    "oct_cnv/labels.csv", "lc25000_lung/labels.csv", "vqa_rad/VQA_RAD_train.json",
}


def _workflow(bundle: Path, configs: list[str], tmp: Path, **overrides) -> ConfigWorkflow:
    files = [str(bundle / "configs" / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files[0] if len(files) == 1 else files,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(bundle),
        mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db",
        **overrides,
    )
    wf.initialize()
    return wf


def _evaluate_fundus(model_dir: Path, data_root: Path, tmp: Path) -> dict:
    """fundus_dr's evaluate config with the from_generalist extra (32 px input read from the 28 px MedMNIST file) on
    16 validation images of ``model_dir``; its metrics."""
    ev = ConfigWorkflow(
        config_file=[str(BUNDLES / "fundus_dr" / "configs" / c) for c in ("evaluate.json", "from_generalist.json")],
        meta_file=str(BUNDLES / "fundus_dr" / "configs" / "metadata.json"), workflow_type="infer",
        bundle_root=str(BUNDLES / "fundus_dr"), mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db",
        model_dir=str(model_dir), data_root=str(data_root / "medmnist"), download=False, limit=16,
        output_dir=str(tmp / "eval"), tsne=False,
    )
    ev.initialize()
    ev.run()
    ev.finalize()
    return json.loads((tmp / "eval" / "metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def generalist(tmp_path_factory, data_root):
    for rel in SOURCES:
        require(data_root / rel)
    tmp = tmp_path_factory.mktemp("generalist")
    wf = _workflow(
        GENERALIST, ["train.json"], tmp, data_root=str(data_root), limit_train=12, epochs=2, epoch_length=3,
        batch_size=8, output_dir=str(tmp / "run"), amp=False,
    )
    wf.run()
    wf.finalize()
    return tmp, tmp / "run" / "model", wf


def test_generalist_trains_on_training_parts_logs_and_saves_a_marked_folder(generalist):
    from mlflow.tracking import MlflowClient

    tmp, model_dir, wf = generalist
    card = json.loads((model_dir / "generalist.json").read_text())
    assert card["kind"] == "attok_compact_generalist" and card["image_size"] == 32 and card["channels"] == 3
    assert card["sources"] == {n: 12 for n in ("fundus_dr", "xray_pneumonia", "derma_isic", "oct_retina",
                                               "pathology_lung", "vqa_rad")}
    assert card["iterations"] == 6 and card["last_epoch_mean_loss"] > 0
    # the thread count the weights were made at (the same seed gives the same weights only at the same count)
    assert card["torch_threads"] == torch.get_num_threads()
    assert card["class_balanced"] is True  # the recipe's default since 2026-12-04 (generalist E)
    assert "projector_norm" not in json.loads((model_dir / "backbone.json").read_text())  # off by default
    assert card["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and card["cpu_model"]
    assert card["cpu_kernel_pins"] == cpu_kernel_pins()  # "none" unless the code-path variables are set
    assert wf.parser.get_parsed_content("hyperparameters")["torch_threads"] == str(torch.get_num_threads())
    for name in ("model.pt", "backbone.json", "vocabulary.json", "attok.json", "tokenizer"):
        assert (model_dir / name).exists(), name
    # plain text: no attribute tokens, no ACC, no ACM
    assert json.loads((model_dir / "attok.json").read_text())["use_attribute_tokens"] is False
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("attok_compact_generalist").experiment_id])[0]
    p = run.data.params
    assert p["num_train"] == "72" and p["num_train_vqa_rad"] == "12" and p["split_derma_isic"] == "train"
    assert p["projector_norm"] == "False"
    assert len(p["data_md5_fundus_dr"]) == 32 and "device_name" in p
    assert len(client.get_metric_history(run.info.run_id, "ntp")) == 6
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/generalist.json" in arts and "model/model.pt" in arts
    # every sample of the union is a plain-text sample at 32 px RGB
    data = wf.parser.get_parsed_content("data")
    ds = wf.parser.get_parsed_content("train#dataset")
    assert len(ds) == 72
    for i in range(0, 72, 12):
        s = ds[i]
        assert s["image"].shape == (3, 32, 32) and 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert isinstance(s["answer"], str) and s["answer"] and s["question"]
    # the training items are the bundles' training parts only
    for src in data.sources:
        assert all(d.get("split", "train") == "train" for d in src.items), src.name


def test_source_weights_set_each_sources_share_of_the_draws(generalist):
    """Default (source_weights null): a source's share is its size's (with class_balanced, the default, through
    the class-balanced sampler; without it, the plain shuffle). 'equal' or a mapping: a seeded sampler drawing each
    source its share; a bad mapping names the source."""
    from collections import Counter

    _, _, wf = generalist
    assert wf.parser["source_weights"] is None and wf.parser["class_balanced"] is True
    assert wf.parser.get_parsed_content("train#sampler") is not None
    data = wf.parser.get_parsed_content("data")
    names = data.item_sources()
    assert len(names) == 72 and names[:12] == ["fundus_dr"] * 12
    weights = {n: 1.0 for n in data.counts()} | {"fundus_dr": 5.0}  # fundus 5/10 of the draws, the others 1/10
    sampler = data.sampler(weights, seed=0)  # 72 draws per pass; its generator runs on between passes
    draws = [names[i] for _ in range(100) for i in sampler]
    freq = Counter(draws)
    assert abs(freq["fundus_dr"] / len(draws) - 0.5) < 0.03 and abs(freq["vqa_rad"] / len(draws) - 0.1) < 0.03
    sampler = data.sampler("equal", seed=1)
    equal = Counter(names[i] for _ in range(100) for i in sampler)
    assert all(abs(c / 7200 - 1 / 6) < 0.03 for c in equal.values()), equal
    with pytest.raises(ValueError, match=r"source_weights: .*no share for \['vqa_rad'\]"):
        data.sampler({n: 1.0 for n in data.counts() if n != "vqa_rad"})
    with pytest.raises(ValueError, match="'equal' or a mapping"):
        data.sampler("balanced")
    # the bundle key: the dataloader draws through the sampler, recorded with the run's parameters
    parser = wf.parser
    parser["source_weights"] = "equal"
    sampler = parser.get_parsed_content("train#sampler", lazy=False)
    assert sampler is not None and len(list(sampler)) == 72
    assert "source_weights=json.dumps(@source_weights" in parser["hyperparameters"]
    assert parser["train"]["dataloader"]["sampler"].replace("::", "#") == "@train#sampler"


def test_class_balanced_splits_each_sources_share_over_its_classes(generalist):
    """class_balanced: each source keeps its share (its size's by default) and every class of it (integer label)
    gets an equal part; VQA-RAD (no classes) is one group; the bundle key turns the sampler on and is recorded."""
    from collections import Counter

    _, _, wf = generalist
    data = wf.parser.get_parsed_content("data")
    classes = data.item_classes()
    assert len(classes) == 72 and all(c == "vqa_rad" for c, s in zip(classes, data.item_sources()) if s == "vqa_rad")
    sampler = data.sampler(None, seed=0, class_balanced=True)
    draws = [classes[i] for _ in range(200) for i in sampler]
    freq, n = Counter(draws), len(draws)
    for src, count in data.counts().items():
        groups = sorted({c for c in classes if c.split("/")[0] == src})
        share = sum(freq[g] for g in groups) / n
        assert abs(share - count / 72) < 0.02, (src, share)
        for g in groups:  # each class of the source an equal part of the source's share
            assert abs(freq[g] / n - count / 72 / len(groups)) < 0.02, (g, freq[g] / n)
    fundus = Counter(c for c in classes if c.startswith("fundus_dr/"))
    assert len(fundus) > 1 and len(set(fundus.values())) > 1  # the items themselves are not balanced
    sampler = data.sampler("equal", 1, True)
    equal = Counter(classes[i].split("/")[0] for _ in range(100) for i in sampler)
    assert all(abs(c / 7200 - 1 / 6) < 0.03 for c in equal.values()), equal
    with pytest.raises(ValueError, match=r"no share for \['vqa_rad'\]"):
        data.sampler({n: 1.0 for n in data.counts() if n != "vqa_rad"}, class_balanced=True)
    with pytest.raises(ValueError, match="class_balanced must be true or false"):
        data.sampler(None, class_balanced="yes")
    parser = wf.parser
    parser["source_weights"], parser["class_balanced"] = None, True
    sampler = parser.get_parsed_content("train#sampler", lazy=False)
    assert sampler is not None and len(list(sampler)) == 72
    assert "class_balanced=@class_balanced" in parser["hyperparameters"]
    assert "class_balanced=@class_balanced" in json.dumps(parser.get("train"))
    parser["class_balanced"] = False  # generalist D's recipe: uniform draws from the union, no sampler
    assert parser.get_parsed_content("train#sampler", lazy=False) is None
    parser["class_balanced"] = True


def test_leave_out_sources_reads_a_sources_words_and_none_of_its_items(generalist, data_root, tmp_path):
    """leave_out_sources: the named source gives no item (its images are never drawn) and its words still enter the
    tokenizer's texts; an unknown name, or leaving every source out, is one short error naming the key; the key is
    recorded with the run's parameters and the model card."""
    from attok_monai.data.generalist import read_bundle_texts, read_generalist_sources

    _, _, wf = generalist
    sources = wf.parser.get_parsed_content("sources")
    full = wf.parser.get_parsed_content("data")
    data = read_generalist_sources(sources, BUNDLES, tmp_path / "sources", text_sources=["pathology_crc"],
                                   leave_out=["pathology_lung"])
    assert "pathology_lung" not in data.counts() and set(data.counts()) == set(full.counts()) - {"pathology_lung"}
    assert len(data.dataset(image_size=32)) == len(full.dataset(image_size=32)) - 12
    assert all(not a.token.startswith("<|pathology_lung") for a in data.vocabulary)
    lung_words = read_bundle_texts(BUNDLES / "pathology_lung")
    assert lung_words and set(lung_words) <= set(data.texts)
    with pytest.raises(ValueError, match=r"leave_out_sources names \['lung'\], expected names of sources"):
        read_generalist_sources(sources, BUNDLES, tmp_path / "s2", leave_out=["lung"])
    with pytest.raises(ValueError, match="leaves no source"):
        read_generalist_sources({"pathology_lung": sources["pathology_lung"]}, BUNDLES, tmp_path / "s3",
                                leave_out=["pathology_lung"])
    assert wf.parser["leave_out_sources"] == []  # the default: every source trains
    assert "leave_out=@leave_out_sources" in wf.parser["data"]
    assert "leave_out_sources=','.join(@leave_out_sources)" in wf.parser["hyperparameters"]
    assert "leave_out_sources=list(@leave_out_sources)" in json.dumps(wf.parser.get("train"))


def test_source_other_than_training_part_is_refused(data_root, tmp_path):
    from attok_monai.data.generalist import read_bundle_source

    require(data_root / "medmnist" / "retinamnist.npz")
    with pytest.raises(ValueError, match="train_split 'val'"):
        read_bundle_source(BUNDLES / "fundus_dr", {"data_root": str(data_root / "medmnist"), "download": False,
                                                   "train_split": "val"}, tmp_path)


def test_generalist_tokenizer_knows_every_bundle_text(generalist):
    from attok_monai.data.generalist import read_bundle_texts
    from attok_monai.engines.generalist import _unknown_words
    from attok_monai.networks.nets import CompactGPTvBackbone

    _, model_dir, _ = generalist
    tok = CompactGPTvBackbone.from_config_dir(model_dir).tokenizer
    for name in ("fundus_dr", "xray_pneumonia", "derma_isic", "oct_retina", "pathology_lung", "pathology_crc"):
        assert _unknown_words(tok, read_bundle_texts(BUNDLES / name)) == [], name


def test_fundus_starts_from_generalist(generalist, data_root, tmp_path):
    from mlflow.tracking import MlflowClient

    from attok_monai.networks.nets import AttTokGPTv

    _, model_dir, _ = generalist
    state = torch.load(model_dir / "model.pt", weights_only=True)
    gen_tok = json.loads((model_dir / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    wf = _workflow(
        BUNDLES / "fundus_dr", ["train.json", "from_generalist.json"], tmp_path, generalist_dir=str(model_dir),
        data_root=str(data_root / "medmnist"), download=False, epochs=1, batch_size=16, val_batch_size=32,
        limit_train=32, limit_val=16, output_dir=str(tmp_path / "run"), ckpt_dir=str(tmp_path / "models"), amp=False,
        tsne=False,
    )
    net = wf.parser.get_parsed_content("network")
    tok = net.backbone.tokenizer
    emb = net.backbone.input_embeddings().weight.detach()
    gen_emb = state["backbone.llm.model.embed_tokens.weight"]
    # the generalist's trained rows are carried over: vision, LM and the word rows
    assert torch.equal(net.backbone.vision.net.conv1.weight.detach(), state["backbone.vision.net.conv1.weight"])
    word = gen_tok["retinopathy"]
    assert tok.convert_tokens_to_ids("retinopathy") == word and torch.equal(emb[word], gen_emb[word])
    # e_k is the mean of the trained rows of the keyword's words
    first = net.vocabulary.attributes[0].keyword  # "no diabetic retinopathy"
    ids = tok.encode(first, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert torch.allclose(net.book.keyword_embeddings[0].detach(), gen_emb[ids].mean(0), atol=1e-6)
    # a_k (the attribute row) from the keyword words no other attribute shares (attribute_init: distinct, the default)
    assert net.config.attribute_init == "distinct"
    kw_ids = [tok.encode(a.keyword, add_special_tokens=False) for a in net.vocabulary.attributes]
    rows = AttTokGPTv.attribute_row_token_ids(kw_ids)[0]  # "no" of "no diabetic retinopathy"
    assert set(rows) < set(ids)
    assert torch.allclose(emb[net.attr_ids[0]], gen_emb[rows].mean(0), atol=1e-6)
    wf.run()
    wf.finalize()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("attok_fundus_dr").experiment_id])[0]
    assert run.data.params["backbone"] == "compact_generalist" and run.data.params["image_size"] == "32"
    # the start is named by its weights, not only its folder: a generalist rebuilt in place is another setting
    md5 = file_md5(model_dir / "model.pt")
    assert run.data.params["generalist_md5"] == md5
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["generalist_md5"] == md5
    assert "val_open_accuracy" in run.data.metrics
    # the saved model reloads (tokenizer with the added attribute tokens) to the same probabilities
    saved = tmp_path / "run" / "model"
    reloaded = AttTokGPTv.from_pretrained(saved)
    images = torch.rand(2, 3, 32, 32)
    q = ["what is the diagnosis of this fundus image?"] * 2
    net.eval()
    assert torch.allclose(net.class_probabilities(images, q), reloaded.class_probabilities(images, q), atol=1e-5)
    # evaluate takes the same extra: 32 px input read from the 28 px MedMNIST file
    assert _evaluate_fundus(saved, data_root, tmp_path)["num_samples"] == 16


@pytest.mark.parametrize("bundle", ["fundus_dr", "vqa_rad"])
def test_vision_and_llm_lr_scale_train_their_parts_at_their_own_lr(generalist, data_root, tmp_path, bundle):
    """``vision_lr_scale`` and ``llm_lr_scale`` from the command line: the vision encoder's parameters in their own
    AdamW groups at ``vision_lr_scale * lr``, the LM's transformer layers and final norm at ``llm_lr_scale * lr``,
    every other parameter (the LM's embeddings and lm_head with the attribute rows among them, the projector,
    AttTok's modules) at ``lr``; both recorded in the run's settings; the defaults (1.0) give the two groups of every
    other start."""
    _, model_dir, _ = generalist
    root = data_root / ("medmnist" if bundle == "fundus_dr" else "vqa_rad")
    wf = _workflow(
        BUNDLES / bundle, ["train.json", "from_generalist.json"], tmp_path, generalist_dir=str(model_dir),
        data_root=str(root), download=False, epochs=1, limit_train=8, limit_val=8, output_dir=str(tmp_path / "run"),
        ckpt_dir=str(tmp_path / "models"), amp=False, vision_lr_scale=0.1, llm_lr_scale=3.0, batch_size=4,
    )
    net = wf.parser.get_parsed_content("network")
    opt = wf.parser.get_parsed_content("optimizer")
    lr = wf.parser.get_parsed_content("lr")
    vision = {id(p) for p in net.backbone.vision.parameters()}
    body = {id(p) for p in net.backbone.llm.model.layers.parameters()} | {
        id(p) for p in net.backbone.llm.model.norm.parameters()}
    assert id(net.backbone.input_embeddings().weight) not in body and id(net.backbone.output_embeddings().weight) \
        not in body
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= vision or ids <= body or not ids & (vision | body)
        assert group["lr"] == pytest.approx(0.1 * lr if ids <= vision else 3.0 * lr if ids <= body else lr)
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in net.parameters() if p.requires_grad])
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx(sorted({0.1 * lr, 3.0 * lr, lr}))
    settings = wf.parser.get_parsed_content("run_settings")
    assert settings["vision_lr_scale"] == 0.1 and settings["llm_lr_scale"] == 3.0
    default = _workflow(
        BUNDLES / bundle, ["train.json", "from_generalist.json"], tmp_path / "d", generalist_dir=str(model_dir),
        data_root=str(root), download=False, epochs=1, limit_train=8, limit_val=8, output_dir=str(tmp_path / "d"),
        ckpt_dir=str(tmp_path / "dm"), amp=False, batch_size=4,
    )
    groups = default.parser.get_parsed_content("optimizer").param_groups
    assert len(groups) == 2 and {g["lr"] for g in groups} == {lr}


def test_compact_lr_scales():
    from attok_monai.networks.nets import compact_lr_scales

    assert compact_lr_scales() is None and compact_lr_scales(1, 1.0) is None
    assert compact_lr_scales(0.1) == {"backbone.vision": 0.1}
    assert compact_lr_scales(llm_lr_scale=3) == {"backbone.llm.model.layers": 3.0, "backbone.llm.model.norm": 3.0}
    assert compact_lr_scales(1.0, 1.0, "lora") is None and compact_lr_scales(1.0, 2.0, "frozen_vision") is not None
    for args, says in [((0.1, 1.0, "lora"), "vision_lr_scale 0.1: finetune 'lora' freezes the vision encoder, so there is no lr"),
                       ((1.0, 3, "lora"), "llm_lr_scale 3.0: finetune 'lora' freezes the LM's layers, so"),
                       ((3, 1.0, "frozen_vision"), "vision_lr_scale 3.0: finetune 'frozen_vision' freezes the vision encoder"),
                       ((1.0, 1.0, "lora_all"), "finetune must be one of 'full', 'lora', 'frozen_vision', got 'lora_all'")]:
        with pytest.raises(ValueError, match="^" + says) as e:
            compact_lr_scales(*args)
        assert "\n" not in str(e.value)


def test_vqa_rad_starts_from_generalist(generalist, data_root, tmp_path):
    _, model_dir, _ = generalist
    require(data_root / "vqa_rad" / "VQA_RAD_train.json")
    wf = _workflow(
        BUNDLES / "vqa_rad", ["train.json", "from_generalist.json"], tmp_path, generalist_dir=str(model_dir),
        data_root=str(data_root / "vqa_rad"), epochs=1, batch_size=8, val_batch_size=16, limit_train=16,
        limit_val=8, output_dir=str(tmp_path / "run"), ckpt_dir=str(tmp_path / "models"), amp=False,
    )
    net = wf.parser.get_parsed_content("network")
    from attok_monai.networks.nets import CompactGPTvBackbone

    gen_tok = CompactGPTvBackbone.from_config_dir(model_dir).tokenizer
    # vqa_rad is a source: its attribute tokens are in the generalist's vocabulary already, under the same ids
    rad = [t for t in net.vocabulary.special_tokens if t.startswith("<|rad_")]
    assert rad and gen_tok.convert_tokens_to_ids(rad) == net.backbone.tokenizer.convert_tokens_to_ids(rad)
    # the generalist read 12 of vqa_rad's pairs, this run 16: the words of the other 4 are added, nothing else
    added = net.backbone.added_word_ids
    assert len(net.backbone.tokenizer) == len(gen_tok) + len(added) == net.backbone.input_embeddings().weight.shape[0]
    assert all(gen_tok.convert_tokens_to_ids(w) == gen_tok.unk_token_id
               for w in net.backbone.tokenizer.convert_ids_to_tokens(added))
    assert net.backbone.output_embeddings().weight.shape[0] == len(net.backbone.tokenizer)
    assert next(iter(net.backbone.vision.parameters())).shape[1] == 3  # RGB input, as the generalist
    wf.run()
    wf.finalize()
    metrics = json.loads((tmp_path / "run" / "val" / "metrics.json").read_text())["metrics"]
    assert "overall_accuracy" in metrics


def test_new_attribute_tokens_are_added_with_rows_from_trained_keywords(generalist):
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    state = torch.load(model_dir / "model.pt", weights_only=True)
    gen_emb = state["backbone.llm.model.embed_tokens.weight"]
    n = gen_emb.shape[0]
    # pathology_crc is a text-only source: its words are known, its attribute tokens are not in the generalist
    vocab = {"modality": "crc", "labels": {"0": ["adipose tissue", "adipose"], "1": ["debris", "necrosis"]}}
    net = build_compact_from_generalist(model_dir, vocab, image_size=32, channels=3, seed=0)
    tok = net.backbone.tokenizer
    ids = tok.convert_tokens_to_ids(["<|crc_adipose_tissue|>", "<|crc_debris|>"])
    assert sorted(ids) == [n, n + 1] and net.backbone.input_embeddings().weight.shape[0] == n + 2
    assert net.backbone.output_embeddings().weight.shape[0] == n + 2
    assert torch.equal(net.backbone.input_embeddings().weight[:n].detach(), gen_emb)
    words = tok.encode("adipose tissue", add_special_tokens=False)
    assert tok.unk_token_id not in words
    assert torch.allclose(net.book.keyword_embeddings[0].detach(), gen_emb[words].mean(0), atol=1e-6)
    assert torch.allclose(net.backbone.input_embeddings().weight[ids[0]].detach(), gen_emb[words].mean(0), atol=1e-6)


def test_words_the_generalist_never_saw_are_added_with_fresh_rows(generalist, tmp_path):
    """A bundle's words missing from the generalist's tokenizer (e.g. a VQA set left out of pre-training, whose
    answers would read <unk>) are added as whole words with fresh, seeded rows; the trained rows are kept; the rows
    train under LoRA like the attribute rows; the saved folder reloads them; add_words=False keeps the tokenizer."""
    from attok_monai.engines.generalist import build_compact_from_generalist
    from attok_monai.networks.nets import AttTokGPTv

    _, model_dir, _ = generalist
    gen_emb = torch.load(model_dir / "model.pt", weights_only=True)["backbone.llm.model.embed_tokens.weight"]
    n = gen_emb.shape[0]
    texts = ["Is there zygomycosis? Yes, zygomycosis of the qwertylobe.", "zygomycosis"]
    net = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0, extra_texts=texts)
    tok, bb = net.backbone.tokenizer, net.backbone
    new = tok.convert_tokens_to_ids(["zygomycosis", "qwertylobe"])
    assert sorted(new) == [n, n + 1] == sorted(bb.added_word_ids)  # the fixture's generalist never saw either word
    assert tok.encode("Zygomycosis, qwertylobe", add_special_tokens=False) == [new[0], tok.convert_tokens_to_ids(","),
                                                                               new[1]]
    assert tok.unk_token_id in tok.encode("zygomycosisx", add_special_tokens=False)  # whole words only
    emb = bb.input_embeddings().weight.detach()
    assert torch.equal(emb[:n], gen_emb) and bb.output_embeddings().weight.shape[0] == emb.shape[0]
    assert emb[n:n + 2].norm() > 0
    again = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0,
                                          extra_texts=texts)
    assert torch.equal(again.backbone.input_embeddings().weight, bb.input_embeddings().weight)  # seeded rows
    lora = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0,
                                         extra_texts=texts, finetune="lora")
    assert set(new) <= set(lora.backbone.trainable_token_ids)
    assert set(lora.attr_ids.tolist()) <= set(lora.backbone.trainable_token_ids)
    net.save_pretrained(tmp_path / "saved")
    back = AttTokGPTv.from_pretrained(tmp_path / "saved")
    assert back.backbone.tokenizer.encode("zygomycosis", add_special_tokens=False) == [new[0]]
    assert torch.equal(back.backbone.input_embeddings().weight, bb.input_embeddings().weight)
    kept = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0,
                                         extra_texts=texts, add_words=False)
    assert kept.backbone.tokenizer.encode("zygomycosis", add_special_tokens=False) == [tok.unk_token_id]
    assert kept.backbone.added_word_ids == []


def test_from_generalist_errors_name_the_folder(generalist, tmp_path):
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    vocab = {"modality": "fundus", "labels": {"0": "no dr", "1": "pdr"}}
    with pytest.raises(ValueError, match="set --generalist_dir"):
        build_compact_from_generalist(None, vocab)
    with pytest.raises(ValueError, match="not a compact generalist folder"):
        build_compact_from_generalist(tmp_path, vocab)
    with pytest.raises(ValueError, match="image_size 32"):
        build_compact_from_generalist(model_dir, vocab, image_size=28)


def test_add_tokens_grows_rows_and_keeps_trained_ones():
    from attok_monai.networks.nets import CompactGPTvBackbone, build_word_tokenizer

    tok = build_word_tokenizer(["a normal fundus image"])
    bb = CompactGPTvBackbone(tok, llm={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                       "num_key_value_heads": 2})
    before = bb.input_embeddings().weight.detach().clone()
    head = bb.output_embeddings().weight.detach().clone()
    assert bb.add_tokens(["<|x_a|>", "<|x_b|>"]) == ["<|x_a|>", "<|x_b|>"]
    assert bb.add_tokens(["<|x_a|>"]) == []
    n = before.shape[0]
    assert bb.input_embeddings().weight.shape[0] == n + 2 == bb.output_embeddings().weight.shape[0]
    assert torch.equal(bb.input_embeddings().weight[:n], before) and torch.equal(bb.output_embeddings().weight[:n], head)
    assert bb.tokenizer.encode("<|x_b|> normal", add_special_tokens=False) == [n + 1, tok.convert_tokens_to_ids("normal")]


def test_projector_norm_puts_visual_tokens_at_the_text_embeddings_scale():
    """An RMS norm ends the projector, its gain starting at the LM's initializer_range: every visual token's norm is
    initializer_range * sqrt(hidden) at the start, near a fresh embedding row's; no random draw is added (the other
    weights are those of a backbone without it); the gain trains; backbone.json records it only when on."""
    from attok_monai.networks.nets import CompactGPTvBackbone, build_word_tokenizer

    tok = build_word_tokenizer(["a normal fundus image"])
    llm = {"hidden_size": 64, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2}
    torch.manual_seed(0)
    plain = CompactGPTvBackbone(tok, llm=llm)
    torch.manual_seed(0)
    normed = CompactGPTvBackbone(tok, llm=llm, projector_norm=True)
    a, b = plain.state_dict(), normed.state_dict()
    assert set(b) - set(a) == {"projector.3.weight"} and all(torch.equal(a[k], b[k]) for k in a)
    gain = normed.llm.config.initializer_range
    assert torch.equal(b["projector.3.weight"], torch.full((64,), gain))
    x = torch.rand(2, 3, 28, 28)
    plain.eval(), normed.eval()
    v = normed.encode_images(x)
    assert torch.allclose(v.norm(dim=-1), torch.full(v.shape[:2], gain * 64**0.5), rtol=1e-3)
    pre = plain.encode_images(x)  # the same MLP output, RMS-normalised and scaled
    assert torch.allclose(v, gain * pre / pre.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt(), atol=1e-6)
    assert normed.projector[3].weight.requires_grad
    assert normed.config_dict()["projector_norm"] is True and "projector_norm" not in plain.config_dict()


def test_projector_norm_generalist_folder_keeps_it_in_every_bundle_start(generalist, tmp_path):
    """A generalist pre-trained with --projector_norm true saves it in backbone.json; a bundle starting from the
    folder builds the same projector and loads its gain."""
    import shutil

    from attok_monai.engines.generalist import build_compact_from_generalist, build_compact_generalist
    from attok_monai.networks.nets import AttTokGPTv

    _, model_dir, _ = generalist
    net = build_compact_generalist(FUNDUS_VOCAB, ["a normal fundus image", FUNDUS_Q], vision={"in_channels": 3,
                                   "img_size": 32}, seed=0, projector_norm=True)
    with torch.no_grad():
        net.backbone.projector[3].weight.fill_(0.5)  # as if trained
    net.save_pretrained(tmp_path / "g")
    shutil.copy(model_dir / "generalist.json", tmp_path / "g" / "generalist.json")
    assert json.loads((tmp_path / "g" / "backbone.json").read_text())["projector_norm"] is True
    start = build_compact_from_generalist(tmp_path / "g", FUNDUS_VOCAB, image_size=32, channels=3, seed=0)
    assert start.backbone.projector_norm and torch.equal(start.backbone.projector[3].weight, torch.full((256,), 0.5))
    start.save_pretrained(tmp_path / "m")
    assert AttTokGPTv.from_pretrained(tmp_path / "m").backbone.projector_norm


def test_generalist_configs_parse():
    for name in ("fundus_dr", "xray_pneumonia", "pathology_crc", "derma_isic", "oct_retina", "pathology_lung", "vqa_rad"):
        parser = ConfigParser()
        parser.read_config([str(BUNDLES / name / "configs" / f) for f in ("train.json", "from_generalist.json")])
        parser.resolve_macro_and_relative_ids()  # the shared base's %macros, as parse() does
        nd = parser["network_def"]
        assert nd["_target_"].endswith("build_compact_from_generalist"), name
        assert parser["image_size"] == 32 and nd["generalist_dir"] == "@generalist_dir", name
        # merged into the bundle's network_def: every switch the bundle passes is kept
        assert nd["use_acm"] == "@use_acm" and nd["vocabulary"] == "@vocabulary", name
        assert nd["finetune"] == "@finetune" and parser["finetune"] == "full", name
        assert "finetune=@finetune" in parser["backbone_params"], name
        assert "generalist_md5=attok_monai.provenance.file_md5(" in parser["backbone_params"], name
        assert nd["shrink_perturb"] == "@shrink_perturb" and parser["shrink_perturb"] is None, name
        assert "shrink_perturb=json.dumps(@shrink_perturb)" in parser["backbone_params"], name
        assert nd["generalist_parts"] == "@generalist_parts" and parser["generalist_parts"] == "all", name
        assert "generalist_parts=@generalist_parts" in parser["backbone_params"], name
        assert parser["vision_lr_scale"] == 1.0 and parser["llm_lr_scale"] == 1.0, name
        assert "vision_lr_scale=float(@vision_lr_scale)" in parser["backbone_params"], name
        assert "llm_lr_scale=float(@llm_lr_scale)" in parser["backbone_params"], name
        assert "compact_lr_scales(@vision_lr_scale, @llm_lr_scale, @finetune)" in parser["optimizer"]["params"], name


FUNDUS_VOCAB = {"modality": "fundus", "labels": {"0": "no diabetic retinopathy", "1": "mild diabetic retinopathy",
                                                  "2": "proliferative diabetic retinopathy"}}
FUNDUS_Q = "what is the diagnosis of this fundus image?"


def test_finetune_full_is_the_default_model(generalist):
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    default = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0)
    full = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0, finetune="full")
    a, b = default.state_dict(), full.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert all(p.requires_grad for p in full.parameters()) and "lora" not in full.backbone.config_dict()
    assert not any(hasattr(p, "_attok_row_freeze") for p in full.parameters())


def test_shrink_perturb_mixes_the_generalist_with_a_fresh_init(generalist):
    """Every backbone parameter becomes shrink * theta + perturb * theta_fresh (theta_fresh drawn from the seed);
    batch-norm statistics and the modules AttTok adds are those of the plain start."""
    from attok_monai.engines.generalist import build_compact_from_generalist
    from attok_monai.networks.nets import CompactGPTvBackbone

    _, model_dir, _ = generalist
    kw = dict(image_size=32, channels=3, seed=3)
    plain = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, **kw)
    mixed = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, shrink_perturb=[0.4, 0.1], **kw)
    torch.manual_seed(3)
    fresh = dict(CompactGPTvBackbone.from_config_dir(model_dir).named_parameters())
    gen = dict(CompactGPTvBackbone.from_pretrained(model_dir).named_parameters())
    mixed_bb = dict(mixed.backbone.named_parameters())
    n_words = len(gen["llm.model.embed_tokens.weight"])  # rows past it are the attribute tokens, added afterwards
    for name, p in gen.items():
        got = mixed_bb[name][:n_words] if "embed_tokens" in name or "lm_head" in name else mixed_bb[name]
        assert torch.allclose(got, 0.4 * p + 0.1 * fresh[name], atol=1e-6), name
    a, b = plain.state_dict(), mixed.state_dict()
    differ = {k for k in a if ("running_" in k or not k.startswith("backbone.")) and not torch.equal(a[k], b[k])}
    assert differ == {"book.attribute_embeddings", "book.keyword_embeddings"}  # read from the mixed embedding rows
    assert not torch.equal(a["backbone.vision.net.conv1.weight"], b["backbone.vision.net.conv1.weight"])


@pytest.mark.parametrize("parts", ["vision", "language", "all_but_head", "all_but_layers", "all_but_embeddings",
                                   "all_but_query_key", "embeddings", "none"])
def test_generalist_parts_keeps_the_named_modules_and_starts_the_rest_fresh(generalist, parts):
    """Kept modules are the generalist's tensors; the others (parameters and batch-norm statistics) are those of a
    fresh backbone drawn from the seed, as a scratch start's are; the tokenizer stays the generalist's."""
    import fnmatch

    from attok_monai.engines.generalist import GENERALIST_FRESH, GENERALIST_PARTS, build_compact_from_generalist
    from attok_monai.networks.nets import CompactGPTvBackbone

    _, model_dir, _ = generalist
    kw = dict(image_size=32, channels=3, seed=3)
    model = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, generalist_parts=parts, **kw)
    torch.manual_seed(3)
    fresh = CompactGPTvBackbone.from_config_dir(model_dir).state_dict()
    gen = CompactGPTvBackbone.from_pretrained(model_dir).state_dict()
    got = model.backbone.state_dict()
    n_words = len(gen["llm.model.embed_tokens.weight"])  # rows past it are the attribute tokens, added afterwards
    kept = GENERALIST_PARTS[parts]
    finer = GENERALIST_FRESH.get(parts, ())  # patterns inside the kept parts that start fresh
    n_fresh = 0
    for name, want in gen.items():
        value = got[name][:n_words] if "embed_tokens" in name or "lm_head" in name else got[name]
        is_kept = any(name.startswith(p + ".") for p in kept) and not any(
            fnmatch.fnmatchcase(name, p + ".*") for p in finer)
        n_fresh += not is_kept
        assert torch.equal(value, (want if is_kept else fresh[name]).to(value.dtype)), (parts, name)
    if parts == "all_but_query_key":  # a q_proj and a k_proj (weight and bias) in each of the LM's layers
        assert n_fresh == 4 * model.backbone.llm.config.num_hidden_layers
    assert any(not torch.equal(gen[k], fresh[k]) for k in gen if "running_mean" in k)  # the check can tell them apart
    assert all(any(k.startswith(p + ".") for p in GENERALIST_PARTS["all"]) for k in gen)  # "all" names every tensor
    assert model.backbone.tokenizer.get_vocab().keys() >= CompactGPTvBackbone.from_pretrained(
        model_dir).tokenizer.get_vocab().keys()


def test_generalist_parts_all_is_the_default_model(generalist):
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    kw = dict(image_size=32, channels=3, seed=3)
    a = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, **kw).state_dict()
    b = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, generalist_parts="all", **kw).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("parts", "kw", "says"), [
    ("both", {}, r"generalist_parts must be one of 'all', 'all_but_head', 'all_but_layers', 'all_but_embeddings', "
             r"'all_but_query_key', 'vision', 'language', 'embeddings', 'none', got 'both'"),
    ("all_but_query_key", {"finetune": "lora"}, r"starts llm.model.layers.\*.self_attn.q_proj/.* fresh, but finetune"),
    ("vision", {"finetune": "lora"},
     r"starts projector/llm.model.embed_tokens/llm.model.layers/llm.model.norm/llm.lm_head fresh, but finetune 'lora'"),
    ("all_but_layers", {"finetune": "lora"}, r"starts llm.model.layers/llm.model.norm fresh, but finetune 'lora'"),
    ("all_but_head", {"finetune": "lora"}, r"starts llm.lm_head fresh, but finetune 'lora' freezes llm.lm_head: it"),
    ("language", {"finetune": "lora"}, r"starts vision fresh, but finetune 'lora' freezes vision: it would keep its ra"),
    ("embeddings", {"finetune": "frozen_vision"}, r"starts vision/projector/llm.model.layers/llm.model.norm fresh, but"),
    ("all_but_head", {"attribute_init": "generalist"}, r"starts llm.lm_head fresh, but attribute_init 'generalist'"),
    ("language", {"finetune": "frozen_vision"}, r"starts vision fresh, but finetune 'frozen_vision' freezes vision:"),
    ("none", {"shrink_perturb": [0.4, 0.1]}, r"starts vision/projector/llm.model.embed_tokens/.* fresh, but shrink_pert"),
])
def test_generalist_parts_refusals_are_one_line(generalist, parts, kw, says):
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    with pytest.raises(ValueError, match=r"^from_generalist: .*" + says) as e:
        build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=3,
                                      generalist_parts=parts, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("finetune", ["full", "lora", "frozen_vision"])
def test_compact_frozen_parts_is_what_each_finetune_mode_freezes(generalist, finetune):
    """COMPACT_FROZEN_PARTS, the one table that the fresh-part refusals and compact_lr_scales read, says what
    enable_lora / freeze_vision really freeze: every parameter of a listed part is frozen (LoRA's adapters aside),
    every part not listed trains."""
    from attok_monai.engines.generalist import FINETUNE_MODES, GENERALIST_PARTS
    from attok_monai.networks.nets import COMPACT_FROZEN_PARTS, CompactGPTvBackbone

    _, model_dir, _ = generalist
    assert FINETUNE_MODES == tuple(COMPACT_FROZEN_PARTS)
    backbone = CompactGPTvBackbone.from_config_dir(model_dir)
    if finetune == "lora":
        backbone.enable_lora()
    elif finetune == "frozen_vision":
        backbone.freeze_vision()
    params = [(n, p) for n, p in backbone.named_parameters() if "lora_" not in n]
    for part in GENERALIST_PARTS["all"]:
        grads = [p.requires_grad for n, p in params if n == part or n.startswith(part + ".")]
        assert grads, part
        assert not any(grads) if part in COMPACT_FROZEN_PARTS[finetune] else all(grads), (finetune, part)
    assert set(COMPACT_FROZEN_PARTS[finetune]) <= set(GENERALIST_PARTS["all"])
    if finetune == "lora":
        assert any(p.requires_grad for n, p in backbone.named_parameters() if "lora_" in n)


def test_generalist_parts_all_but_head_is_refused_for_a_tied_lm_head(generalist, tmp_path):
    """With tie_word_embeddings, lm_head is the embedding matrix: starting it fresh would start the kept embeddings
    fresh too, so all_but_head (and all_but_embeddings, the other half) is refused in one line and the backbone is
    left as it was."""
    import shutil

    from attok_monai.engines.generalist import reinitialise_parts
    from attok_monai.networks.nets import CompactGPTvBackbone

    _, model_dir, _ = generalist
    tied = tmp_path / "tied"
    shutil.copytree(model_dir, tied)
    card = json.loads((tied / "backbone.json").read_text())
    card["llm"]["tie_word_embeddings"] = True
    (tied / "backbone.json").write_text(json.dumps(card))
    backbone = CompactGPTvBackbone.from_config_dir(tied)
    assert backbone.output_embeddings().weight is backbone.llm.get_input_embeddings().weight
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(ValueError, match=r"^from_generalist: the LM in .* ties lm_head to its input embeddings") as e:
        reinitialise_parts(backbone, tied, ("llm.lm_head",), seed=3)
    assert "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    with pytest.raises(ValueError, match=r"ties lm_head to its input embeddings"):  # the embeddings fresh, head kept
        reinitialise_parts(backbone, tied, ("llm.model.embed_tokens",), seed=3)
    reinitialise_parts(backbone, tied, ("llm.model.layers", "llm.model.norm"), seed=3)  # layers only: allowed
    reinitialise_parts(backbone, tied, ("llm.model.embed_tokens", "llm.lm_head"), seed=3)  # the tied pair: allowed


def test_finetune_frozen_vision_freezes_the_vision_encoder_only(generalist, tmp_path):
    """Vision weights and batch-norm statistics unchanged by AdamW steps; projector and LM train; the folder
    records the mode and reloads with it."""
    from attok_monai.engines.generalist import build_compact_from_generalist
    from attok_monai.networks.nets import AttTokGPTv

    _, model_dir, _ = generalist
    net = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0,
                                        finetune="frozen_vision")
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.vision.") for n in frozen)
    assert {n for n, _ in net.backbone.vision.named_parameters()} == {n[len("backbone.vision."):] for n in frozen}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    assert not net.backbone.vision.training
    torch.manual_seed(0)
    for _ in range(2):
        out = net(torch.rand(4, 3, 32, 32), [FUNDUS_Q] * 4, ["no diabetic retinopathy"] * 4, [[0]] * 4)
        opt.zero_grad()
        out.logits.logsumexp(-1).mean().backward()  # any loss that reaches every weight
        opt.step()
    after = net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("backbone.vision."))
    assert not torch.equal(after["backbone.projector.0.weight"], before["backbone.projector.0.weight"])
    net.save_pretrained(tmp_path / "m")
    again = AttTokGPTv.from_pretrained(tmp_path / "m")
    assert again.backbone.vision_frozen and not any(p.requires_grad for p in again.backbone.vision.parameters())


@pytest.mark.parametrize("bad", [[0.0, 0.1], [0.4, -1.0], [0.4], "0.4", [1.5, 0.0]])
def test_shrink_perturb_bad_value_is_one_short_error(generalist, bad):
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    with pytest.raises(ValueError, match=r"^from_generalist: shrink_perturb must be \[shrink, perturb\] with 0 < shrink"):
        build_compact_from_generalist(model_dir, FUNDUS_VOCAB, shrink_perturb=bad)


def test_finetune_lora_trains_lora_attribute_rows_and_attok_modules_only(generalist):
    """The paper's recipe (A.1): vision encoder, projector and LM weights frozen (bit-identical after AdamW steps,
    batch-norm statistics included), LoRA on the LM's linear layers, embedding/lm_head rows trained only for the
    attribute tokens, book/ACC/ACM projection trained."""
    from attok_monai.engines.generalist import build_compact_from_generalist
    from attok_monai.optimizers import optimizer_param_groups

    _, model_dir, _ = generalist
    full = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0)
    net = build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, seed=0, finetune="lora")
    bb = net.backbone
    assert bb.lora_kwargs["r"] == 16 and bb.lora_kwargs["lora_alpha"] == 32 and bb.lora_kwargs["lora_dropout"] == 0.05
    # AttTok's modules start as with finetune "full" (same seed)
    assert torch.equal(net.acc.q_proj.weight, full.acc.q_proj.weight)
    assert torch.equal(net.book.attribute_embeddings, full.book.attribute_embeddings)
    emb_name, head_name = "backbone.llm.model.embed_tokens.weight", "backbone.llm.lm_head.weight"
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    lora = {n for n, _ in net.named_parameters() if "lora_" in n}
    # q/k/v/o/gate/up/down of each of the 2 layers: an A and a B each
    assert len(lora) == 2 * 7 * 2 and all(".layers." in n for n in lora)
    attok = {n for n, _ in net.named_parameters() if n.split(".")[0] in ("book", "acc", "acm_projection")}
    assert attok and trainable == lora | attok | {emb_name, head_name}
    params = dict(net.named_parameters())
    assert all(hasattr(params[n], "_attok_row_freeze") for n in (emb_name, head_name))
    special = torch.tensor(bb.trainable_token_ids)
    assert sorted(bb.trainable_token_ids) == sorted([net.begin_id, net.end_id, *net.attr_ids.tolist()])
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW(optimizer_param_groups(net, 0.05), lr=1e-2)
    net.train()
    assert not bb.vision.training and bb.llm.training
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        out = net(torch.rand(4, 3, 32, 32, generator=g), [FUNDUS_Q] * 4, [None] * 4, [[0], [1], [2], [1]])
        loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), out.labels[:, 1:].flatten(),
                                                 ignore_index=-100)
        proj, book = net.acm_inputs(out.f_a)
        loss = loss + (proj @ book.flatten(0, 1).t()).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = [k for k in before if k.startswith("backbone.") and "lora_" not in k and k not in (emb_name, head_name)]
    assert any(k.startswith("backbone.vision.") and "running_mean" in k for k in frozen)
    assert not changed & set(frozen), sorted(changed & set(frozen))[:5]
    assert lora <= changed and {"acc.q_proj.weight", "acm_projection.linear.weight"} <= changed
    keep = torch.ones(before[emb_name].shape[0], dtype=torch.bool)
    keep[special] = False
    for name in (emb_name, head_name):
        assert torch.equal(after[name][keep], before[name][keep]), name
    assert not torch.equal(after[head_name][net.attr_ids], before[head_name][net.attr_ids])
    assert not torch.equal(after[emb_name][net.begin_id], before[emb_name][net.begin_id])


def test_finetune_bad_value_is_one_short_error(generalist, tmp_path):
    from attok_monai.engines.generalist import build_compact_from_generalist
    from attok_monai.errors import user_error

    _, model_dir, _ = generalist
    with pytest.raises(ValueError, match=r"^from_generalist: finetune must be one of 'full', 'lora', 'frozen_vision', got 'frozen'\.$"):
        build_compact_from_generalist(model_dir, FUNDUS_VOCAB, finetune="frozen")
    with pytest.raises(ValueError, match="lora settings apply only with finetune 'lora'"):
        build_compact_from_generalist(model_dir, FUNDUS_VOCAB, lora={"r": 4})
    # through the bundle: the CLI prints the innermost user error (one line)
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / "fundus_dr" / "configs" / f) for f in ("train.json", "from_generalist.json")])
    parser.update({"generalist_dir": str(model_dir), "finetune": "frozen", "bundle_root": str(BUNDLES / "fundus_dr")})
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("network_def")
    assert str(user_error(info.value)) == (
        "from_generalist: finetune must be one of 'full', 'lora', 'frozen_vision', got 'frozen'.")


def test_fundus_lora_from_generalist_trains_saves_and_reloads(generalist, data_root, tmp_path):
    from mlflow.tracking import MlflowClient

    from attok_monai.bundle.model_folder import load_pretrained
    from attok_monai.networks.nets import AttTokGPTv

    _, model_dir, _ = generalist
    wf = _workflow(
        BUNDLES / "fundus_dr", ["train.json", "from_generalist.json"], tmp_path, generalist_dir=str(model_dir),
        finetune="lora", data_root=str(data_root / "medmnist"), download=False, epochs=1, batch_size=16,
        val_batch_size=32, limit_train=32, limit_val=16, output_dir=str(tmp_path / "run"),
        ckpt_dir=str(tmp_path / "models"), amp=False, tsne=False,
    )
    net = wf.parser.get_parsed_content("network")
    assert net.backbone.lora_kwargs is not None
    vision0 = net.backbone.vision.net.conv1.weight.detach().clone()
    lora0 = {n: p.detach().clone() for n, p in net.named_parameters() if "lora_B" in n}
    wf.run()
    wf.finalize()
    assert torch.equal(net.backbone.vision.net.conv1.weight, vision0)
    assert any(not torch.equal(p, lora0[n]) for n, p in net.named_parameters() if "lora_B" in n)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("attok_fundus_dr").experiment_id])[0]
    assert run.data.params["finetune"] == "lora" and run.data.params["backbone"] == "compact_generalist"
    saved = tmp_path / "run" / "model"
    assert json.loads((saved / "backbone.json").read_text())["lora"]["r"] == 16
    images = torch.rand(3, 3, 32, 32)
    q = [FUNDUS_Q] * 3
    net.eval()
    expected = net.class_probabilities(images, q)
    reloaded = AttTokGPTv.from_pretrained(saved)
    assert reloaded.backbone.lora_kwargs == net.backbone.lora_kwargs
    assert torch.allclose(reloaded.class_probabilities(images, q), expected, atol=1e-6)
    best = load_pretrained(saved, tmp_path / "models" / "model_best.pt")
    assert torch.allclose(best.class_probabilities(images, q), expected, atol=1e-6)
    assert _evaluate_fundus(saved, data_root, tmp_path)["num_samples"] == 16


def _attribute_generalist(tmp: Path, card: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A generalist folder pre-trained 'with attribute tokens' (``attribute_tokens=True``; its book's a_k and its
    lm_head rows set to known values, as if trained) and a card saying so; ``(folder, a_k (3, d), head rows (3, d))``
    in FUNDUS_VOCAB's order."""
    from attok_monai.engines.generalist import build_compact_generalist

    net = build_compact_generalist(FUNDUS_VOCAB, ["a normal fundus image", FUNDUS_Q], vision={"in_channels": 3,
                                   "img_size": 32}, seed=0, attribute_tokens=True)
    assert net.use_attribute_tokens and not net.use_acc and not net.use_acm
    assert net.format_answer([2], None).startswith(f"<|attribute_begin|>{net.vocabulary.token(2)}<|attribute_end|>")
    d = net.backbone.hidden_size
    a_k = torch.arange(3 * d, dtype=torch.float32).reshape(3, d) / (3 * d)
    head = -a_k.flip(0)
    with torch.no_grad():
        net.book.attribute_embeddings.copy_(a_k)
        net.backbone.output_embeddings().weight[net.attr_ids] = head
    net.save_pretrained(tmp / "ga")
    (tmp / "ga" / "generalist.json").write_text(json.dumps({**json.loads(card.read_text()), "attribute_tokens": True}))
    return tmp / "ga", a_k, head


def test_attribute_init_generalist_keeps_the_rows_a_generalist_trained_with_attribute_tokens(generalist, tmp_path):
    """A generalist pre-trained with attribute tokens (``attribute_tokens: true``) hands a bundle its trained a_k and
    lm_head rows with ``attribute_init="generalist"``, matched by token name whatever the bundle's order; e_k is
    still the keyword's mean; any other attribute_init sets them afresh."""
    from attok_monai.engines.generalist import build_compact_from_generalist

    _, model_dir, _ = generalist
    folder, a_k, head = _attribute_generalist(tmp_path, model_dir / "generalist.json")
    # the bundle names two of the generalist's three attributes, in another order
    vocab = {"modality": "fundus", "labels": {"0": "proliferative diabetic retinopathy",
                                              "1": "no diabetic retinopathy"}}
    kept = build_compact_from_generalist(folder, vocab, image_size=32, channels=3, seed=0, attribute_init="generalist")
    assert torch.equal(kept.book.attribute_embeddings.detach(), a_k[[2, 0]])
    assert torch.equal(kept.backbone.output_embeddings().weight.detach()[kept.attr_ids], head[[2, 0]])
    assert torch.equal(kept.backbone.input_embeddings().weight.detach()[kept.attr_ids], a_k[[2, 0]])
    shrunk = build_compact_from_generalist(folder, vocab, image_size=32, channels=3, seed=0,
                                           attribute_init="generalist", shrink_perturb=[0.4, 0.1])
    assert torch.equal(shrunk.book.attribute_embeddings.detach(), a_k[[2, 0]])  # kept as trained, not shrunk
    assert torch.equal(shrunk.backbone.output_embeddings().weight.detach()[shrunk.attr_ids], head[[2, 0]])
    fresh = build_compact_from_generalist(folder, vocab, image_size=32, channels=3, seed=0, attribute_init="distinct")
    assert not torch.equal(fresh.book.attribute_embeddings.detach(), a_k[[2, 0]])
    assert torch.equal(kept.book.keyword_embeddings, fresh.book.keyword_embeddings)  # e_k: the keyword's mean
    other = torch.ones(len(kept.backbone.tokenizer), dtype=torch.bool)
    other[kept.attr_ids] = False
    a, b = kept.state_dict(), fresh.state_dict()
    for k in a:  # everything else is the same start
        if "embed_tokens" in k or "lm_head" in k:
            assert torch.equal(a[k][other], b[k][other]), k
        elif k != "book.attribute_embeddings":
            assert torch.equal(a[k], b[k]), k


def test_attribute_init_generalist_is_refused_without_trained_rows(generalist, tmp_path):
    """A plain-text generalist (the default, the paper's), a start from scratch, and a bundle attribute the
    generalist never had are each refused in one line naming what to set."""
    from attok_monai.engines.generalist import build_compact_from_generalist
    from attok_monai.errors import InputError
    from attok_monai.networks.builders import build_compact_attok

    _, model_dir, _ = generalist
    with pytest.raises(InputError, match="pre-trained without them .*--attribute_tokens true"):
        build_compact_from_generalist(model_dir, FUNDUS_VOCAB, image_size=32, channels=3, attribute_init="generalist")
    templates = type("T", (), {"all_texts": lambda self: [FUNDUS_Q]})()
    with pytest.raises(InputError, match="--extra from_generalist"):
        build_compact_attok(FUNDUS_VOCAB, templates, attribute_init="generalist")
    folder, _, _ = _attribute_generalist(tmp_path, model_dir / "generalist.json")
    other = {"modality": "fundus", "labels": {"0": "no diabetic retinopathy", "1": "severe diabetic retinopathy"}}
    with pytest.raises(InputError, match=r"has no row for <\|fundus_"):
        build_compact_from_generalist(folder, other, image_size=32, channels=3, attribute_init="generalist")


def test_generalist_bundle_with_attribute_tokens_answers_with_them(tmp_path, data_root):
    """``--attribute_tokens true``: the generalist trains on answers that carry the attribute tokens, records it in
    its settings, MLflow params and card, and fundus_dr starts from it keeping the trained rows."""
    from mlflow.tracking import MlflowClient

    from attok_monai.engines.generalist import build_compact_from_generalist

    for rel in SOURCES:
        require(data_root / rel)
    wf = _workflow(GENERALIST, ["train.json"], tmp_path, data_root=str(data_root), limit_train=4, epochs=1,
                   epoch_length=2, batch_size=8, output_dir=str(tmp_path / "run"), amp=False, attribute_tokens=True)
    net = wf.parser.get_parsed_content("network")
    assert net.use_attribute_tokens and not net.use_acc and not net.use_acm
    wf.run()
    wf.finalize()
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "generalist.json").read_text())["attribute_tokens"] is True
    assert json.loads((model_dir / "attok.json").read_text())["use_attribute_tokens"] is True
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["use_attribute_tokens"] is True
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("attok_compact_generalist").experiment_id])[0]
    assert run.data.params["use_attribute_tokens"] == "True"
    data = wf.parser.get_parsed_content("data")
    assert data.sources[0].name == "fundus_dr" and data.offsets["fundus_dr"] == 0
    fundus = data.sources[0].vocabulary
    trained = torch.load(model_dir / "model.pt", weights_only=True)["book.attribute_embeddings"]
    start = build_compact_from_generalist(model_dir, fundus, image_size=32, channels=3, seed=0,
                                          attribute_init="generalist")
    assert torch.equal(start.book.attribute_embeddings.detach(), trained[: len(fundus)])
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the initialize expression's error
        _workflow(GENERALIST, ["train.json"], tmp_path / "bad", data_root=str(data_root), limit_train=4,
                  output_dir=str(tmp_path / "bad" / "run"), attribute_tokens="yes")
    assert "attribute_tokens: expected True or False, got 'yes'" in str(err.value.__cause__)
