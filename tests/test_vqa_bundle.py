"""End-to-end: the vqa_rad bundle trains a few iterations on real VQA-RAD (held-out part by image), logs to MLflow,
and evaluates/infers from the saved model (with the out-of-domain check calibrated at the end of training); empty
attribute lists go through the model, ACM and the EMA book."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.conftest import REPO, require

BUNDLE = REPO / "bundles" / "vqa_rad"
CONFIGS = BUNDLE / "configs"


def _workflow(config: str, tmp: Path, **overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / config),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train" if config.startswith("train") else "infer",
        bundle_root=str(BUNDLE),
        mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db",
        **overrides,
    )
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    require(data_root / "vqa_rad" / "VQA_RAD_train.json")
    tmp = tmp_path_factory.mktemp("vqa")
    wf = _workflow(
        "train.json", tmp, data_root=str(data_root / "vqa_rad"), epochs=2, batch_size=16, val_batch_size=32,
        limit_train=32, limit_val=16, output_dir=str(tmp / "run"), ckpt_dir=str(tmp / "models"), amp=False,
    )
    wf.run()
    wf.finalize()
    return tmp, wf


def test_metadata_and_configs_parse():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert {"image", "question"} <= set(meta["network_data_format"]["inputs"])
    for name in ("train.json", "evaluate.json", "inference.json", "baseline.json"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        assert parser.get("imports") is not None or name == "baseline.json"
    merged = ConfigParser()
    merged.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "baseline.json")])
    assert merged["use_attribute_tokens"] is False and merged["use_acm"] is False
    assert merged["split_seed"] == 0 and 0 < merged["val_fraction"] < 1
    assert (BUNDLE / "docs" / "README.md").is_file()


def test_training_logs_params_metrics_artifacts(trained):
    from mlflow.tracking import MlflowClient

    tmp, _ = trained
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    exp = client.get_experiment_by_name("attok_vqa_rad")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    p = run.data.params
    assert p["dataset"] == "vqa_rad" and p["use_acm"] == "True" and p["split_seed"] == "0"
    assert p["num_train"] == "32" and p["num_val"] == "16" and int(p["num_val_images"]) >= 1
    assert int(p["num_attributes"]) >= 10 and "<|rad_ct|>" in p["vocabulary"] and len(p["data_md5"]) == 32
    for key in ("loss", "ntp", "acm", "lambda", "val_overall_accuracy", "val_closed_accuracy", "val_open_accuracy",
                "val_open_token_f1", "question_only_overall_accuracy", "samples_per_s"):
        assert key in run.data.metrics, key
    arts = {a.path for d in ("", "val", "model", "configs", "vocabulary")
            for a in client.list_artifacts(run.info.run_id, d or None)}
    for name in ("val/metrics.json", "val/scores.json", "val/scores.md", "val/predictions.csv", "model/model.pt",
                 "model/vocabulary.json", "model/domain.json", "configs/train.json",
                 "vocabulary/attribute_vocabulary.json"):
        assert name in arts, name
    ntp = [m.value for m in client.get_metric_history(run.info.run_id, "ntp")]
    assert len(ntp) == 4 and ntp[-1] < ntp[0]  # 2 epochs x 2 iterations; the loss goes down
    acm = [m.value for m in client.get_metric_history(run.info.run_id, "acm")]
    assert all(a > 0 for a in acm)  # every VQA-RAD pair has at least its organ attribute
    metrics = json.loads((tmp / "run" / "val" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 16 and metrics["n_closed"] + metrics["n_open"] == 16
    assert 0 <= metrics["overall_accuracy"] <= 1 and 0 <= metrics["question_only_overall_accuracy"] <= 1
    scores = json.loads((tmp / "run" / "val" / "scores.json").read_text())
    assert {"by_question_type", "by_organ", "worst_question_types", "question_only"} <= set(scores)
    assert "worst question types" in (tmp / "run" / "val" / "scores.md").read_text()
    rows = list(csv.DictReader(open(tmp / "run" / "val" / "predictions.csv")))
    assert len(rows) == 16 and {"question", "answer", "prediction", "correct", "question_only_answer"} <= set(rows[0])


def test_validation_split_shares_no_image(trained, data_root):
    from attok_monai.vqa.datalists import prepare_vqa

    _, wf = trained
    data = wf.parser.get_parsed_content("data")
    assert not {d["image"] for d in data.train} & {d["image"] for d in data.val}
    full = prepare_vqa(data_root / "vqa_rad", None, vocabulary=data.vocab, val_fraction=0.1, seed=0)
    train_imgs, val_imgs = {d["image"] for d in full.train}, {d["image"] for d in full.val}
    assert not train_imgs & val_imgs and len(full.train) + len(full.val) == 1797
    assert full.split_info["num_val_images"] == len(val_imgs) and 0.05 < len(val_imgs) / 314 < 0.15
    # the model's answer format: attribute tokens in front of the free-text answer
    net = wf.parser.get_parsed_content("network")
    item = next(d for d in full.train if d["attributes"])
    target = net.format_answer(item["attributes"], item["answer"])
    assert target.startswith("<|attribute_begin|><|rad_") and target.endswith(item["answer"])


def test_empty_attribute_lists_train_and_update_book():
    from attok_monai.attributes import AttributeVocabulary
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.losses import AttTokLoss
    from attok_monai.networks.builders import build_compact_attok

    vocab = AttributeVocabulary.from_label_map("rad", {0: "ct", 1: "mri", 2: "lung"})
    templates = InstructionTemplates("radiology", vocab.names, ["what is this {modality} image?"],
                                     ["which of {options}?"])
    x = torch.rand(3, 1, 16, 16)
    q = ["is this a ct?", "what organ?", "is there a mass?"]
    a = ["yes", "lung", "no"]
    for tokens in (True, False):
        net = build_compact_attok(vocab, templates, extra_texts=q + a, vision={"in_channels": 1, "img_size": 16, "widths": [8, 8, 8, 8], "grid": 2},
                                  llm={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                       "num_key_value_heads": 2},
                                  seed=0, use_attribute_tokens=tokens, use_acc=True, use_acm=True)
        loss = AttTokLoss()
        for attrs in ([[], [], []], [[], [2], [0, 2]]):
            out = net(x, q, a, attrs)
            z_a, book = net.acm_inputs(out.f_a)
            value = loss(out.logits, out.labels, z_a, out.attr_targets, book, net.book.key_padding_mask())
            value.backward()
            assert torch.isfinite(value)
            n_attr = sum(len(t) if tokens else min(len(t), 1) for t in attrs)
            assert out.f_a.shape == (n_attr, 32) and out.attr_targets.shape == (n_attr,)
            assert out.visual_targets.shape == (3, 3)
            updated = net.book.update_prototypes(out.visual_tokens, out.visual_targets)
            assert updated.tolist() == [any(k in t for t in attrs) for k in range(3)]
        assert net.format_answer([], "yes") == "yes"


def test_detokenize_and_metric():
    from attok_monai.engines.vqa_steps import VQAMetric, detokenize

    assert detokenize("5 . 6 cm") == "5.6 cm"
    assert detokenize("<|attribute_begin|><|rad_xray|><|attribute_end|> x - ray , pa") == (
        "<|attribute_begin|><|rad_xray|><|attribute_end|> x-ray, pa")
    m = VQAMetric("closed_accuracy")
    m.reset()
    m.update(({"id": ["a", "b"], "question": ["q", "q"], "answer": ["Yes", "CT"], "answer_type": ["closed", "closed"],
               "question_type": [["PRES"], ["MODALITY"]], "organ": ["HEAD", "HEAD"],
               "prediction": ["yes, there is", "mri"]},))
    assert m.compute() == 0.5
    with pytest.raises(ValueError, match="name must be one of"):
        VQAMetric("auc")


def test_evaluate_and_inference_from_saved_model(trained, data_root, tmp_path):
    tmp, _ = trained
    ev = _workflow("evaluate.json", tmp, data_root=str(data_root / "vqa_rad"), split="val", limit=8,
                   model_dir=str(tmp / "run" / "model"), checkpoint=str(tmp / "models" / "model_best.pt"),
                   output_dir=str(tmp_path / "eval"), amp=False)
    ev.run()
    ev.finalize()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 8 and "question_only_closed_accuracy" in metrics
    images = sorted((data_root / "vqa_rad" / "images").glob("*.jpg"))[:2]
    table = tmp_path / "questions.csv"
    table.write_text("image,question\n" + "".join(f"{p.name},is this a ct scan?\n" for p in images)
                     + f"{images[0].name},what organ is shown?\n")
    out = tmp_path / "answers.csv"
    inf = _workflow("inference.json", tmp, input_table=str(table), image_root=str(images[0].parent),
                    output_file=str(out), model_dir=str(tmp / "run" / "model"),
                    checkpoint=str(tmp / "models" / "model_best.pt"))
    inf.run()
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and rows[0]["image"] == images[0].name and rows[2]["question"] == "what organ is shown?"
    assert {"answer", "answer_text", "attributes", "attribute_names"} <= set(rows[0])
    # the out-of-domain threshold was set on the validation images (the 16 pairs' 5 images) with the best weights
    domain = json.loads((tmp / "run" / "model" / "domain.json").read_text())
    assert domain["num_images"] == 5 and domain["weights"] == "model_best.pt" and domain["threshold"] > 0
    assert all(r["prototype_distance"] != "" and r["in_domain"] in ("True", "False") for r in rows)
    assert all(r["header_in_domain"] == "" for r in rows)  # JPEGs: no DICOM header to check
    # a model folder trained before domain.json existed still answers; the columns say the check did not run
    old = tmp_path / "old_model"
    shutil.copytree(tmp / "run" / "model", old)
    (old / "domain.json").unlink()
    out_old = tmp_path / "answers_old.csv"
    _workflow("inference.json", tmp, input_table=str(table), image_root=str(images[0].parent),
              output_file=str(out_old), model_dir=str(old)).run()
    rows_old = list(csv.DictReader(open(out_old)))
    assert len(rows_old) == 3 and all(r["in_domain"] == "" and "no domain.json" in r["domain_note"] for r in rows_old)
    # a missing image, a truncated JPEG and an empty question are skipped with their reasons; the rest is answered
    (tmp_path / "trunc.jpg").write_bytes(images[0].read_bytes()[:300])
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("image,question\n" + f"{images[0]},is this a ct scan?\nmissing.jpg,is this a ct?\n"
                     + f"{tmp_path / 'trunc.jpg'},is this a ct?\n{images[1]},\n")
    out2 = tmp_path / "answers2.csv"
    inf = _workflow("inference.json", tmp, input_table=str(mixed), output_file=str(out2),
                    model_dir=str(tmp / "run" / "model"))
    inf.run()
    assert len(list(csv.DictReader(open(out2)))) == 1
    report = list(csv.DictReader(open(tmp_path / "answers2.skipped.csv")))
    assert [r["id"] for r in report] == ["row3", "row4", "row5"]
    assert "not found" in report[0]["reason"] and "empty question" in report[2]["reason"] and report[1]["reason"]
    from attok_monai.engines.vqa_inference import question_table_datalist
    from attok_monai.errors import InputError

    bad = tmp_path / "bad.csv"
    bad.write_text("image\nmissing.jpg\n")
    with pytest.raises(InputError, match="missing column"):
        question_table_datalist(bad)


def _with_test_file(data_root: Path, tmp: Path, n_test: int) -> Path:
    """A VQA-RAD folder in the shared layout plus ``VQA_RAD_test.json`` (``n_test`` real records relabelled as test
    pairs, as the withheld file would hold them); images linked, not copied."""
    src = data_root / "vqa_rad"
    root = tmp / "vqa_rad"
    root.mkdir()
    (root / "images").symlink_to(src / "images")
    rows = json.loads((src / "VQA_RAD_train.json").read_text())
    (root / "VQA_RAD_train.json").write_text(json.dumps(rows))
    test = [{**r, "qid": f"t{r['qid']}", "phrase_type": "test_" + r["phrase_type"]} for r in rows[:n_test]]
    (root / "VQA_RAD_test.json").write_text(json.dumps(test))
    return root


def test_evaluate_scores_the_test_split_given_as_override(trained, data_root, tmp_path):
    """``--data_root D --split test`` scores the official test pairs of D (never the training pairs), and training
    never reads test pairs, even from the combined release file."""
    tmp, _ = trained
    root = _with_test_file(data_root, tmp_path, n_test=6)
    ev = _workflow("evaluate.json", tmp, data_root=str(root), split="test",
                   model_dir=str(tmp / "run" / "model"), checkpoint=str(tmp / "models" / "model_best.pt"),
                   output_dir=str(tmp_path / "eval"), amp=False)
    ev.run()
    ev.finalize()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 6
    ids = {r["id"] for r in csv.DictReader(open(tmp_path / "eval" / "predictions.csv"))}
    assert all(i.startswith("vqa_rad_t") for i in ids) and len(ids) == 6

    from attok_monai.vqa.datalists import prepare_vqa

    combined = tmp_path / "combined"
    combined.mkdir()
    (combined / "images").symlink_to(data_root / "vqa_rad" / "images")
    rows = json.loads((root / "VQA_RAD_train.json").read_text()) + json.loads((root / "VQA_RAD_test.json").read_text())
    (combined / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    data = prepare_vqa(combined, None, eval_split="test", vocabulary=trained[1].network_def.vocabulary)
    assert len(data.test) == 6 and len(data.train) + len(data.val) == len(rows) - 6
    assert not {d["id"] for d in data.train + data.val} & {d["id"] for d in data.test}
    with pytest.raises(FileNotFoundError, match="VQA_RAD_test.json"):  # the shared layout: test file withheld
        prepare_vqa(data_root / "vqa_rad", None, eval_split="test", vocabulary=data.vocab)
    (combined / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows[:-6]))
    with pytest.raises(ValueError, match="Dataset Public.json holds no official test pairs"):
        prepare_vqa(combined, None, eval_split="test", vocabulary=data.vocab)
    with pytest.raises(ValueError, match="eval_split 'tset'"):
        prepare_vqa(root, None, eval_split="tset", vocabulary=data.vocab)
