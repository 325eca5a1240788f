"""The out-of-domain check for VQA: calibration on VQA data lists (per-attribute prototypes, one image per file) and
the domain columns of VQA inference, with and without a calibration. A tiny model, no real data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_attok


def _radiograph_like(rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A grey image: a bright smooth blob on a dark background, jittered (uint8)."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.normal(0, 1, 2)
    img = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 4) ** 2)) + rng.normal(0, 5, (size, size))
    return img.clip(0, 255).astype(np.uint8)


def _save(img: np.ndarray, path: Path) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return str(path)


@pytest.fixture(scope="module")
def net():
    return tiny_attok().eval()


@pytest.fixture(scope="module")
def calibrated(net, tmp_path_factory):
    """16 radiograph-like validation images, each asked two questions (VQA items: ``attributes`` lists)."""
    from attok_monai.engines.domain import calibrate_domain
    from attok_monai.vqa.datalists import vqa_image_transforms

    tmp = tmp_path_factory.mktemp("vqa_domain")
    rng = np.random.default_rng(0)
    items = []
    for i in range(16):
        p = _save(_radiograph_like(rng), tmp / "val" / f"v{i}.png")
        items += [{"image": p, "question": "is this a ct?", "id": f"q{i}a", "attributes": [i % 3]},
                  {"image": p, "question": "what organ?", "id": f"q{i}b", "attributes": []}]
    model_dir = tmp / "model"
    model_dir.mkdir()
    cal = calibrate_domain(net, items, vqa_image_transforms(16, 1), output_dir=model_dir)
    return tmp, model_dir, cal


def test_calibrate_domain_groups_vqa_items_by_attribute_and_counts_each_image_once(net, tmp_path):
    from attok_monai.engines.domain import calibrate_domain, mean_visual_token
    from attok_monai.vqa.datalists import vqa_image_transforms

    rng = np.random.default_rng(1)
    paths = [_save(_radiograph_like(rng), tmp_path / f"i{k}.png") for k in range(4)]
    # image 0 is asked about twice (attributes 0, then 1): one image, in both groups; image 3 has no attribute
    items = [{"image": paths[0], "id": "a", "attributes": [0]}, {"image": paths[0], "id": "b", "attributes": [1]},
             {"image": paths[1], "id": "c", "attributes": [1, 2]}, {"image": paths[2], "id": "d", "attributes": [2]},
             {"image": paths[3], "id": "e", "attributes": []}]
    transform = vqa_image_transforms(16, 1)
    cal = calibrate_domain(net, items, transform)
    assert cal["num_images"] == 4
    v = mean_visual_token(net, torch.stack([transform({"image": p})["image"] for p in paths]))
    expected = [v[[0]].mean(0), v[[0, 1]].mean(0), v[[1, 2]].mean(0), v[[3]].mean(0)]  # attributes 0, 1, 2, none
    got = torch.tensor(cal["prototypes"])
    assert got.shape == (4, v.shape[1])
    for i in range(3):  # the attribute prototypes (the "no attribute" group sorts first, as -1)
        torch.testing.assert_close(got[i + 1], expected[i], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[0], expected[3], rtol=1e-4, atol=1e-5)
    # a "label" wins over "attributes"; classification items (one int label per image) are grouped as before
    cls = [{"image": p, "id": str(k), "label": k % 2} for k, p in enumerate(paths)]
    cal_cls = calibrate_domain(net, cls, transform)
    assert cal_cls["num_images"] == 4 and len(cal_cls["prototypes"]) == 2
    torch.testing.assert_close(torch.tensor(cal_cls["prototypes"][1]), v[[1, 3]].mean(0), rtol=1e-4, atol=1e-5)


def _table(tmp: Path, images: dict[str, str]) -> Path:
    table = tmp / "questions.csv"
    table.write_text("id,image,question\n" + "".join(f"{k},{p},is this a ct scan?\n" for k, p in images.items()))
    return table


def test_vqa_inference_flags_an_image_far_from_the_prototypes(net, calibrated, capsys):
    from attok_monai.engines.domain import load_domain_calibration
    from attok_monai.engines.vqa_inference import question_table_datalist, run_vqa_inference
    from attok_monai.vqa.datalists import vqa_image_transforms

    tmp, model_dir, cal = calibrated
    assert cal["num_images"] == 16 and len(cal["prototypes"]) == 3  # 32 questions about 16 images, attributes 0-2
    rng = np.random.default_rng(7)
    images = {f"in{k}": _save(_radiograph_like(rng), tmp / "test" / f"in{k}.png") for k in range(3)}
    images["noise"] = _save(rng.integers(0, 256, (16, 16), dtype=np.uint8), tmp / "test" / "noise.png")
    images["flat"] = _save(np.full((16, 16), 255, np.uint8), tmp / "test" / "flat.png")
    out = tmp / "answers.csv"
    rows = run_vqa_inference(net, question_table_datalist(_table(tmp, images)), vqa_image_transforms(16, 1), out,
                             max_new_tokens=2, domain={"dicom_modalities": ["CT", "MR"]},
                             domain_calibration=load_domain_calibration(model_dir))
    by_id = {r["id"]: r for r in rows}
    thr = cal["threshold"]
    for k in range(3):
        r = by_id[f"in{k}"]
        assert r["in_domain"] is True and r["prototype_distance"] <= thr and r["domain_note"] == ""
    for k in ("noise", "flat"):
        r = by_id[k]
        assert r["in_domain"] is False and r["prototype_distance"] > thr
        assert "far from every visual prototype" in r["domain_note"]
    assert all(r["header_in_domain"] == "" for r in rows)  # no DICOM header through the VQA loader
    summary = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[attok] VQA inference")]
    assert len(summary) == 1 and "out of domain: 0 by DICOM header, 2 by prototype distance" in summary[0]
    written = {r["id"]: r for r in csv.DictReader(out.open())}
    assert written["noise"]["in_domain"] == "False" and written["in0"]["in_domain"] == "True"


def test_vqa_inference_without_calibration_says_the_check_did_not_run(net, calibrated, capsys):
    from attok_monai.engines.domain import NO_CALIBRATION_NOTE, load_domain_calibration
    from attok_monai.engines.vqa_inference import question_table_datalist, run_vqa_inference
    from attok_monai.vqa.datalists import vqa_image_transforms

    tmp, _, _ = calibrated
    old_model_dir = tmp / "old_model"  # trained before domain.json existed
    old_model_dir.mkdir()
    assert load_domain_calibration(old_model_dir) is None
    rng = np.random.default_rng(8)
    images = {"in0": _save(_radiograph_like(rng), tmp / "test2" / "in0.png")}
    rows = run_vqa_inference(net, question_table_datalist(_table(tmp, images)), vqa_image_transforms(16, 1),
                             tmp / "answers_old.json", max_new_tokens=2, domain=None,
                             domain_calibration=load_domain_calibration(old_model_dir))
    assert rows[0]["answer"] is not None
    assert {k: rows[0][k] for k in ("header_in_domain", "prototype_distance", "in_domain", "domain_note")} == {
        "header_in_domain": "", "prototype_distance": "", "in_domain": "", "domain_note": NO_CALIBRATION_NOTE}
    assert "(no calibration in the model folder)" in capsys.readouterr().out


def test_calibration_handler_skips_when_too_few_images(net, tmp_path, caplog):
    from ignite.engine import Engine

    from attok_monai.handlers.domain import DomainCalibrationHandler
    from attok_monai.vqa.datalists import vqa_image_transforms

    p = _save(_radiograph_like(np.random.default_rng(2)), tmp_path / "one.png")
    items = [{"image": p, "id": "a", "attributes": [0]}, {"image": p, "id": "b", "attributes": [1]}]  # one image
    handler = DomainCalibrationHandler(net, items, vqa_image_transforms(16, 1), tmp_path / "model")
    net.train()
    with caplog.at_level("WARNING", logger="attok_monai.handlers"):
        handler(Engine(lambda e, b: None))
    assert not (tmp_path / "model" / "domain.json").exists() and "no domain.json written" in caplog.text
    assert net.training  # the network's mode is put back
    net.eval()
