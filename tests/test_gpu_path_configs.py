"""The GPU-path bundle configs, run on CPU: ``configs/train_qwen25vl.json`` (AttTok on a Qwen2.5-VL-family model with
PEFT LoRA; here a tiny randomly initialised one saved to disk, so nothing downloads) and ``configs/multi_gpu_train.json``
under ``torchrun`` (gloo instead of NCCL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.conftest import REPO, require

# compact_generalist pre-trains the compact model only: the paper's setting starts from a pretrained GPTv instead
BUNDLES = sorted(
    p.name for p in (REPO / "bundles").iterdir()
    if (p / "configs" / "train.json").is_file() and p.name != "compact_generalist"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    from tests.test_hf_backbone import save_base

    return save_base(tmp_path_factory.mktemp("tiny_qwen"), "qwen2_5_vl")


def _parser(name: str, *files: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / name / "configs" / f) for f in files])
    parser.update({"bundle_root": str(REPO / "bundles" / name)})
    parser.resolve_macro_and_relative_ids()  # as parse() does: the shared base's %macros pulled in
    return parser


@pytest.mark.parametrize("name", BUNDLES)
def test_gpu_configs_merge_over_train(name):
    q = _parser(name, "train.json", "train_qwen25vl.json")
    assert q["network_def"]["_target_"] == "attok_monai.networks.builders.build_hf_attok"
    assert q["model_id"] == "Qwen/Qwen2.5-VL-7B-Instruct" and q["dtype"] == "bfloat16" and q["amp"] is True
    assert q["lora"] == {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}  # paper A.1
    assert (q["lr"], q["weight_decay"], q["warmup_fraction"]) == (1e-4, 1e-4, 0.1)
    params = q.get_parsed_content("backbone_params")
    assert params["backbone"] == "qwen2_vl" and params["model_id"] == q["model_id"]
    assert "accumulation_steps=@accumulation_steps" in q["train"]["trainer"]["iteration_update"]
    # the compact default keeps its own description
    assert _parser(name, "train.json").get_parsed_content("backbone_params")["backbone"] == "compact"
    m = _parser(name, "train.json", "multi_gpu_train.json")
    assert m["train"]["trainer"]["network"] == "@ddp_network"
    sampler = m["train"].get("sampler") or m["train"]["dataloader"]["sampler"]
    assert "distributed.train_sampler" in sampler and m["train"]["dataloader"]["shuffle"] is False
    assert m["initialize"][0].startswith("$attok_monai.engines.distributed.init_distributed")
    assert m["finalize"][-1] == "$attok_monai.engines.distributed.cleanup()"
    assert m["validate"]["handlers"][3]["_target_"] == "attok_monai.handlers.mlflow_store.MLFlowHandler"  # the one disabled on rank > 0
    # both at once: the 7B model under torchrun
    both = _parser(name, "train.json", "train_qwen25vl.json", "multi_gpu_train.json")
    assert both["network_def"]["_target_"].endswith("build_hf_attok") and both["train"]["trainer"]["network"] == (
        "@ddp_network")


def test_rank_zero_handlers_keep_what_every_rank_needs(monkeypatch):
    from ignite.handlers import ProgressBar
    from monai.handlers import LrScheduleHandler, StatsHandler

    from attok_monai.engines import distributed
    from attok_monai.handlers import PrototypeEMAHandler
    from attok_monai.networks.blocks import EmbeddingBook

    sched = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1)], 0.1), 1))
    ema = PrototypeEMAHandler(EmbeddingBook(2, 4))
    hs = [sched, StatsHandler(), ema, ProgressBar(), None]
    assert distributed.rank_zero_handlers(hs) == hs[:4]
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.rank_zero_handlers(hs) == [sched, ema]


def _run_bundle(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _mlflow_run(db: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_qwen25vl_config_trains_and_evaluates_on_cpu(tiny_qwen, data_root, tmp_path):
    """train.json + train_qwen25vl.json with a local model folder as model_id (bf16 weights, LoRA, attribute rows), a
    few iterations on real RetinaMNIST; MLflow gets the backbone parameters and tokens/s; the saved folder (LoRA
    adapter + token rows, no base weights) is scored by the unchanged evaluate.json."""
    require(data_root / "medmnist" / "retinamnist.npz")
    run_dir, models = tmp_path / "run", tmp_path / "models"
    _run_bundle([
        "-m", "attok_monai.bundle", "run", "--config", str(REPO / "bundles" / "fundus_dr"), "--extra",
        "train_qwen25vl", "--model_id", str(tiny_qwen), "--min_pixels", "3136", "--max_pixels", "3136",
        "--acc_inner_dim", "32",  # the low-rank ACC option (width 64 here), saved and loaded with the model
        "--data_root", str(data_root / "medmnist"), "--download", "False", "--epochs", "1", "--epoch_length", "2",
        "--limit_train", "8", "--limit_val", "4", "--batch_size", "2", "--val_batch_size", "4", "--tsne", "False",
        "--resume", "False", "--output_dir", str(run_dir), "--ckpt_dir", str(models),
        "--mlflow_tracking_uri", f"sqlite:///{tmp_path}/mlruns.db",
    ], tmp_path)
    client, run = _mlflow_run(tmp_path / "mlruns.db", "attok_fundus_dr")
    p = run.data.params
    assert p["backbone"] == "qwen2_vl" and p["model_id"] == str(tiny_qwen) and p["dtype"] == "bfloat16"
    assert p["lr"] == "0.0001" and json.loads(p["lora"])["r"] == 16 and p["device_name"].startswith("cpu")
    for key in ("tokens_per_s", "samples_per_s", "peak_memory_mb", "val_open_accuracy"):
        assert key in run.data.metrics, key
    assert run.data.metrics["tokens_per_s"] > 0
    model = run_dir / "model"
    assert (model / "adapter" / "adapter_model.safetensors").is_file() and (model / "token_rows.pt").is_file()
    assert not list(model.glob("**/model.safetensors"))
    assert json.loads((model / "backbone.json").read_text())["model_id"] == str(tiny_qwen)
    assert json.loads((model / "attok.json").read_text())["acc_inner_dim"] == 32 and p["acc_inner_dim"] == "32"
    out = tmp_path / "eval"
    _run_bundle([
        # the short form: run from tmp_path, where MONAI's own CLI would not find the shared base's macro files
        "-m", "attok_monai.bundle", "run", "--config", str(REPO / "bundles" / "fundus_dr"), "evaluate",
        "--model_dir", str(model), "--checkpoint", "none", "--data_root", str(data_root / "medmnist"),
        "--download", "False", "--limit", "4", "--tsne", "False", "--output_dir", str(out),
        "--mlflow_tracking_uri", f"sqlite:///{tmp_path}/eval.db",
    ], tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 4 and 0.0 <= metrics["open_accuracy"] <= 1.0


def test_multi_gpu_config_under_torchrun_gives_identical_ranks(data_root, tmp_path):
    """train.json + multi_gpu_train.json under ``torchrun --nproc_per_node 2`` (gloo): DDP, a DistributedSampler and
    the book's all-reduced EMA leave every parameter and the book identical on both ranks; rank 0 alone writes the
    model, the checkpoint and one MLflow run."""
    require(data_root / "medmnist" / "retinamnist.npz")
    save = tmp_path / "save.json"
    # "run" is a macro into the shared base until parse time, so "+run" (merged at load time) cannot append to it:
    # the extra file gives the whole multi-GPU run list plus the two saves
    from attok_monai.bundle.resolve import resolve_files

    configs = REPO / "bundles" / "fundus_dr" / "configs"
    multi_run = resolve_files([str(configs / "train.json"), str(configs / "multi_gpu_train.json")])["run"]
    save.write_text(json.dumps({"run": multi_run + [
        f"$torch.save({{k: v.detach().cpu() for k, v in @network.state_dict().items()}}, '{tmp_path}/rank' + "
        "str(attok_monai.engines.distributed.rank()) + '.pt')",
        f"$torch.save([s for s in @train#dataloader.sampler], '{tmp_path}/samples' + "
        "str(attok_monai.engines.distributed.rank()) + '.pt')",
    ]}))
    _run_bundle([  # the README's short form under torchrun
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "attok_monai.bundle", "run",
        "--config", str(REPO / "bundles" / "fundus_dr"), "--extra", "multi_gpu_train", "--extra", str(save),
        "--data_root", str(data_root / "medmnist"), "--download", "False",
        "--epochs", "1", "--epoch_length", "2", "--limit_train", "32", "--limit_val", "8", "--batch_size", "4",
        "--tsne", "False", "--resume", "False", "--output_dir", str(tmp_path / "run"),
        "--ckpt_dir", str(tmp_path / "models"), "--mlflow_tracking_uri", f"sqlite:///{tmp_path}/mlruns.db",
    ], tmp_path)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    buffers = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm statistics: rank 0's are saved
    differ = [k for k in r0 if not torch.equal(r0[k], r1[k]) and not k.endswith(buffers)]
    assert not differ, differ
    assert bool(r0["book.prototype_initialized"].all()) or float(r0["book.prototypes"].abs().sum()) > 0
    s0 = torch.load(tmp_path / "samples0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "samples1.pt", weights_only=True)
    assert len(s0) == len(s1) == 16 and not set(s0) & set(s1)  # each rank its own half
    assert (tmp_path / "run" / "model" / "model.pt").is_file() and list((tmp_path / "models").glob("checkpoint*"))
    _, run = _mlflow_run(tmp_path / "mlruns.db", "attok_fundus_dr")
    assert run.data.params["world_size"] == "2" and "val_open_accuracy" in run.data.metrics
