"""Hospital-grade data handling (issue 16): no identifier in any output path, no silent drop, one bad file never
stops a run. Every file here is written by the test (pydicom / PIL); identifying strings are planted in headers and
folder names and then searched for in every output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.manifest import load_manifest, private_map_path, read_manifest, read_private_map, report_path
from attok_monai.ingest import ingest, main
from tests.test_dicom import PHI, _grad, _write_dicom

SALT = "hospital-test-salt-987654"
PID = "PID-PHI-778899"
STUDY = "1.2.826.0.1.3680043.8.498.111"
SERIES = "1.2.826.0.1.3680043.8.498.222"


def _pacs_tree(root: Path) -> dict[str, object]:
    """``PatientID/StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID.dcm`` as PACS exports lay them out: 3 good
    files, a JPEG-lossy one whose stream does not decode, one with a broken pixel VR value, a symlink to a good file
    from outside the tree; returns the planted identifiers and the labels by SOP UID."""
    series_dir = root / PID / STUDY / SERIES
    uids = [generate_uid() for _ in range(3)]
    for i, uid in enumerate(uids):
        _write_dicom(series_dir / f"{uid}.dcm", _grad() + i, sop_uid=uid)
    bad_jpeg = generate_uid()
    _write_dicom(series_dir / f"{bad_jpeg}.dcm", _grad(), sop_uid=bad_jpeg)
    ds = pydicom.dcmread(series_dir / f"{bad_jpeg}.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg stream " * 4])
    ds.save_as(series_dir / f"{bad_jpeg}.dcm")
    bad_vr = generate_uid()
    _write_dicom(series_dir / f"{bad_vr}.dcm", _grad(), sop_uid=bad_vr)
    ds = pydicom.dcmread(series_dir / f"{bad_vr}.dcm")
    ds.PixelRepresentation = 5
    ds.save_as(series_dir / f"{bad_vr}.dcm")
    outside = root.parent / "elsewhere"
    link_uid = generate_uid()
    _write_dicom(outside / "target.dcm", _grad() + 7, sop_uid=link_uid)
    (series_dir / f"{link_uid}.dcm").symlink_to(outside / "target.dcm")
    return {"good": uids + [link_uid], "bad_jpeg": bad_jpeg, "bad_vr": bad_vr,
            "secrets": [PID, STUDY, SERIES, *uids, bad_jpeg, bad_vr, link_uid, *PHI]}


def _outputs_text(*paths: Path) -> str:
    return "".join(Path(p).read_text(encoding="utf-8") for p in paths)


def test_pacs_tree_manifest_and_report_hold_no_identifier(tmp_path, capsys):
    root = tmp_path / "archive"
    t = _pacs_tree(root)
    labels_csv = tmp_path / "labels.csv"
    no_file_uid = generate_uid()
    good = t["good"]
    labels_csv.write_text("SOPInstanceUID,dx\n" + "".join(f"{u},normal\n" for u in good[:3])
                          + f"{no_file_uid},pneumonia\n" + f"{t['bad_jpeg']},normal\n{t['bad_vr']},normal\n",
                          encoding="utf-8")
    out = tmp_path / "out" / "manifest.jsonl"
    os.environ["ATTOK_SALT_T16"] = SALT
    rc = main([str(root), "--labels", str(labels_csv), "--label-column", "dx", "--out", str(out),
               "--salt-env", "ATTOK_SALT_T16"])
    printed = capsys.readouterr().out
    assert rc == 0
    pmap = private_map_path(out)
    assert pmap.name == "manifest.paths.private.json" and str(pmap) in printed
    assert oct(pmap.stat().st_mode & 0o777) == "0o600"
    rows = read_manifest(out)
    report = json.loads(report_path(out).read_text())
    # identifiers: in neither the manifest nor the report nor what the command printed (except the map's name)
    public = _outputs_text(out, report_path(out)) + printed.replace(str(pmap), "").replace(str(out.parent), "")
    for secret in t["secrets"]:
        assert secret not in public, secret
    assert str(root) not in _outputs_text(out, report_path(out))  # not even the root folder
    # the private map holds the paths, relative to the root, the symlink as its own path inside the tree
    files = read_private_map(pmap)["files"]
    assert all(not os.path.isabs(p) for p in files.values())
    assert f"{PID}/{STUDY}/{SERIES}/{good[3]}.dcm" in files.values()
    assert {r["image"] for r in rows} <= set(files) and all(len(r["image"]) == 16 for r in rows)
    # decoded by default: the JPEG-lossy stream and the broken VR value are skipped with their full reasons
    reasons = {files[s["file"]].rsplit("/", 1)[1][:-4]: s["reason"] for s in report["skipped"]}
    assert "pixel decoding failed" in reasons[t["bad_jpeg"]] and " | " in reasons[t["bad_jpeg"]]  # every line
    assert "pillow" in reasons[t["bad_jpeg"]] and "pylibjpeg" in reasons[t["bad_jpeg"]]
    assert "(0028,0103)" in reasons[t["bad_vr"]] and "must be 0 or 1" in reasons[t["bad_vr"]]
    # labels matching no file and files matching no label are counted and listed
    assert report["counts"]["labels_matching_no_file"] == 1 and report["unmatched_labels"][0]["line"] == 5
    assert report["counts"]["files_matching_no_label"] == 1  # the symlinked file
    assert [files[k] for k in report["files_without_label"]] == [f"{PID}/{STUDY}/{SERIES}/{good[3]}.dcm"]
    assert "1 matching no file" in printed
    assert len(rows) == 3
    # training resolves keys through the map
    vocab = AttributeVocabulary.from_label_map("xray", {"normal": "normal", "pneumonia": "pneumonia"})
    items = load_manifest(out, vocabulary=vocab)
    assert all(Path(it["image"]).is_file() and it["label"] == 0 for it in items)
    # without the map a keyed manifest says what is missing
    pmap.rename(tmp_path / "moved.private.json")
    with pytest.raises(ValueError, match="private path map manifest.paths.private.json"):
        load_manifest(out)
    assert len(load_manifest(out, private_map=tmp_path / "moved.private.json")) == 3


def test_header_only_scan_lets_undecodable_files_in(tmp_path):
    root = tmp_path / "archive"
    t = _pacs_tree(root)
    rep = ingest(root, out=tmp_path / "fast.jsonl", salt=SALT, unlabelled="keep", verify=False)
    assert rep.added == 6 and not rep.skipped  # the fast scan cannot see undecodable pixels
    rep = ingest(root, out=tmp_path / "full.jsonl", salt=SALT, unlabelled="keep")
    assert rep.added == 4 and len(rep.skipped) == 2
    assert rep.options["decode"] is True and len(t["good"]) == 4
    assert main([str(root), "--out", str(tmp_path / "cli.jsonl"), "--keep-unlabelled", "--header-only",
                 "--salt-file", str(_salt_file(tmp_path))]) == 0
    assert len(read_manifest(tmp_path / "cli.jsonl")) == 6


def _salt_file(tmp_path: Path) -> Path:
    p = tmp_path / "salt.txt"
    p.write_text(SALT + "\n")
    return p


def test_old_path_manifest_is_moved_to_keys_on_rerun(tmp_path):
    root = tmp_path / "archive"
    _write_dicom(root / "Doe_Jane" / "a.dcm", _grad())
    out = tmp_path / "m.jsonl"
    ingest(root, out=out, salt=SALT, unlabelled="keep")
    rows = read_manifest(out)
    rows[0]["image"] = "Doe_Jane/a.dcm"  # as an older version wrote it
    out.write_text(json.dumps(rows[0]) + "\n")
    private_map_path(out).unlink()
    report_path(out).write_text(json.dumps({"root": str(root)}))  # older reports recorded the root
    assert Path(load_manifest(out)[0]["image"]) == root / "Doe_Jane" / "a.dcm"  # still loads
    _write_dicom(root / "Doe_Jane" / "b.dcm", _grad() + 1)
    rep = ingest(root, out=out, salt=SALT, unlabelled="keep")
    assert rep.added == 1 and rep.kept == 1
    assert "Doe_Jane" not in out.read_text()
    assert sorted(Path(it["image"]).name for it in load_manifest(out)) == ["a.dcm", "b.dcm"]


@pytest.mark.parametrize("text, match", [
    ("", "is empty; expected a header line"),
    ("SOPInstanceUID,dx\n", "has a header but no rows"),
    ("uid,dx\n1.2.3,normal\n", r"missing column\(s\) \['SOPInstanceUID'\]"),
])
def test_label_csv_errors_are_one_line_naming_the_file(tmp_path, capsys, text, match):
    root = tmp_path / "archive"
    _write_dicom(root / "a.dcm", _grad())
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        ingest(root, csv_path, label_column="dx", out=tmp_path / "m.jsonl", salt=SALT)
    assert str(csv_path) in str(e.value) and "\n" not in str(e.value)
    assert main([str(root), "--labels", str(csv_path), "--label-column", "dx", "--out", str(tmp_path / "m.jsonl"),
                 "--salt-file", str(_salt_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(csv_path) in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ inference
def _fundus_like(rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A reddish disc on black, roughly what a fundus photograph looks like at 28 px."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.45) ** 2
    img = np.zeros((size, size, 3), np.uint8)
    img[disc] = (np.array([190, 90, 40]) + rng.integers(-20, 20, 3)).clip(0, 255)
    return img


@pytest.fixture(scope="module")
def fundus_model(tmp_path_factory):
    """The fundus bundle's network (untrained weights) saved as a model folder, with its domain calibrated on
    fundus-like validation images."""
    from monai.bundle import ConfigParser

    from attok_monai.engines.domain import calibrate_domain
    from attok_monai.engines.inference import inference_transforms
    from tests.test_fundus_bundle import CONFIGS

    tmp = tmp_path_factory.mktemp("fundus_model")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["bundle_root"] = str(tmp)
    net = parser.get_parsed_content("network_def").eval()
    templates = parser.get_parsed_content("templates")
    rng = np.random.default_rng(0)
    model_dir = tmp / "pretrained"
    net.save_pretrained(model_dir)
    (model_dir / "templates.json").write_text(json.dumps(templates.to_dict()))
    from PIL import Image

    val = []
    for i in range(20):
        p = tmp / "val" / f"v{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(_fundus_like(rng)).save(p)
        val.append({"image": str(p), "id": p.name, "label": i % 5})
    cal = calibrate_domain(net, val, inference_transforms(28), output_dir=model_dir)
    assert (model_dir / "domain.json").is_file() and cal["num_images"] == 20 and cal["threshold"] > 0
    assert len(cal["prototypes"]) == 5 and len(cal["scale"]) == len(cal["prototypes"][0])
    return model_dir


def _mixed_folder(folder: Path) -> dict[str, Path]:
    """A folder as a hospital user might hand it over: PNG, JPEG, NIfTI and DICOM side by side, under a folder
    named by the PatientID, with broken files of every kind."""
    from PIL import Image

    rng = np.random.default_rng(1)
    d = folder / PID
    d.mkdir(parents=True)
    Image.fromarray(_fundus_like(rng, 40)).save(d / "fundus.png")
    Image.fromarray(_fundus_like(rng, 36)).save(d / "fundus2.jpg", quality=95)
    jpg = (d / "fundus2.jpg").read_bytes()
    (d / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated JPEG
    import nibabel as nib

    nib.save(nib.Nifti1Image(rng.random((20, 24, 3)).astype(np.float32), np.eye(4)), d / "slice.nii.gz")
    fundus_dcm = _write_dicom(d / "op.dcm", _fundus_like(rng, 32), "RGB", modality="OP",
                              extra={"BodyPartExamined": "EYE"})
    chest = _write_dicom(d / f"{STUDY}.dcm", _grad(32, 32), modality="CR", extra={"BodyPartExamined": "CHEST"})
    data = (d / "op.dcm").read_bytes()
    (d / "trunc1.dcm").write_bytes(data[: len(data) - 200])
    (d / "trunc2.dcm").write_bytes(data[: len(data) // 3])
    (d / "text.dcm").write_text("this is a text file named .dcm\n")
    bad = _write_dicom(d / "undecodable.dcm", _grad(), sop_uid=generate_uid())
    ds = pydicom.dcmread(d / "undecodable.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg " * 4])
    ds.save_as(d / "undecodable.dcm")
    (d / "notes.txt").write_text("clinical notes for Doe^Jane^PHIMARKER\n")
    return {"secrets": [PID, STUDY, fundus_dcm, chest, bad, *PHI], "chest": d / f"{STUDY}.dcm"}


def test_inference_mixed_folder_skips_reports_and_flags_domain(fundus_model, tmp_path, monkeypatch, capsys):
    from attok_monai.data.pseudonym import file_key
    from tests.test_fundus_bundle import _workflow

    t = _mixed_folder(tmp_path / "in")
    monkeypatch.setenv("ATTOK_SALT", SALT)
    out = tmp_path / "out" / "pred.csv"
    inf = _workflow("inference.json", tmp_path, input_dir=str(tmp_path / "in"), output_file=str(out),
                    model_dir=str(fundus_model), checkpoint="none")
    inf.run()
    printed = capsys.readouterr().out
    import csv

    rows = list(csv.DictReader(out.open()))
    skip = list(csv.DictReader((tmp_path / "out" / "pred.skipped.csv").open()))
    # every file is accounted for: 5 answered (png, jpg, nii.gz, two readable DICOMs), 6 skipped with a reason
    assert len(rows) == 5 and len(skip) == 6
    key = {p: file_key(f"{PID}/{p}", SALT) for p in (
        "fundus.png", "fundus2.jpg", "slice.nii.gz", "op.dcm", f"{STUDY}.dcm", "cut.jpg", "trunc1.dcm", "trunc2.dcm",
        "text.dcm", "undecodable.dcm", "notes.txt")}
    assert {r["file"] for r in rows} == {key[p] for p in ("fundus.png", "fundus2.jpg", "slice.nii.gz", "op.dcm",
                                                          f"{STUDY}.dcm")}
    assert all(r["id"] == r["file"] for r in rows)
    reasons = {s["file"]: s["reason"] for s in skip}
    assert "truncated" in reasons[key["cut.jpg"]]
    assert all("less than expected" in reasons[key[p]] for p in ("trunc1.dcm", "trunc2.dcm"))
    assert "not a DICOM file" in reasons[key["text.dcm"]]
    assert "pixel decoding failed" in reasons[key["undecodable.dcm"]]
    assert "not a supported image format" in reasons[key["notes.txt"]]
    # the chest radiograph DICOM is flagged out of domain by its header; the fundus DICOM is not
    by_key = {r["file"]: r for r in rows}
    chest = by_key[key[f"{STUDY}.dcm"]]
    assert chest["header_in_domain"] == "False" and chest["in_domain"] == "False"
    assert "Modality CR" in chest["domain_note"] and "BodyPartExamined CHEST" in chest["domain_note"]
    assert by_key[key["op.dcm"]]["header_in_domain"] == "True"
    assert by_key[key["fundus.png"]]["header_in_domain"] == "" and by_key[key["fundus.png"]]["prototype_distance"]
    summary = [ln for ln in printed.splitlines() if ln.startswith("[attok] inference:")]
    assert len(summary) == 1 and "11 file(s): 5 answered, 6 skipped" in summary[0]
    assert "1 by DICOM header" in summary[0]
    # no identifier in any output
    text = out.read_text() + (tmp_path / "out" / "pred.skipped.csv").read_text() + printed.replace(str(tmp_path), "")
    for secret in t["secrets"]:
        assert secret not in text, secret


def test_inference_prototype_distance_flags_far_images(fundus_model):
    import torch

    from attok_monai.bundle.model_folder import load_pretrained
    from attok_monai.engines.domain import load_domain_calibration, prototype_distance

    net = load_pretrained(fundus_model).eval()
    cal = load_domain_calibration(fundus_model)
    thr = cal["threshold"]
    rng = np.random.default_rng(5)
    fundus = torch.stack([torch.from_numpy(_fundus_like(rng)).permute(2, 0, 1).float() / 255 for _ in range(8)])
    yy, xx = np.mgrid[:28, :28]
    grey = [np.repeat(((np.sin(xx / (2 + k)) + 1) * 0.5)[None], 3, 0) for k in range(4)]  # stripes: no fundus
    tile = [np.stack([np.full((28, 28), 0.9), rng.random((28, 28)) * 0.5, np.full((28, 28), 0.8)]) for _ in range(4)]
    other = torch.from_numpy(np.stack(grey + tile)).float()
    d_in, d_out = prototype_distance(net, fundus, cal), prototype_distance(net, other, cal)
    assert float((d_in <= thr).float().mean()) >= 0.75
    assert bool((d_out > thr).all()), (d_out, thr)


def test_inference_without_salt_names_relative_paths_and_warns(fundus_model, tmp_path, monkeypatch):
    from PIL import Image

    from attok_monai.engines.inference import image_datalist

    monkeypatch.delenv("ATTOK_SALT", raising=False)
    (tmp_path / "in" / "a").mkdir(parents=True)
    Image.fromarray(_fundus_like(np.random.default_rng(0))).save(tmp_path / "in" / "a" / "x.png")
    (tmp_path / "in" / "b.dcm").write_text("text")
    with pytest.warns(UserWarning, match="may hold patient identifiers"):
        items = image_datalist(tmp_path / "in")
    assert [it["id"] for it in items] == ["a/x.png", "b.dcm"]  # every file, in path order, named by its path


def test_inference_fails_only_when_nothing_readable_or_above_threshold(fundus_model, tmp_path, monkeypatch,
                                                                         capsys):
    from PIL import Image

    from attok_monai.bundle.cli import main as bundle_main
    from tests.test_fundus_bundle import BUNDLE

    monkeypatch.setenv("ATTOK_SALT", SALT)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_text("text")
    (folder / "b.dcm").write_bytes(b"")
    args = ["run", "--config", str(BUNDLE), "inference", "--input_dir", str(folder), "--output_file",
            str(tmp_path / "p.csv"), "--model_dir", str(fundus_model), "--checkpoint", "none"]
    assert bundle_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 2 input file(s) could be read" in err[0] and "Traceback" not in err[0]
    assert (tmp_path / "p.skipped.csv").is_file() and not (tmp_path / "p.csv").exists()
    Image.fromarray(_fundus_like(np.random.default_rng(0))).save(folder / "ok.png")
    assert bundle_main(args) == 0  # 1 of 3 readable: answered, 2 skipped
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2
    assert bundle_main([*args, "--max_skipped_fraction", "0.5"]) == 2
    assert "more than max_skipped_fraction 0.5" in capsys.readouterr().err
    with pytest.raises(Exception, match="max_skipped_fraction"):
        bundle_main([*args, "--max_skipped_fraction", "0.5", "--debug"])


# ------------------------------------------------------------------------------------------ training data
def _jpeg_items(folder: Path, n: int = 6) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        p = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(p, quality=95)
        items.append({"image": str(p), "label": i % 2, "id": f"s{i}"})
    data = Path(items[2]["image"]).read_bytes()
    Path(items[2]["image"]).write_bytes(data[: len(data) // 2])  # truncated JPEG, label 0
    return items


def test_training_dataset_skips_a_truncated_jpeg_with_a_report(tmp_path, caplog):
    from attok_monai.data.image_transforms import image_load_transforms
    from attok_monai.data.robust import ReadGuardCacheDataset

    items = _jpeg_items(tmp_path / "images")
    report = tmp_path / "run" / "train_skipped.csv"
    with caplog.at_level("WARNING", logger="attok_monai.data"):
        ds = ReadGuardCacheDataset(items, image_load_transforms(size=16), skip_report=report, cache_rate=1.0)
    assert len(ds) == 6 and list(ds.skipped) == [2]
    lines = report.read_text().splitlines()
    assert lines[0] == "id,reason" and lines[1].startswith("s2,") and "truncated" in lines[1]
    assert str(tmp_path) not in report.read_text()  # named by id, not by path
    assert any("s2" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    sub = ds[2]  # served by the next readable item of the same label (keeps a class-balanced sampler valid)
    assert sub["id"] == "s4" and sub["label"] == 0 and tuple(sub["image"].shape) == (3, 16, 16)
    # not cached (cache_rate 0): the same, found when the item is first read
    lazy = ReadGuardCacheDataset(items, image_load_transforms(size=16), skip_report=tmp_path / "lazy.csv",
                                 cache_rate=0.0)
    assert lazy[2]["id"] == "s4" and "s2," in (tmp_path / "lazy.csv").read_text()
    # a threshold set by the user: more unreadable than allowed stops with one message
    from attok_monai.errors import InputError

    with pytest.raises(InputError, match="1 of 6 images unreadable, more than max_skipped_fraction 0.1"):
        ReadGuardCacheDataset(items, image_load_transforms(size=16), skip_report=report, max_skipped_fraction=0.1)


@pytest.mark.parametrize("text, match", [
    ("", "is empty; expected a header line"),
    ("image_id,dx,lesion_id\n", "has a header but no rows"),
])
def test_table_csv_errors_name_the_file(tmp_path, text, match):
    from attok_monai.data.table import DatasetTableError
    from attok_monai.data.table_source import table_splits

    table = tmp_path / "labels.csv"
    table.write_text(text)
    vocab = AttributeVocabulary.from_label_map("derma", {"nv": "nevus", "mel": "melanoma"})
    spec = {"table": str(table), "id_column": "image_id", "image_dir": "images", "extension": ".jpg",
            "label_columns": "dx", "group_column": "lesion_id"}
    with pytest.raises(DatasetTableError, match=match) as e:
        table_splits(vocab, spec, split_file=tmp_path / "split.csv")
    assert str(table) in str(e.value)


def test_bundle_cli_user_errors_are_one_line(tmp_path, capsys):
    from attok_monai.bundle.cli import main as bundle_main

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "derma_isic"
    (tmp_path / "HAM10000_metadata.csv").write_text("image_id,dx,lesion_id\nISIC_1,nv,L1\nISIC_2,zzz,L2\n")
    (tmp_path / "images").mkdir()
    rc = bundle_main(["run", "--config", str(bundle), "--data_root", str(tmp_path), "--output_dir",
                      str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "ConfigExpression" not in err
    assert "HAM10000_metadata.csv" in err and "unknown_label" in err and "'zzz'" in err


def test_rerun_remembers_matched_labels_and_unknown_labels_name_the_row(tmp_path):
    root = tmp_path / "archive"
    uids = [_write_dicom(root / f"{i}.dcm", _grad() + i) for i in range(2)]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(f"SOPInstanceUID,dx\n{uids[0]},normal\n{uids[1]},sarcoma\n")
    out = tmp_path / "m.jsonl"
    rep = ingest(root, csv_path, label_column="dx", out=out, salt=SALT)
    assert rep.added == 2 and not rep.unmatched_labels
    rep = ingest(root, csv_path, label_column="dx", out=out, salt=SALT)  # nothing new: both rows still matched
    assert rep.kept == 2 and not rep.unmatched_labels
    vocab = AttributeVocabulary.from_label_map("xray", {"normal": "normal", "pneumonia": "pneumonia"})
    from attok_monai.errors import InputError

    with pytest.raises(InputError, match=r"m.jsonl: row [0-9a-f]{32}: .*sarcoma") as e:
        load_manifest(out, vocabulary=vocab)
    assert "\n" not in str(e.value)


def test_class_folders_say_how_many_non_image_files_they_leave_out(tmp_path, caplog):
    from PIL import Image

    from attok_monai.data.table import load_table

    for cls in ("nv", "mel"):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / cls / "a.png")
    (tmp_path / "nv" / "notes.txt").write_text("x")
    (tmp_path / "mel" / "Doe_Jane_PHIMARKER").write_text("x")
    vocab = AttributeVocabulary.from_label_map("derma", {"nv": "nevus", "mel": "melanoma"})
    with caplog.at_level("WARNING", logger="attok_monai.data"):
        res = load_table(vocab, class_folders=str(tmp_path))
    assert len(res.items) == 2
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "2 file(s) without an image suffix" in msg and "'.txt': 1" in msg and "PHIMARKER" not in msg


def test_manifest_split_does_not_follow_the_training_seed(tmp_path):
    """A manifest without a split column is split by ``split_seed`` (default 0), never by the run's ``seed``: a model
    trained with ``--seed 3`` and scored with ``evaluate --extra manifest_evaluate --split val`` is scored on images it
    did not train on (when the split followed the seed, evaluate's seed-0 validation part held seed 3's training
    images). The split seed is in the run settings, so a resume with another split is refused."""
    from types import SimpleNamespace

    from monai.bundle import ConfigParser

    from attok_monai.data.manifest import write_manifest
    from tests.test_fundus_bundle import CONFIGS

    rows = [{"id": f"k{i:03d}", "image": f"img/{i}.png", "label": str(4 * (i % 2)), "patient_key": f"p{i // 2:03d}",
             "frame": 0, "modality": "OP"} for i in range(80)]
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, rows)

    def train_parts(seed: int, split_seed: int | None = None) -> tuple[set[str], set[str], dict]:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "manifest.json")])
        parser.update({"bundle_root": str(tmp_path / "bundle"), "manifest": str(manifest), "seed": seed})
        if split_seed is not None:
            parser["split_seed"] = split_seed
        ids = {k: {it["id"] for it in parser.get_parsed_content(k)} for k in ("train#datalist", "validate#datalist")}
        return ids["train#datalist"], ids["validate#datalist"], parser

    def evaluate_part(split: str) -> set[str]:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "evaluate.json"), str(CONFIGS / "manifest_evaluate.json")])
        parser.update({"bundle_root": str(tmp_path / "bundle"), "manifest": str(manifest), "split": split})
        train_parser = ConfigParser()
        train_parser.read_config(str(CONFIGS / "train.json"))
        parser["network"] = SimpleNamespace(vocabulary=train_parser.get_parsed_content("vocabulary"))
        return {it["id"] for it in parser.get_parsed_content("datalist")}

    train0, val0, _ = train_parts(seed=0)
    train3, val3, parser3 = train_parts(seed=3)
    assert train0 == train3 and val0 == val3 and not train3 & val3 and len(train3 | val3) == 80
    assert evaluate_part("val") == val3 and evaluate_part("train") == train3  # no training image scored as val
    train_s, val_s, _ = train_parts(seed=3, split_seed=1)
    assert val_s != val3 and not train_s & val_s  # split_seed moves the split
    groups = {r["id"]: r["patient_key"] for r in rows}
    assert not {groups[i] for i in train_s} & {groups[i] for i in val_s}  # one patient in one part
    settings = parser3.get_parsed_content("run_settings", lazy=True)
    assert settings["split_seed"] == 0 and settings["split_fractions"] == {"train": 0.8, "val": 0.2}
    record = parser3.get_parsed_content("split_record")
    assert record["computed"] and record["settings"] == {"split_seed": 0, "split_fractions": {"train": 0.8, "val": 0.2}}

    # a split column added to the manifest by hand (CSV) is kept, and nothing is computed
    from attok_monai.data.manifest_source import manifest_datalist, split_is_computed

    assert split_is_computed(manifest)
    csv_manifest = tmp_path / "manifest.csv"
    header = "id,image,label,patient_key,split\n"
    csv_manifest.write_text(header + "".join(f"k{i},img/{i}.png,{4 * (i % 2)},p{i},{'val' if i < 3 else 'train'}\n"
                                             for i in range(10)))
    assert not split_is_computed(csv_manifest)
    vocab = parser3.get_parsed_content("vocabulary")
    assert [it["id"] for it in manifest_datalist(csv_manifest, vocab, "val")] == ["k0", "k1", "k2"]


def test_bundle_cli_missing_generalist_is_one_line(data_root, tmp_path, capsys):
    from attok_monai.bundle.cli import main as bundle_main
    from tests.conftest import require

    require(data_root / "medmnist" / "retinamnist.npz")  # else the data's error comes first
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "fundus_dr"
    for given in ([], ["--generalist_dir", str(tmp_path / "nowhere")]):
        rc = bundle_main(["run", "--config", str(bundle), "--extra", "from_generalist", "--data_root",
                          str(data_root / "medmnist"), "--download", "False", "--output_dir", str(tmp_path / "run"),
                          "--epochs", "1", *given])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "generalist_dir" in err and "compact_generalist" in err  # what to set, and how to build one


@pytest.mark.parametrize("override, named", [
    (["--fa_position", "answer"], "fa_position must be one of"),
    (["--cv_folds", "5", "--cv_fold", "7"], "cv_fold: 7; expected an integer in [0, 4]"),
    (["--lambda_schedule", "step"], "mode must be constant, linear or cosine"),
    (["--acm_weighting", "sum"], "acm_weighting must be one of"),
])
def test_bundle_cli_bad_study_key_is_one_line(data_root, tmp_path, capsys, override, named):
    """A mistyped value of a config key (AttTok's switches, the folds, the lambda schedule, ACM's weighting) is one
    line naming the key and the values it takes, not MONAI's traceback."""
    from attok_monai.bundle.cli import main as bundle_main
    from tests.conftest import require

    require(data_root / "medmnist" / "retinamnist.npz")
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "fundus_dr"
    rc = bundle_main(["run", "--config", str(bundle), "--data_root", str(data_root / "medmnist"), "--download",
                      "False", "--output_dir", str(tmp_path / "run"), "--epochs", "1", "--limit_train", "8",
                      "--limit_val", "8", "--batch_size", "4", *override])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert named in err, err
    assert not (tmp_path / "run").exists()  # refused before the run folder is written
