"""Hospital-grade data handling (issue 16): no identifier in any output path, no silent drop, one bad file never
stops a run. Every file here is written by the test (pydicom / PIL); identifying strings are planted in headers and
folder names and then searched for in every output."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
