"""``benchmarks/gpu_check.py`` on CPU with the tiny model: the logic that the one-call GPU check runs (bundle training
through ``train.json + train_qwen25vl.json``, the plain HF + PEFT step, ACC cost, adapter round trip, MLflow), so it
cannot rot while no GPU is lent. Nothing downloads: the model is random, the images synthetic."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.conftest import REPO

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "train_qwen25vl.json").is_file())

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--model-config", "tiny", "--device", "cpu",
           "--steps", "2", "--out", str(out / "out"), "--work", str(out / "work")]
    res = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, json.loads((out / "out" / "gpu_check.json").read_text()), res


def test_tiny_check_runs_every_part_on_cpu(tiny_check):
    out, report, res = tiny_check
    assert report["failed"] == [] and report["not_done"] == []
    assert report["model_config"] == "tiny" and report["device"]["device"] == "cpu" and report["sizes"] == [56, 112]
    # (1) the bundle trained 1 + 2 iterations at each size, through its own trainer, step and handlers
    runs = {r["px"]: r for r in report["bundle_runs"]}
    assert sorted(runs) == [56, 112]
    for r in runs.values():
        assert r["iterations"] == 3 and len(r["step_s"]) == 3 and all(t > 0 for t in r["step_s"])
        assert r["step_s_median"] == pytest.approx(statistics.median(r["step_s"][1:]))  # the warm-up left out
        assert all(torch.isfinite(torch.tensor(r["losses"])))
        assert "monai.handlers.CheckpointSaver" in " ".join(r["removed_from_config"])
        assert 0 < r["trainable_parameters"] < r["num_parameters"]
        assert "val_open_accuracy" in r["val_metrics"] and r["train_metrics"]["tokens_per_s"] > 0
    # (2) the plain step trains LoRA only, on the same images and questions
    plain = {r["px"]: r for r in report["plain_runs"]}
    for px in (56, 112):
        assert len(plain[px]["step_s"]) == 3 and plain[px]["trainable_parameters"] < runs[px]["trainable_parameters"]
        assert plain[px]["lora_b_nonzero"] and all(torch.isfinite(torch.tensor(plain[px]["losses"])))
        # the AttTok sequences hold the same prompt, the class keyword and 3 special tokens more per answer
        assert runs[px]["tokens_per_step"] > plain[px]["tokens_per_step"]
    # (3) ACC at K = 1000 and 10000 as a share of the bundle step; the overhead ratio
    rows = {r["px"]: r for r in report["rows"]}
    assert rows[56]["visual_tokens"] == 4 and rows[112]["visual_tokens"] == 16
    for row in rows.values():
        assert row["overhead_ratio"] == pytest.approx(row["bundle_step_s"] / row["plain_step_s"])
        assert [a["k"] for a in row["acc"]] == [1000, 10000]
        for a in row["acc"]:
            assert a["n_visual"] == row["visual_tokens"] and a["fwd_bwd_s_median"] > 0
            assert a["share_of_step"] == pytest.approx(a["fwd_bwd_s_median"] / row["bundle_step_s"])
    assert set(report["targets_met"]) == {
        f"overhead {px} px <= 1.05x" for px in (56, 112)} | {f"ACC K=10000 {px} px <= 1%" for px in (56, 112)}
    # (4) peak memory is a CUDA reading: absent on CPU, never invented
    assert rows[56]["bundle_peak_mib"] is None and rows[56]["plain_peak_mib"] is None
    # (5) the adapter and token rows that the bundle saved load back to equal logits
    rt = report["round_trip"]
    assert rt["perturbation_changed_logits"] and rt["logits_bit_equal_after_load"] and rt["logits_equal_after_load"]
    assert rt["max_abs_diff_after_load"] == 0 == rt["run_to_run_max_abs_diff"]
    assert {"adapter/adapter_model.safetensors", "token_rows.pt", "model.pt"} <= set(rt["files"])
    assert rt["missing_keys"] == [] and rt["unexpected_keys"] == []
    # MLflow: one finished run per size in the local store, copied beside the results
    assert report["mlflow"]["status"] == "sqlite" and (out / "out" / "mlflow.db").is_file()
    ml = {r["run_name"]: r for r in report["mlflow"]["runs"]}
    assert set(ml) == {"gpu_check_56px", "gpu_check_112px"}
    assert all(r["status"] == "FINISHED" and {"loss", "tokens_per_s"} <= set(r["metrics"]) for r in ml.values())
    # the short table is printed and written
    md = (out / "out" / "gpu_check.md").read_text()
    assert "| px | visual tokens |" in md and "Round trip" in md and md.splitlines()[0] in res.stdout
    assert "checks the logic only" in md


def test_doc_section_only_from_a_7b_cuda_run(tiny_check, tmp_path):
    """``--to-doc`` writes docs/benchmarks.md's section from a measured 7B CUDA report and refuses the CPU one."""
    from benchmarks.gpu_check import doc_from_report

    out, report, _ = tiny_check
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    with pytest.raises(SystemExit, match="not a 7B run on CUDA"):
        doc_from_report(out / "out" / "gpu_check.json", doc)
    assert doc.read_text() == "# Benchmarks\n"
    as_gpu = {**report, "model_config": "7b", "device": {**report["device"], "device": "cuda:0"}}
    (tmp_path / "gpu.json").write_text(json.dumps(as_gpu))
    text = doc_from_report(tmp_path / "gpu.json", doc)
    written = doc.read_text()
    assert "<!-- BEGIN gpu_check -->" in written and "| 56 | 4 |" in written and text.strip() in written
    assert "checks the logic only" not in text  # the disclaimer is for CPU / tiny reports


def test_plain_inputs_equal_the_backbone_inputs(tmp_path):
    """The plain HF step is fed exactly what the AttTok backbone builds for the same prompt and answer text."""
    from benchmarks.gpu_check import build_random_hf_attok, bundle_texts, plain_inputs, write_model_folder

    bundle = REPO / "bundles" / "fundus_dr"
    texts, _, _, _ = bundle_texts(bundle)
    folder = write_model_folder(tmp_path / "model", "tiny", texts)
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json")])
    model = build_random_hf_attok(str(folder), parser.get_parsed_content("vocabulary"), min_pixels=56 * 56,
                                  max_pixels=56 * 56, device="cpu", max_length=256, seed=0)
    bb = model.backbone
    images = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    prompts = ["what is the diagnosis of this fundus image?", "grade the diabetic retinopathy in this fundus image."]
    answers = ["no diabetic retinopathy", "proliferative diabetic retinopathy"]
    a = bb.build_inputs(prompts, answers, images)
    b = plain_inputs(bb.tokenizer, bb.image_processor, bb.chat_template, bb.merge_size, bb.image_token_id, prompts,
                     answers, images)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels", "pixel_values", "image_grid_thw"):
        assert torch.equal(a[key], b[key]), key
    assert int((a["input_ids"] == bb.image_token_id).sum()) == 2 * 4
    # the base is random on the requested device; the special-token ids of the config are the tokenizer's
    assert bb.hf.config.image_token_id == bb.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert bb.model_id == str(folder) and bb.peft.peft_config["default"].r == 16


def test_7b_folder_has_qwen25vl_7b_dimensions(tmp_path):
    """The 7B model of the GPU check, built on the meta device: Qwen2.5-VL-7B's 8.29e9 parameters and shapes."""
    from benchmarks.gpu_check import bundle_texts, random_base_model, write_model_folder

    texts, _, _, _ = bundle_texts(REPO / "bundles" / "fundus_dr")
    folder = write_model_folder(tmp_path / "model7b", "7b", texts)
    model = random_base_model(folder, "bfloat16", "sdpa", "meta")
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        3584, 28, 28, 4)
    assert (text.intermediate_size, text.vocab_size) == (18944, 152064)
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (32, 1280, 3584)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656
    assert model.dtype == torch.bfloat16 and next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("name", BUNDLES)
def test_strip_components_finds_the_checkpoint_and_mlflow_parts(name):
    """What the check leaves out of each bundle's train + Qwen config exists there (so the check stays in step with
    the configs), and without mlflow nothing refers to an MLflow handler any more."""
    from benchmarks.gpu_check import strip_components

    configs = REPO / "bundles" / name / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "train_qwen25vl.json")])
    parser.resolve_macro_and_relative_ids()  # the shared base's %macros, as run_bundle does
    config = parser.config
    removed = " ".join(strip_components(config, mlflow=False))
    for gone in ("monai.handlers.CheckpointSaver", "mlflow_store.MLFlowHandler", "MLflowArtifactsHandler",
                 "@train#mlflow", "checkpoint_saver.attach", "checkpoint_loader.attach"):
        assert gone in removed, gone
    handlers = config["train"]["handlers"] + config["validate"]["handlers"]
    targets = {h.get("_target_", "") for h in handlers if isinstance(h, dict)}
    assert not any(t.endswith(("CheckpointSaver", "MLFlowHandler", "MLflowArtifactsHandler", "MLflowRunHandler"))
                   for t in targets)
    left = json.dumps(handlers + config["run"] + config["finalize"])
    assert "@train#mlflow" not in left and "@train::mlflow" not in left
    assert not any("checkpoint" in expr for expr in config["run"])
    assert any("trainer.run()" in expr for expr in config["run"])
    assert {"monai.handlers.LrScheduleHandler", "attok_monai.handlers.PrototypeEMAHandler"} <= targets


def test_missing_mlflow_is_reported_not_fatal(tmp_path, monkeypatch):
    from benchmarks.gpu_check import _mlflow_store

    monkeypatch.setitem(sys.modules, "mlflow", None)
    uri, status = _mlflow_store(tmp_path)
    assert uri is None and status.startswith("mlflow not installed: skipped logging")


def test_mlflow_store_falls_back_and_says_why(tmp_path, monkeypatch):
    from benchmarks import gpu_check

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # restored after the test
    real = gpu_check._probe_store

    def sqlite_broken(uri):
        if uri.startswith("sqlite"):
            raise RuntimeError("no sqlite here")
        real(uri)

    monkeypatch.setattr(gpu_check, "_probe_store", sqlite_broken)
    uri, status = gpu_check._mlflow_store(tmp_path)
    assert uri == (tmp_path / "mlruns").as_uri() and status == "file store (sqlite failed: RuntimeError: no sqlite here)"
    monkeypatch.setattr(gpu_check, "_probe_store", lambda uri: (_ for _ in ()).throw(OSError("read-only")))
    uri, status = gpu_check._mlflow_store(tmp_path)
    assert uri is None and status.startswith("no MLflow store worked: skipped logging") and "read-only" in status


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_wheels.sh"])
def test_wrapper_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
