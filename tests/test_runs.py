"""Runs you can trust (issue 15): each run owns its folder and weights, the ablation runs after a training in the same
checkout, evaluate scores exactly the folder it is given, the same seed gives the same model whatever is validated or
plotted, a killed run resumed to the end equals an uninterrupted one, and a resume with other settings names the keys
that differ. Tiny fundus runs on real RetinaMNIST inside a copy of the bundle folder (so nothing lands in the repo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from attok_monai.bundle.runs import latest_model_dir, optional, resume_dir, run_settings
from tests.conftest import REPO, require

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = REPO / "bundles" / "fundus_dr"


@pytest.fixture()
def bundle(tmp_path, data_root) -> Path:
    """A copy of the fundus bundle's configs in a temp folder: its runs/ and latest.json land there."""
    require(data_root / "medmnist" / "retinamnist.npz")
    root = tmp_path / "fundus_dr"
    shutil.copytree(SRC / "configs", root / "configs")
    return root


def _overrides(data_root: Path, tmp: Path, **kw) -> dict:
    base = dict(
        data_root=str(data_root / "medmnist"), download=False, epochs=2, batch_size=16, val_batch_size=16,
        limit_train=48, limit_val=16, amp=False, tsne=False, mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db",
    )
    base.update(kw)
    return base


def _run(bundle: Path, configs: list[str], **overrides) -> ConfigWorkflow:
    files = [str(bundle / "configs" / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files[0] if len(files) == 1 else files, meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="train" if configs[0].startswith("train") else "infer", bundle_root=str(bundle), **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def _network_state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["network"]


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _val_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "val" / "metrics.json").read_text())["metrics"]


def test_baseline_ablation_after_training_in_the_same_checkout(bundle, data_root, tmp_path):
    """make train, then the README's ablation command: the baseline does not pick up the +All checkpoint; each run
    has its own folder, and latest.json points at the last finished one."""
    first = _run(bundle, ["train.json"], **_overrides(data_root, tmp_path, epochs=1))
    second = _run(bundle, ["train.json", "baseline.json"], **_overrides(data_root, tmp_path, epochs=1))
    d1, d2 = Path(first.parser.get_parsed_content("output_dir")), Path(second.parser.get_parsed_content("output_dir"))
    assert d1 != d2 and d1.parent == d2.parent == bundle / "runs"
    for d in (d1, d2):
        assert (d / "model" / "model.pt").is_file() and (d / "settings.json").is_file()
        assert (d / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
        assert (d / "checkpoints" / "model_best.pt").is_file()
    assert json.loads((d2 / "model" / "attok.json").read_text())["use_acc"] is False
    assert Path(latest_model_dir(bundle)).resolve() == (d2 / "model").resolve()
    assert not (bundle / "models").exists()  # no shared checkpoint folder any more

    # evaluate scores exactly the folder it is given (the first run), not the latest one
    ev_kw = dict(data_root=str(data_root / "medmnist"), download=False, split="val", limit=16, batch_size=16,
                 amp=False, tsne=False, mlflow_tracking_uri=f"sqlite:///{tmp_path}/eval.db")
    ev = _run(bundle, ["evaluate.json"], model_dir=str(d1 / "model"), output_dir=str(tmp_path / "ev1"), **ev_kw)
    assert Path(ev.parser.get_parsed_content("model_dir")) == d1 / "model"
    # one epoch: the best weights are the last ones, validated on the same 16 images: the same answers and
    # probabilities, image by image
    assert (tmp_path / "ev1" / "predictions.csv").read_text() == (d1 / "val" / "predictions.csv").read_text()
    # and with no --model_dir it scores the latest finished run (the baseline)
    _run(bundle, ["evaluate.json"], output_dir=str(tmp_path / "ev2"), **ev_kw)
    assert (tmp_path / "ev2" / "predictions.csv").read_text() == (d2 / "val" / "predictions.csv").read_text()
    assert (tmp_path / "ev2" / "predictions.csv").read_text() != (d1 / "val" / "predictions.csv").read_text()

    # MLflow: training runs tagged (code version, seed, library versions) and FINISHED; the evaluation run names
    # the training run of the model it scored (provenance.json in the model folder)
    from mlflow.tracking import MlflowClient

    train_runs = {r.info.run_name: r for e in MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").search_experiments()
                  for r in MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").search_runs([e.experiment_id])}
    first_run = train_runs[d1.name]
    assert first_run.info.status == "FINISHED" and train_runs[d2.name].info.status == "FINISHED"
    tags = first_run.data.tags
    assert tags["seed"] == "0" and tags["task"] == "train" and tags["version.torch"] == torch.__version__
    assert len(tags["mlflow.source.git.commit"]) in (40, len("unknown"))
    prov = json.loads((d1 / "model" / "provenance.json").read_text())
    assert prov["run_id"] == first_run.info.run_id
    ev_client = MlflowClient(f"sqlite:///{tmp_path}/eval.db")
    ev_runs = [r for e in ev_client.search_experiments() for r in ev_client.search_runs([e.experiment_id])]
    linked = {r.data.tags.get("training_run_id") for r in ev_runs}
    assert first_run.info.run_id in linked and train_runs[d2.name].info.run_id in linked
    assert all(r.info.status == "FINISHED" and r.data.tags["task"] == "evaluate" for r in ev_runs)


def test_network_state_reads_both_checkpoint_forms(tmp_path):
    """network_state: the "network" entry of a CheckpointSaver file, or a bare state dict as it is."""
    from attok_monai.bundle.runs import network_state

    weights = torch.nn.Linear(2, 3).state_dict()
    torch.save({"network": weights, "optimizer": {"state": {}}}, tmp_path / "saver.pt")
    torch.save(weights, tmp_path / "bare.pt")
    for name in ("saver.pt", "bare.pt"):
        _assert_same_state(network_state(tmp_path / name), weights)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_checkpoints_kept_refuses_what_is_not_a_count(value):
    from attok_monai.bundle.runs import checkpoints_kept
    from attok_monai.errors import InputError

    assert checkpoints_kept(3) == 3
    with pytest.raises(InputError, match="checkpoints_kept: expected a whole number >= 1"):
        checkpoints_kept(value)


def test_failed_run_is_marked_failed(bundle, data_root, tmp_path):
    from ignite.engine import Events
    from mlflow.tracking import MlflowClient

    files = str(bundle / "configs" / "train.json")
    wf = ConfigWorkflow(config_file=files, workflow_type="train", bundle_root=str(bundle),
                        **_overrides(data_root, tmp_path, epochs=1))
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")

    def boom(engine):
        raise RuntimeError("disk full")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), boom)
    with pytest.raises(RuntimeError) as err:  # MONAI wraps it in "Failed to evaluate ConfigExpression"
        wf.run()
    assert "disk full" in str(err.value.__cause__ or err.value.__context__)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert [r.info.status for r in runs] == ["FAILED"] and "disk full" in runs[0].data.tags["error"]


def test_training_part_smaller_than_a_batch_is_refused_before_the_run_folder(bundle, data_root, tmp_path):
    """With the last partial batch dropped, 12 items at batch_size 16 give no batch: ignite would skip the run and
    the run would end "successfully" with no model. Refused at start-up, before the run folder is written; no
    latest.json."""
    from attok_monai.errors import InputError

    out = tmp_path / "runs" / "small"
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "train.json"), workflow_type="train",
                        bundle_root=str(bundle), **_overrides(data_root, tmp_path, limit_train=12, output_dir=str(out)))
    with pytest.raises(Exception) as err:
        wf.initialize()
    cause = err.value
    while cause is not None and not isinstance(cause, InputError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and str(cause).startswith("train: 12 training item(s) at batch_size 16 make no full")
    assert "set --batch_size 12 or lower" in str(cause)
    assert not out.exists() and not (out.parent / "latest.json").exists()


def test_start_run_checks_before_it_writes_and_writes_only_what_it_is_told(tmp_path):
    """start_run: a loader with no batch is refused with nothing written; a new run gets the config snapshot and
    settings.json; a resumed run (record=False) only the snapshot; a DDP rank other than zero (write=False) nothing."""
    from attok_monai.bundle.runs import SETTINGS_FILE, start_run
    from attok_monai.errors import InputError

    bundle = REPO / "bundles" / "fundus_dr"
    settings = {"seed": 0}
    empty = torch.utils.data.DataLoader(list(range(3)), batch_size=4, drop_last=True)
    full = torch.utils.data.DataLoader(list(range(8)), batch_size=4, drop_last=True)
    with pytest.raises(InputError, match=r"^train: 3 training item\(s\) at batch_size 4 make no full batch"):
        start_run(tmp_path / "refused", bundle, settings, empty, [object()])
    assert not (tmp_path / "refused").exists()
    assert start_run(tmp_path / "new", bundle, settings, full, [object()]) == 2
    assert json.loads((tmp_path / "new" / SETTINGS_FILE).read_text()) == settings
    assert (tmp_path / "new" / "configs" / "train.json").is_file()
    start_run(tmp_path / "resumed", bundle, settings, full, record=False)
    assert (tmp_path / "resumed" / "configs").is_dir() and not (tmp_path / "resumed" / SETTINGS_FILE).exists()
    start_run(tmp_path / "rank1", bundle, settings, full, write=False)
    assert not (tmp_path / "rank1").exists()


def test_publish_latest_refuses_a_run_without_a_model(tmp_path):
    """A run folder with no model/model.pt never becomes latest.json's model: the old pointer stays."""
    from attok_monai.bundle.runs import publish_latest
    from attok_monai.errors import InputError

    pointer = tmp_path / "runs" / "latest.json"
    done, empty = tmp_path / "runs" / "done", tmp_path / "runs" / "empty"
    (done / "model").mkdir(parents=True)
    (done / "model" / "model.pt").write_bytes(b"x")
    (empty / "configs").mkdir(parents=True)
    publish_latest(pointer, done, run_name="done")
    before = pointer.read_text()
    with pytest.raises(InputError, match=r"^train: .*empty holds no model/model.pt .* is left as it was\.$"):
        publish_latest(pointer, empty, run_name="empty")
    assert pointer.read_text() == before and json.loads(before)["model_dir"] == "done/model"


def test_same_seed_same_model_whatever_is_validated_or_plotted(bundle, data_root, tmp_path):
    a = _run(bundle, ["train.json"], **_overrides(data_root, tmp_path, tsne=True, val_batch_size=16, checkpoints_kept=2))
    b = _run(bundle, ["train.json"], **_overrides(data_root, tmp_path, tsne=False, val_batch_size=5, limit_val=10))
    da, db = Path(a.parser.get_parsed_content("output_dir")), Path(b.parser.get_parsed_content("output_dir"))
    assert da != db
    # checkpoints_kept: the first run keeps both epochs' checkpoints, the default only the newest
    assert sorted(p.name for p in (da / "checkpoints").glob("checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert [p.name for p in (db / "checkpoints").glob("checkpoint_epoch=*.pt")] == ["checkpoint_epoch=2.pt"]
    _assert_same_state(_network_state(da / "checkpoints" / "checkpoint_epoch=2.pt"),
                       _network_state(db / "checkpoints" / "checkpoint_epoch=2.pt"))
    settings = json.loads((da / "settings.json").read_text())
    assert settings["seed"] == 0 and settings["torch_version"] == torch.__version__
    # logged with the hyperparameters, not checked on resume (a run may resume on another machine)
    assert not {"torch_threads", "cpu_model", "cpu_capability", "cpu_kernel_pins"} & set(settings)
    assert {"monai_version", "transformers_version", "peft_version"} <= set(settings)


_KILL = textwrap.dedent("""
    import os, sys
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    torch.set_num_threads(1)
    bundle, kill_at, overrides = sys.argv[1], int(sys.argv[2]), __import__("json").loads(sys.argv[3])
    wf = ConfigWorkflow(config_file=os.path.join(bundle, "configs", "train.json"), workflow_type="train",
                        bundle_root=bundle, **overrides)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=kill_at), lambda e: os._exit(3))
    wf.run()
""")


def test_killed_run_resumed_equals_uninterrupted(bundle, data_root, tmp_path):
    kw = _overrides(data_root, tmp_path)
    whole = _run(bundle, ["train.json"], **kw)
    d_whole = Path(whole.parser.get_parsed_content("output_dir"))
    # a second run killed in the middle of epoch 2 (after epoch 1's checkpoint, one iteration into epoch 2)
    killed_dir = bundle / "runs" / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL, str(bundle), "4", json.dumps({**kw, "run_name": "killed"})],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # as this process (bit-equal sums)
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert (killed_dir / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    assert not (killed_dir / "model").exists()
    resumed = _run(bundle, ["train.json"], **kw, resume="killed")
    assert Path(resumed.parser.get_parsed_content("output_dir")) == killed_dir
    assert resumed.parser.get_parsed_content("train#trainer").state.iteration == 6
    _assert_same_state(_network_state(d_whole / "checkpoints" / "checkpoint_epoch=2.pt"),
                       _network_state(killed_dir / "checkpoints" / "checkpoint_epoch=2.pt"))
    assert _val_metrics(killed_dir) == _val_metrics(d_whole)

    # a resume with other settings is refused, naming the keys that differ
    with pytest.raises(Exception) as err:
        _run(bundle, ["train.json"], **{**kw, "epochs": 3, "lr": 0.002}, resume="latest")
    text = "".join(str(e) for e in (err.value, err.value.__cause__, err.value.__context__) if e is not None)
    assert "other settings" in text and "epochs: 2 -> 3" in text and "lr: 0.001 -> 0.002" in text


def test_resume_and_none_values(tmp_path):
    for v in (None, False, "none", "None", "null", "", "false"):
        assert optional(v) is None and resume_dir(v, tmp_path) is None
    assert optional("runs/x") == "runs/x"
    with pytest.raises(FileNotFoundError, match="no run folder"):
        resume_dir("latest", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        resume_dir("nope", tmp_path)
    (tmp_path / "runs" / "a" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        resume_dir("a", tmp_path)
    (tmp_path / "runs" / "a" / "checkpoints" / "checkpoint_epoch=3.pt").write_bytes(b"x")
    assert resume_dir("latest", tmp_path) == str(tmp_path / "runs" / "a")
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        latest_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        latest_model_dir(tmp_path, "none")  # "none" means: not given
    assert latest_model_dir(tmp_path, "x/model") == "x/model"
    s = run_settings({"seed": 1, "device_name": "cpu (2 cores)", "t": (1, 2)}, val_interval=1)
    assert s == {"seed": 1, "t": [1, 2], "val_interval": 1}


def test_short_cli_keeps_none_strings():
    from attok_monai.bundle.cli import bundle_run_args

    kw = bundle_run_args(["--config", str(SRC), "evaluate", "--checkpoint", "none", "--limit", "None"])
    assert kw["checkpoint"] == "none" and kw["limit"] is None


def test_cpu_model_tells_cpu_kinds_apart(tmp_path):
    """Two CPU kinds sold under one name (AMD EPYC) gave a generalist different weights: the name carries the family
    and model numbers of the first processor; a name alone is kept; no cpuinfo falls back to the platform's."""
    from attok_monai.provenance import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n\n"
                    "processor\t: 1\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\n")
    assert cpu_model(info) == "AMD EPYC (family 25, model 1)"
    info.write_text("model name\t: ARMv8 Processor\n")
    assert cpu_model(info) == "ARMv8 Processor"
    assert cpu_model(tmp_path / "absent")  # platform.processor() or "unknown"


def test_cpu_kernel_pins_names_the_code_path_variables_that_are_set():
    """The variables that pin torch's, MKL's and oneDNN's CPU code paths change a model's bits: the ones set are
    logged in a fixed order, empty ones are not, and none set reads "none"."""
    from attok_monai.provenance import cpu_kernel_pins

    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "", "PATH": "/bin",
           "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert cpu_kernel_pins(env) == "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"
    assert cpu_kernel_pins({"PATH": "/bin"}) == "none"


def test_make_train_pins_the_same_code_paths_as_the_benchmarks():
    """`make train` (the README's main job), `make generalist` and `benchmarks/bench_bundles.py --kernels avx2` must
    pin the same variables to the same values, or the README's figure, the generalist and the benchmark rows come from
    different code paths."""
    import re

    from attok_monai.provenance import AVX2_KERNEL_PINS

    makefile = (REPO / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("KERNEL_PINS ?="))
    assert dict(re.findall(r"([A-Z_]+)=(\S+?)\)?(?=\s|$)", line.split("x86_64 amd64", 1)[1])) == AVX2_KERNEL_PINS
    assert re.search(r"^train:.*\n\t\$\(KERNEL_PINS\) ", makefile, re.M)
    # `make generalist` (the README's one command for the docs' generalist E): one thread and the same pins
    recipe = re.search(r"^generalist:[^\n]*\n\t(.*?)\n\n", makefile, re.M | re.S).group(1)
    assert "OMP_NUM_THREADS=1 " in recipe and "$(KERNEL_PINS) " in recipe
    assert "--config bundles/compact_generalist --output_dir runs/generalist" in recipe.replace("\\\n\t\t", "")
