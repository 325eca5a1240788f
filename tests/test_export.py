"""Export and serving of a trained model: the image-only entry point (AttributeClassifier) passes MONAI's
``verify_net_in_out`` and exports with ``ckpt_export`` (TorchScript) and ``onnx_export`` through the bundle's
``configs/export.json`` (exported == eager within tolerance), and training logs an MLflow Model that
``mlflow.pyfunc.load_model`` loads back and that answers a real RetinaMNIST image."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import REPO, require

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUNDLE = REPO / "bundles" / "fundus_dr"
CONFIGS = BUNDLE / "configs"
CLASSIFICATION_BUNDLES = ("derma_isic", "fundus_dr", "oct_retina", "pathology_crc", "pathology_lung", "xray_pneumonia")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """fundus_dr trained for 2 iterations, MLflow in a tmp sqlite store (artifacts under tmp: MLflow puts them
    under the working directory)."""
    require(data_root / "medmnist" / "retinamnist.npz")
    tmp = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        wf = ConfigWorkflow(
            config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"), workflow_type="train", bundle_root=str(BUNDLE),
            mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db", data_root=str(data_root / "medmnist"), download=False,
            epochs=1, batch_size=16, val_batch_size=16, limit_train=32, limit_val=16, tsne=False, amp=False,
            output_dir=str(tmp / "run"), ckpt_dir=str(tmp / "run" / "checkpoints"),
            latest_pointer=str(tmp / "latest.json"),
        )
        env_before = os.environ.get("MLFLOW_TRACKING_URI")
        wf.initialize()
        wf.run()
        wf.finalize()
        env_after = os.environ.get("MLFLOW_TRACKING_URI")
        yield SimpleNamespace(tmp=tmp, model_dir=tmp / "run" / "model", workflow=wf, env=(env_before, env_after))


def _images(data_root: Path, n: int = 4) -> torch.Tensor:
    from attok_monai.data.medmnist import medmnist_datalist, medmnist_transforms

    tf = medmnist_transforms(size=28)
    items = medmnist_datalist(data_root / "medmnist" / "retinamnist.npz", "val", limit=n)
    return torch.stack([torch.as_tensor(tf(i)["image"]) for i in items]).float()


def _export_args(trained) -> dict:
    """What a user passes: the bundle's export config and metadata, the bundle root and the model folder."""
    return dict(
        net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "export.json"),
        bundle_root=str(BUNDLE), model_dir=str(trained.model_dir),
    )


# ------------------------------------------------------------------------------------------------ entry point
def test_entry_point_matches_class_probabilities(trained, data_root):
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.networks.nets import AttributeClassifier, AttTokGPTv

    model = AttTokGPTv.from_pretrained(trained.model_dir)
    question = InstructionTemplates.from_json(str(trained.model_dir / "templates.json")).question("open")
    net = AttributeClassifier(model, question).eval()
    assert set(net.state_dict()) == set(model.state_dict())  # model.pt loads into the entry point unchanged
    x = _images(data_root)
    with torch.no_grad():
        probs = net(x)
    assert probs.shape == (4, 5) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    torch.testing.assert_close(probs, model.class_probabilities(x, [question] * 4), atol=1e-5, rtol=1e-4)


def test_plain_text_baseline_scores_the_clinical_names_and_traces():
    """Without attribute tokens the entry point scores the K clinical names in one batch of B*K rows, as
    ``class_probabilities`` does; the trace generalises to another batch size."""
    from attok_monai.attributes import AttributeVocabulary
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.networks.builders import build_compact_attok
    from attok_monai.networks.nets import AttributeClassifier

    vocab = AttributeVocabulary.coerce({"modality": "fundus", "labels": {
        "0": {"concept": "nodr", "keywords": ["no diabetic retinopathy"]}, "1": {"concept": "pdr", "keywords": ["pdr"]},
        "2": {"concept": "mild", "keywords": ["mild npdr"]}}})
    templates = InstructionTemplates("fundus", vocab.names)
    model = build_compact_attok(vocab, templates, seed=0, use_attribute_tokens=False, llm={"num_hidden_layers": 1})
    model.eval()
    net = AttributeClassifier(model, templates.question("open")).eval()
    x = torch.rand(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = net(x)
        traced = torch.jit.trace(net, torch.rand(1, 3, 28, 28))
        torch.testing.assert_close(traced(x), probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs, model.class_probabilities(x, [templates.question("open")] * 3), atol=1e-5,
                               rtol=1e-4)


def test_merging_backbone_is_refused_with_the_reason():
    from attok_monai.networks.nets import AttributeClassifier

    with pytest.raises(NotImplementedError, match="image processor"):
        AttributeClassifier(SimpleNamespace(merges_visual=True), "what is shown?")


# ------------------------------------------------------------------------------------------------ MONAI bundle
def test_export_config_in_every_classification_bundle():
    """One export config, the same in every classification bundle; metadata declares the ``pred`` output that
    ``verify_net_in_out`` checks, with the class count."""
    reference = (CONFIGS / "export.json").read_text()
    for name in CLASSIFICATION_BUNDLES:
        configs = REPO / "bundles" / name / "configs"
        assert (configs / "export.json").read_text() == reference, name
        fmt = json.loads((configs / "metadata.json").read_text())["network_data_format"]
        assert fmt["outputs"]["pred"]["num_channels"] == fmt["outputs"]["probabilities"]["num_channels"], name
        assert fmt["outputs"]["pred"]["dtype"] == "float32" and fmt["inputs"]["image"]["dtype"] == "float32"


def test_verify_net_in_out(trained):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(**_export_args(trained))  # raises on a wrong channel count or dtype
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(**_export_args(trained), **{"_meta_#network_data_format#outputs#pred#num_channels": 4})


def test_torchscript_export_round_trip(trained, data_root):
    from monai.bundle import ckpt_export
    from monai.data import load_net_with_metadata

    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.networks.nets import AttributeClassifier, AttTokGPTv

    out = trained.tmp / "model.ts"
    ckpt_export(**_export_args(trained), filepath=str(out), ckpt_file=str(trained.model_dir / "model.pt"),
                use_trace=True)
    ts, meta, extra = load_net_with_metadata(str(out), more_extra_files=("export.json",))
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 5 and "export.json" in extra
    question = InstructionTemplates.from_json(str(trained.model_dir / "templates.json")).question("open")
    eager = AttributeClassifier(AttTokGPTv.from_pretrained(trained.model_dir), question).eval()
    x = _images(data_root)  # traced with batch 1 (metadata input shape), run with batch 4
    with torch.no_grad():
        torch.testing.assert_close(ts(x), eager(x), atol=1e-5, rtol=1e-4)
    # the run's best checkpoint (MONAI CheckpointSaver, key "network") loads too: the model folder holds those weights
    best = trained.tmp / "best.ts"
    ckpt_export(**_export_args(trained), filepath=str(best), use_trace=True, key_in_ckpt="network",
                ckpt_file=str(trained.tmp / "run" / "checkpoints" / "model_best.pt"))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(best))(x), eager(x), atol=1e-5, rtol=1e-4)


def test_onnx_export_round_trip(trained, data_root):
    pytest.importorskip("onnx")  # dev extras: onnx, onnxruntime
    onnxruntime = pytest.importorskip("onnxruntime")
    from monai.bundle import onnx_export

    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.networks.nets import AttributeClassifier, AttTokGPTv

    out = trained.tmp / "model.onnx"
    onnx_export(
        **_export_args(trained), filepath=str(out), ckpt_file=str(trained.model_dir / "model.pt"), use_trace=True,
        converter_kwargs={"dynamo": False, "input_names": ["image"], "output_names": ["pred"],
                          "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}}},
    )
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _images(data_root)
    (onnx_probs,) = session.run(None, {"image": x.numpy()})
    question = InstructionTemplates.from_json(str(trained.model_dir / "templates.json")).question("open")
    eager = AttributeClassifier(AttTokGPTv.from_pretrained(trained.model_dir), question).eval()
    with torch.no_grad():
        np.testing.assert_allclose(onnx_probs, eager(x).numpy(), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ MLflow Model
def test_training_logs_an_mlflow_model_that_answers_an_image(trained, data_root):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.engines.inference import inference_transforms
    from attok_monai.mlflow_model import encode_image, use_tracking_uri
    from attok_monai.networks.nets import AttTokGPTv

    # logging the model left MLflow's tracking URI as it was (MONAI's MLFlowHandler obeys MLFLOW_TRACKING_URI, so a
    # leaked value would send the next training run of this process to this store)
    assert trained.env[0] == trained.env[1]
    uri = f"sqlite:///{trained.tmp}/mlruns.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("attok_fundus_dr")
    (run,) = client.search_runs([exp.experiment_id])
    (logged,) = client.search_logged_models([exp.experiment_id])
    assert logged.source_run_id == run.info.run_id and logged.name == "mlflow_model"
    assert logged.params["dataset"] == "retinamnist"  # the run's parameters travel with the model

    npz = np.load(data_root / "medmnist" / "retinamnist.npz")
    png = trained.tmp / "val0.png"
    Image.fromarray(npz["val_images"][0]).save(png)
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    with use_tracking_uri(uri):
        pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/mlflow_model")
        version = mlflow.register_model(f"models:/{logged.model_id}", "attok_fundus_dr")  # the registry holds it
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # nothing leaks into later runs of this process
    assert int(version.version) == 1 and version.status == "READY"
    assert [c.name for c in pyfunc.metadata.get_input_schema().inputs] == ["image", "question"]
    out = pyfunc.predict(pd.DataFrame({"image": [encode_image(png)]}))
    assert len(out) == 1
    row = out.iloc[0]
    p_cols = [c for c in out.columns if c.startswith("p_fundus_")]
    assert len(p_cols) == 5 and abs(sum(row[c] for c in p_cols) - 1) < 1e-4
    assert isinstance(row["answer"], str) and row["question"] == "what is the diabetic retinopathy grade of this fundus image?"
    # the same numbers as the model folder scored directly on the same preprocessed image (on the pyfunc's device)
    device = pyfunc.unwrap_python_model().device
    model = AttTokGPTv.from_pretrained(trained.model_dir).to(device)
    x = torch.as_tensor(inference_transforms(28)({"image": str(png)})["image"]).float()[None].to(device)
    templates = InstructionTemplates.from_json(str(trained.model_dir / "templates.json"))
    expected = model.class_probabilities(x, [templates.question("open")])[0].cpu()
    np.testing.assert_allclose([row[c] for c in p_cols], expected.numpy(), atol=1e-5)
    assert row["answer"] == model.generate(x, [templates.question("open")])[0]
    # a question column asks another question
    other = pyfunc.predict(pd.DataFrame({"image": [encode_image(png)], "question": ["what is the diagnosis of this fundus image?"]}))
    assert other.iloc[0]["question"] == "what is the diagnosis of this fundus image?"
    assert os.path.isdir(trained.tmp / "mlruns")  # MLflow's artifacts stayed in the tmp folder
