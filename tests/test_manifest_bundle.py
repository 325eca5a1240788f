"""A DICOM archive -> ingest -> manifest -> the fundus bundle trains from it and infers on the DICOM folder directly,
with no patient identifier in any file the run writes."""

from __future__ import annotations

import json

import numpy as np

from attok_monai.ingest import ingest
from tests.test_dicom import PHI, _write_dicom
from tests.test_fundus_bundle import BUNDLE, CONFIGS, _workflow


def _archive(root, n=30):
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(n):
        img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        uid = _write_dicom(root / f"p{i % 10}" / f"img{i}.dcm", img, "RGB", modality="OP",
                           extra={"PatientID": f"PID-PHI-{i % 10}"})
        labels[uid] = str(i % 10 % 5)  # 10 patients, two per grade
    return labels


def test_manifest_training_and_dicom_inference(tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    labels = _archive(archive)
    (tmp_path / "labels.csv").write_text("SOPInstanceUID,grade\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    monkeypatch.setenv("ATTOK_SALT", "a-long-enough-salt")
    manifest = tmp_path / "manifest.jsonl"
    ingest(archive, tmp_path / "labels.csv", key="SOPInstanceUID", label_column="grade", out=manifest,
           salt_env="ATTOK_SALT")
    # a file broken after the ingest (e.g. a partial copy) is skipped with a report, not the end of the training
    from attok_monai.data.manifest import load_manifest

    broken = load_manifest(manifest)[0]
    data = open(broken["image"], "rb").read()
    open(broken["image"], "wb").write(data[: len(data) // 2])
    wf = _workflow(
        ["train.json", "manifest.json"], tmp_path, manifest=str(manifest), epochs=1, batch_size=8, val_batch_size=8,
        output_dir=str(tmp_path / "run"), ckpt_dir=str(tmp_path / "models"), amp=False, tsne=False,
    )
    wf.run()
    wf.finalize()
    assert wf.parser.get_parsed_content("train#trainer").state.iteration == 3  # 24 train rows (80%), batch 8
    metrics = json.loads((tmp_path / "run" / "val" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 6
    reports = [p.read_text() for p in (tmp_path / "run").glob("*_skipped.csv")]
    assert len(reports) == 1 and reports[0].startswith("id,reason\n" + broken["id"] + ",")
    out = tmp_path / "pred.csv"
    inf = _workflow(["inference.json"], tmp_path, input_dir=str(archive), output_file=str(out),
                    model_dir=str(tmp_path / "run" / "model"), checkpoint="none")
    inf.run()
    assert len(out.read_text().splitlines()) == 30  # the broken file is in the skip report
    assert len((tmp_path / "pred.skipped.csv").read_text().splitlines()) == 2
    # the out-of-domain threshold was set on the validation part at the end of training and is used by inference
    domain = json.loads((tmp_path / "run" / "model" / "domain.json").read_text())
    assert domain["num_images"] == 6 and domain["threshold"] > 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert all(r["prototype_distance"] != "" and r["in_domain"] in ("True", "False") for r in rows)
    assert all(r["header_in_domain"] == "True" for r in rows)  # Modality OP: a fundus photograph
    written = [manifest, tmp_path / "run" / "val" / "predictions.csv", out, tmp_path / "pred.skipped.csv",
               *(tmp_path / "run").glob("*_skipped.csv"), tmp_path / "manifest.report.json"]
    text = "".join(p.read_text() for p in written)
    for phi in [*PHI, "PID-PHI-"]:
        assert str(phi) not in text
    assert (BUNDLE / "configs" / "manifest.json").exists() and CONFIGS.exists()
