"""ACC attention maps and one-pass screening (issue 19): each map sums to one over the image and moves with the image
content; inference writes one PNG per image on request; the validation sheet lands in the run folder (and so in
MLflow); screening answers from one forward with the same probabilities as the generating command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attok_monai.engines.attention_maps import attention_maps, save_attention_maps
from tests.conftest import REPO, require

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.networks.builders import build_compact_attok

    vocab = {"modality": "fundus", "labels": {str(i): {"concept": f"c{i}", "keywords": [f"grade {i}"]}
                                              for i in range(3)}}
    templates = InstructionTemplates("fundus", ["grade 0", "grade 1", "grade 2"], ["what is this {modality} image?"],
                                     ["is it {options}?"])
    net = build_compact_attok(vocab, templates, vision={"arch": "resnet", "in_channels": 3, "img_size": 32, "grid": 4},
                              llm={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 64}, seed=0, gamma=0.1)
    with torch.no_grad():  # a book whose prototypes differ and sharper queries, as after training (at random
        net.book.update_prototypes(torch.randn(3, 16, 64), torch.tensor([0, 1, 2]))  # init attention is ~uniform)
        net.acc.q_proj.weight.mul_(30.0)
    return net.eval()


def test_maps_sum_to_one_and_move_with_the_content(model):
    torch.manual_seed(0)
    img = torch.zeros(1, 3, 32, 32)
    img[:, :, 2:14, 2:14] = torch.rand(1, 3, 12, 12)  # a textured patch in the top-left quarter
    moved = torch.roll(img, shifts=(16, 16), dims=(2, 3))  # the same patch in the bottom-right quarter
    maps, attrs = attention_maps(model, torch.cat([img, moved]), [1, 1])
    assert maps.shape == (2, 32, 32) and attrs.tolist() == [1, 1]
    assert torch.allclose(maps.sum((1, 2)), torch.ones(2), atol=1e-5) and bool((maps >= 0).all())
    assert not torch.allclose(maps[0], maps[1])
    # the map of the moved image is the moved map (up to the borders), not the original one
    rolled = torch.roll(maps[0], shifts=(16, 16), dims=(0, 1))

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    # (measured: 0.55 with the moved map, -0.16 with the unmoved one; the ResNet's zero padding breaks exactness)
    assert corr(maps[1], rolled) > 0.4 and corr(maps[1], rolled) > corr(maps[1], maps[0]) + 0.3
    # predicted attribute by default
    _, auto = attention_maps(model, img)
    assert auto.shape == (1,) and 0 <= int(auto) < 3


def test_save_sheet(model, tmp_path):
    imgs = torch.rand(3, 3, 32, 32)
    maps, _ = attention_maps(model, imgs, [0, 1, 2])
    save_attention_maps(imgs, maps, ["a", "b", "c"], tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_no_acc_says_so(model):
    from attok_monai.networks.builders import build_compact_attok

    net = build_compact_attok(model.vocabulary, _templates(), vision={"arch": "resnet", "in_channels": 3,
                              "img_size": 32, "grid": 4}, llm={"hidden_size": 64, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "intermediate_size": 64}, use_acc=False)
    with pytest.raises(ValueError, match="no ACC adapter"):
        attention_maps(net, torch.rand(1, 3, 32, 32))


def _templates():
    from attok_monai.data.instructions import InstructionTemplates

    return InstructionTemplates("fundus", ["grade 0", "grade 1", "grade 2"], ["what is this {modality} image?"],
                                ["is it {options}?"])


def test_bundle_writes_validation_sheet_and_inference_maps(tmp_path, data_root):
    """A tiny fundus run writes val/attention_maps.png; inference --save_maps writes one PNG per image named in the
    answers; the baseline (no ACC) trains with the sheet disabled."""
    import json

    from monai.bundle import ConfigWorkflow
    from PIL import Image

    require(data_root / "medmnist" / "retinamnist.npz")
    configs = REPO / "bundles" / "fundus_dr" / "configs"
    common = dict(bundle_root=str(REPO / "bundles" / "fundus_dr"), mlflow_tracking_uri=f"sqlite:///{tmp_path}/m.db")
    train = dict(data_root=str(data_root / "medmnist"), download=False, epochs=1, batch_size=16, limit_train=32,
                 limit_val=16, amp=False, tsne=False, **common)
    for extra, out in (([], "run"), (["baseline.json"], "base")):
        files = [str(configs / "train.json")] + [str(configs / e) for e in extra]
        wf = ConfigWorkflow(config_file=files if extra else files[0], workflow_type="train",
                            output_dir=str(tmp_path / out), **train)
        wf.initialize()
        wf.run()
        wf.finalize()
    assert (tmp_path / "run" / "val" / "attention_maps.png").is_file()
    temp = json.loads((tmp_path / "run" / "model" / "temperature.json").read_text())  # fitted on validation
    assert temp["temperature"] > 0 and temp["num_images"] == 16 and "ece_after" in temp
    assert not (tmp_path / "base" / "val" / "attention_maps.png").exists()
    # book retrieval is scored only where attribute tokens were trained: the baseline's metrics have none
    run_m, base_m = (json.loads((tmp_path / r / "val" / "metrics.json").read_text())["metrics"] for r in ("run", "base"))
    assert 0.0 <= run_m["retrieval_accuracy"] <= 1.0 and "open_accuracy" in base_m
    assert not any(k.startswith("retrieval") for k in base_m)
    folder = tmp_path / "imgs"
    folder.mkdir()
    retina = np.load(data_root / "medmnist" / "retinamnist.npz")["val_images"][:3]
    for i, im in enumerate(retina):
        Image.fromarray(im).save(folder / f"eye{i}.png")
    def infer(name: str, run: str = "run", **kw) -> list[dict]:
        wf = ConfigWorkflow(config_file=str(configs / "inference.json"), workflow_type="infer", input_dir=str(folder),
                            output_file=str(tmp_path / f"{name}.json"), model_dir=str(tmp_path / run / "model"),
                            **kw, **common)
        wf.initialize()
        wf.run()
        return json.loads((tmp_path / f"{name}.json").read_text())

    rows = infer("pred", save_maps=True)
    assert len(rows) == 3 and all((tmp_path / "pred_maps" / r["map"]).is_file() for r in rows)
    # one-pass screening: the same table minus the generated text, the class from one forward, retrieval beside it
    screened = infer("screen", screen=True)
    assert [r["id"] for r in screened] == [r["id"] for r in rows]
    assert all("answer" not in r and r["retrieval_attribute"].startswith("<|fundus_") for r in screened)
    for r, g in zip(screened, rows):  # the same probabilities as the generating command computes
        assert [r[k] for k in r if k.startswith("p_")] == [g[k] for k in g if k.startswith("p_")]
    base = infer("base_screen", run="base", screen=True)  # a baseline screens without a retrieval column
    assert len(base) == 3 and not any("retrieval_attribute" in r for r in base)
    # the temperature rescales the probabilities, never the class
    raw = infer("raw", screen=True, temperature=1.0)
    assert [r["attribute"] for r in raw] == [r["attribute"] for r in screened]


def test_retrieval_needs_attribute_tokens():
    """A plain-text baseline's a_k are never trained: retrieval_scores says so, screening returns no retrieval,
    and the evaluation step leaves the key out (so no retrieval metric is reported for it)."""
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.engines.steps import AnswerMetric, AttTokEvalStep
    from tests.conftest import tiny_attok

    base = tiny_attok(use_attribute_tokens=False, use_acc=False, use_acm=False).eval()
    images = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="no attribute tokens"):
        base.retrieval_scores(images)
    probs, retrieval = base.screen(images, ["what is this radiology image?"] * 2)
    assert retrieval is None and probs.shape == (2, 3)
    tokens = tiny_attok().eval()
    assert tokens.screen(images, ["what is this radiology image?"] * 2)[1].shape == (2, 3)

    class _Engine:
        network = base
        state = type("S", (), {"device": torch.device("cpu")})()

    batch = {"image": images, "attributes": [[0], [2]]}
    templates = InstructionTemplates("radiology", base.vocabulary.names, ["what is this {modality} image?"],
                                     ["which of {options}?"])
    out = AttTokEvalStep(templates, max_new_tokens=4, amp=False)(_Engine(), batch)
    assert "retrieval" not in out and out["probs"].shape == (2, 3)
    metric = AnswerMetric("retrieval_accuracy")
    metric.reset()
    metric.update((out,))
    assert np.isnan(metric.compute())
    # ACC without attribute tokens: the map goes to the book the visual tokens attend to most
    acc_only = tiny_attok(use_attribute_tokens=False, use_acc=True, use_acm=False).eval()
    maps, attrs = attention_maps(acc_only, images)
    assert maps.shape == (2, 16, 16) and attrs.shape == (2,)
