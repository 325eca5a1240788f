"""End-to-end: the fundus_dr bundle trains a few iterations on real RetinaMNIST, logs to MLflow, saves a model that
reloads to identical predictions (resuming: tests/test_runs.py), and evaluates/infers from the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import REPO, require

BUNDLE = REPO / "bundles" / "fundus_dr"
CONFIGS = BUNDLE / "configs"


def _workflow(config: str | list[str], tmp: Path, **overrides) -> ConfigWorkflow:
    files = [str(CONFIGS / c) for c in ([config] if isinstance(config, str) else config)]
    wf = ConfigWorkflow(
        config_file=files[0] if len(files) == 1 else files,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train" if Path(files[0]).name.startswith("train") else "infer",
        bundle_root=str(BUNDLE),
        mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db",
        **overrides,
    )
    wf.initialize()
    return wf


def _train_overrides(tmp: Path, data_root: Path, **kw) -> dict:
    base = dict(
        data_root=str(data_root / "medmnist"), download=False, epochs=2, batch_size=16, val_batch_size=32,
        limit_train=96, limit_val=24, output_dir=str(tmp / "run"), ckpt_dir=str(tmp / "models"), amp=False,
    )
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    require(data_root / "medmnist" / "retinamnist.npz")
    tmp = tmp_path_factory.mktemp("fundus")
    wf = _workflow("train.json", tmp, **_train_overrides(tmp, data_root))
    wf.run()
    wf.finalize()
    return tmp, wf


def test_training_logs_params_metrics_artifacts(trained):
    from mlflow.tracking import MlflowClient

    tmp, wf = trained
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    exp = client.get_experiment_by_name("attok_fundus_dr")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    p = run.data.params
    assert p["use_acc"] == "True" and p["use_acm"] == "True" and p["dataset"] == "retinamnist"
    assert "<|fundus_severenpdr|>" in p["vocabulary"] and len(p["data_md5"]) == 32
    assert p["lr"] == "0.001" and "device_name" in p
    for key in ("loss", "ntp", "acm", "lambda", "val_open_accuracy", "val_closed_accuracy", "val_auc",
                "samples_per_s"):
        assert key in run.data.metrics, key
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    arts |= {a.path for d in ("val", "model", "configs") for a in client.list_artifacts(run.info.run_id, d)}
    for name in ("val/metrics.json", "val/confusion_matrix.png", "val/per_class.csv", "val/tsne.png",
                 "val/predictions.csv", "model/model.pt", "model/vocabulary.json", "configs/train.json"):
        assert name in arts, name
    # the NTP loss goes down over the 12 iterations
    ntp = [m.value for m in client.get_metric_history(run.info.run_id, "ntp")]
    assert len(ntp) == 12
    assert np.mean(ntp[-3:]) < ntp[0] - 0.5
    lam = [m.value for m in client.get_metric_history(run.info.run_id, "lambda")]
    assert lam[0] == 1.0 and lam[-1] < lam[0]
    metrics = json.loads((tmp / "run" / "val" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 24 and 0 <= metrics["open_accuracy"] <= 1


def test_predictions_csv_carries_the_retrieval_scores(trained):
    """val/predictions.csv has one ``retrieval_<attribute>`` column per attribute (the book retrieval's cosine
    scores), whose argmax per row reproduces metrics.json's retrieval accuracy."""
    import csv

    tmp, wf = trained
    with open(tmp / "run" / "val" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    vocab = wf.parser.get_parsed_content("vocabulary")
    names = [a.name for a in vocab]
    assert rows and all(f"retrieval_{n}" in rows[0] for n in names)
    scores = np.array([[float(r[f"retrieval_{n}"]) for n in names] for r in rows])
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)  # cosines
    labels = [vocab.names.index(r["label"]) for r in rows]  # the label column holds the clinical names
    acc = float(np.mean(scores.argmax(1) == labels))
    metrics = json.loads((tmp / "run" / "val" / "metrics.json").read_text())["metrics"]
    assert acc == pytest.approx(metrics["retrieval_accuracy"])


def test_saved_model_gives_identical_predictions(trained, data_root):
    from attok_monai.bundle.model_folder import load_pretrained
    from attok_monai.data.medmnist import medmnist_datalist, medmnist_transforms

    tmp, wf = trained
    net = wf.parser.get_parsed_content("network").eval()
    again = load_pretrained(tmp / "run" / "model")
    items = medmnist_datalist(data_root / "medmnist" / "retinamnist.npz", "val", limit=8)
    tf = medmnist_transforms(size=28)
    x = torch.stack([tf(i)["image"] for i in items])
    q = ["what is the diagnosis of this fundus image?"] * 8
    assert torch.equal(net.class_probabilities(x, q), again.class_probabilities(x, q))
    assert net.generate(x, q) == again.generate(x, q)
    assert (tmp / "models" / "model_best.pt").exists()  # ckpt_dir is overridden to tmp/models here
    assert (tmp / "run" / "model" / "templates.json").exists()


def test_evaluate_and_inference_from_saved_model(trained, data_root, tmp_path):
    from PIL import Image

    tmp, _ = trained
    ev = _workflow("evaluate.json", tmp, data_root=str(data_root / "medmnist"), download=False, split="val",
                   limit=16, model_dir=str(tmp / "run" / "model"),
                   checkpoint=str(tmp / "models" / "model_best.pt"), output_dir=str(tmp_path / "eval"), tsne=False)
    ev.run()
    ev.finalize()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 16
    from attok_monai.data.medmnist import SplitNotFoundError, medmnist_datalist

    with pytest.raises(SplitNotFoundError, match="split 'test'"):
        medmnist_datalist(data_root / "medmnist" / "retinamnist.npz", "test")
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(img_dir / f"img{i}.png")
    out = tmp_path / "pred.csv"
    inf = _workflow("inference.json", tmp, input_dir=str(img_dir), output_file=str(out),
                    model_dir=str(tmp / "run" / "model"), checkpoint=str(tmp / "models" / "model_best.pt"))
    inf.run()
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("id,file,question,answer,attribute,diagnosis,probability")
    assert lines[1].startswith("img0.png,")


def test_chest_radiographs_and_slide_tiles_are_flagged_out_of_domain(trained, data_root, tmp_path):
    """The domain threshold set on the validation part at the end of training flags real images of other modalities
    (PneumoniaMNIST chest radiographs, LC25000 lung slide tiles) and passes held-out fundus photographs."""
    import csv
    import glob

    from PIL import Image

    require(data_root / "medmnist" / "pneumoniamnist.npz")
    tmp, _ = trained
    model_dir = tmp / "run" / "model"
    assert json.loads((model_dir / "domain.json").read_text())["num_images"] == 24  # limit_val
    folder = tmp_path / "mixed"
    folder.mkdir()
    retina = np.load(data_root / "medmnist" / "retinamnist.npz")["train_images"][400:420]  # not trained on
    chest = np.load(data_root / "medmnist" / "pneumoniamnist.npz")["val_images"][:20]
    for i in range(20):
        Image.fromarray(retina[i]).save(folder / f"fundus_{i:02d}.png")
        Image.fromarray(chest[i]).save(folder / f"chest_{i:02d}.png")
    tiles = sorted(glob.glob(str(data_root / "lc25000_lung" / "images" / "**" / "*.jp*g"), recursive=True))[:10]
    for i, f in enumerate(tiles):
        Image.open(f).convert("RGB").resize((64, 64)).save(folder / f"tile_{i:02d}.png")
    out = tmp_path / "pred.csv"
    inf = _workflow("inference.json", tmp, input_dir=str(folder), output_file=str(out), model_dir=str(model_dir),
                    checkpoint=str(tmp / "models" / "model_best.pt"))
    inf.run()
    rows = list(csv.DictReader(out.open()))
    flagged = {kind: np.mean([r["in_domain"] == "False" for r in rows if r["file"].startswith(kind)])
               for kind in ("fundus", "chest", "tile")}
    print(f"\nout-of-domain share flagged: {flagged}")
    assert flagged["chest"] >= 0.9 and flagged["fundus"] <= 0.2, flagged
    if tiles:
        assert flagged["tile"] >= 0.9, flagged


def test_metadata_has_required_keys():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert {"inputs", "outputs"} <= set(meta["network_data_format"])


def test_short_cli_resolves_same_config_as_monai_cli(monkeypatch):
    from monai.bundle import ConfigParser

    from attok_monai.bundle.cli import bundle_run_args

    kwargs = bundle_run_args(["--config", str(BUNDLE), "train", "--epochs", "3", "--lr", "0.01"])
    assert kwargs["config_file"] == str(CONFIGS / "train.json")
    assert kwargs["meta_file"] == str(CONFIGS / "metadata.json")
    assert kwargs["logging_file"] == str(CONFIGS / "logging.conf")
    assert kwargs["epochs"] == 3 and kwargs["lr"] == 0.01
    short = ConfigParser()
    short.read_config(kwargs["config_file"])
    short.update({k: v for k, v in kwargs.items() if k not in ("config_file", "meta_file", "logging_file")})
    monkeypatch.setattr("sys.argv", ["monai.bundle", "run", "--config_file", str(CONFIGS / "train.json")])
    long = ConfigParser()
    long.read_config(str(CONFIGS / "train.json"))
    long.update({"epochs": 3, "lr": 0.01})
    assert short.get_parsed_content("bundle_root") == long.get_parsed_content("bundle_root") == str(BUNDLE)
    for key in ("epochs", "lr", "attributes", "open_questions", "vision", "llm"):
        assert short.get_parsed_content(key) == long.get_parsed_content(key)
    with pytest.raises(ValueError, match="not a MONAI bundle"):
        bundle_run_args(["--config", str(REPO / "docs")])
    assert bundle_run_args(["--config", str(BUNDLE), "evaluate", "--extra", "baseline"])["config_file"] == [
        str(CONFIGS / "evaluate.json"), str(CONFIGS / "baseline.json")]
