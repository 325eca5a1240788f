"""DICOM ingestion, reader and PHI tests: pydicom's shipped test files and a small archive written here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage, LoadImaged
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.dicom import PydicomReader2D, read_dicom_frame, scan_dicom
from attok_monai.data.image2d import ImageReadError, select_indices, time_limit
from attok_monai.data.load2d import LoadDicomFramed, read_image_2d
from attok_monai.data.manifest import (
    load_manifest,
    private_map_path,
    read_manifest,
    read_private_map,
)
from attok_monai.data.pseudonym import MissingSaltError, pseudonymise
from attok_monai.ingest import ingest, main

SALT = "unit-test-salt-0123456789"
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PHI = ["Doe^Jane^PHIMARKER", "PHIMARKER", "PID-PHI-778899", "19450101", "ACC-PHI-4242", "Dr^Who^REFPHI"]
COLOR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420", "PALETTE COLOR"}


def _write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                 modality: str = "CR", sop_uid: str | None = None, extra: dict | None = None) -> str:
    """Write a small uncompressed DICOM with recognisable PHI; returns its SOPInstanceUID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    sop_uid = sop_uid or generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.111"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.222"
    ds.PatientName = PHI[0]
    ds.PatientID = PHI[2]
    ds.PatientBirthDate = PHI[3]
    ds.AccessionNumber = PHI[4]
    ds.ReferringPhysicianName = PHI[5]
    ds.Modality = modality
    color = photometric == "RGB"
    frames = pixels.shape[0] if (pixels.ndim == 4 or (pixels.ndim == 3 and not color)) else 1
    ds.Rows, ds.Columns = (pixels.shape[-3:-1] if color else pixels.shape[-2:])
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    if color:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop_uid


def _grad(h=8, w=10, dtype=np.uint8, hi=255):
    return (np.linspace(0, hi, h * w).reshape(h, w)).astype(dtype)


# ----------------------------------------------------------------------------------------- pydicom test files
def test_pydicom_test_files_ingest_and_read(tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    rep = ingest(PYDICOM_TEST_FILES, out=out, salt=SALT, unlabelled="keep", use_dicomdir=False, file_timeout=20)
    all_files = {p.relative_to(PYDICOM_TEST_FILES).as_posix() for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file()}
    rows = read_manifest(out)
    paths = read_private_map(private_map_path(out))["files"]
    for r in rows:
        r["image"] = paths[r["image"]]
    in_manifest = {r["image"] for r in rows}
    skipped = {paths[s["file"]]: s["reason"] for s in rep.skipped}
    assert in_manifest | set(skipped) == all_files
    assert not in_manifest & set(skipped)
    assert all(reason for reason in skipped.values())
    assert skipped["MR_truncated.dcm"].startswith("truncated")
    assert "DICOMDIR" in skipped["dicomdirtests/DICOMDIR"]
    assert "not a DICOM" in skipped["README.txt"]
    assert "no pixel data" in skipped["rtplan.dcm"]

    ok, failed = 0, {}
    t0 = time.perf_counter()
    for r in rows:
        path = PYDICOM_TEST_FILES / r["image"]
        try:
            with time_limit(20, path):
                img, meta = read_dicom_frame(path, r["frame"])
        except ImageReadError as e:
            assert e.reason and str(path) in str(e)
            failed[r["image"]] = e.reason
            continue
        assert img.dtype == np.float32 and np.isfinite(img).all()
        assert img.min() >= 0 and img.max() <= 1
        assert img.shape == (3 if r["photometric"] in COLOR else 1, r["rows"], r["columns"])
        ok += 1
    print(f"\npydicom test files: {len(all_files)} files, {len(rows)} manifest rows, {ok} read, "
          f"{len(failed)} failed in the reader, {len(skipped)} skipped at ingestion "
          f"({time.perf_counter() - t0:.1f} s reading)")
    for name, reason in sorted(failed.items()):
        print(f"  reader skip {name}: {reason}")
    assert ok >= 55
    assert len(failed) <= 5


def test_reader_conversions_on_shipped_files():
    get = pydicom.data.get_testdata_file
    ref, _ = read_dicom_frame(get("SC_rgb_dcmtk_+eb+cr.dcm"))
    for name in ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_ybr_full_422_uncompressed.dcm",
                 "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm"):
        img, _ = read_dicom_frame(get(name))
        assert np.abs(img - ref).mean() < 0.02, name  # YBR / JPEG / RLE / J2K all give the same RGB picture
    pal, meta = read_dicom_frame(get("examples_palette.dcm"))
    assert pal.shape[0] == 3 and meta["photometric"] == "PALETTE COLOR" and pal.std() > 0.01
    a, _ = read_dicom_frame(get("MR_small.dcm"))
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        assert np.allclose(read_dicom_frame(get(name))[0], a, atol=1e-6), name
    f0, m0 = read_dicom_frame(get("SC_rgb_rle_2frame.dcm"), 0)
    f1, m1 = read_dicom_frame(get("SC_rgb_rle_2frame.dcm"), 1)
    assert m0["n_frames"] == 2 and not np.allclose(f0, f1)
    with pytest.raises(ImageReadError, match="out of range"):
        read_dicom_frame(get("SC_rgb_rle_2frame.dcm"), 5)
    x = LoadImage(reader=PydicomReader2D(frame="first"))(get("CT_small.dcm"))
    assert tuple(x.shape) == (1, 128, 128)


# ------------------------------------------------------------------------------------------- small archive
def _archive(root: Path) -> dict[str, str]:
    """Writes 5 labelled images + 1 unlabelled; returns {sop uid: label}."""
    labels = {}
    mono1 = _grad(dtype=np.uint16, hi=4095)
    labels[_write_dicom(root / "a" / "mono1.dcm", mono1, "MONOCHROME1", bits_stored=12)] = "pneumonia"
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[0, 0] = (0, 255, 0)
    labels[_write_dicom(root / "a" / "rgb_noext", rgb, "RGB", modality="XC")] = "normal"
    m16 = _grad(dtype=np.uint16, hi=65535)
    labels[_write_dicom(root / "b" / "m16.dcm", m16, extra={"RescaleSlope": "2", "RescaleIntercept": "-100"})] = "normal"
    mf = np.stack([_grad() // (k + 1) for k in range(3)]).astype(np.uint8)
    labels[_write_dicom(root / "b" / "multi.dcm", mf, modality="US")] = "pneumonia;normal"
    _write_dicom(root / "b" / "nolabel.dcm", _grad())
    return labels


def _write_labels(path: Path, labels: dict[str, str]) -> None:
    path.write_text("SOPInstanceUID,dx\n" + "".join(f"{k},\"{v}\"\n" for k, v in labels.items()), encoding="utf-8")


def test_archive_ingest_no_phi_rerun_and_load(tmp_path):
    root = tmp_path / "archive"
    labels = _archive(root)
    csv_path = tmp_path / "labels.csv"
    _write_labels(csv_path, labels)
    out = tmp_path / "out" / "manifest.jsonl"
    rep = ingest(root, csv_path, key="SOPInstanceUID", label_column="dx", out=out, salt=SALT, frames="all")
    assert rep.added == 1 + 1 + 1 + 3 and rep.kept == 0
    assert [s["reason"] for s in rep.skipped] == ["no row in the label CSV for this file's SOPInstanceUID"]

    text = out.read_text() + Path(rep.report).read_text()
    for secret in PHI + list(labels):
        assert secret not in text, secret
    assert SALT not in text
    rows = read_manifest(out)
    assert {r["patient_key"] for r in rows} == {pseudonymise(PHI[2], SALT)}
    assert len({r["id"] for r in rows}) == len(rows)

    # rerun after adding files: only the new ones are added, old rows unchanged
    more = {_write_dicom(root / "c" / f"new{i}.dcm", _grad() + i): "normal" for i in range(2)}
    _write_labels(csv_path, labels | more)
    rep2 = ingest(root, csv_path, key="SOPInstanceUID", label_column="dx", out=out, salt=SALT, frames="all")
    assert rep2.added == 2 and rep2.kept == 4 and rep2.scanned == 3
    rows2 = read_manifest(out)
    assert rows2[: len(rows)] == rows and len(rows2) == len(rows) + 2
    with pytest.raises(MissingSaltError, match="differs"):
        ingest(root, csv_path, key="SOPInstanceUID", label_column="dx", out=out, salt="another-salt-xyz")

    vocab = AttributeVocabulary.from_label_map("xray", {"normal": "normal", "pneumonia": "pneumonia"})
    items = load_manifest(out, vocabulary=vocab)
    assert len(items) == len(rows2)
    by_name = {}
    for it in items:
        assert Path(it["image"]).is_absolute() and Path(it["image"]).exists()
        by_name.setdefault(Path(it["image"]).name, []).append(it)
    assert by_name["mono1.dcm"][0]["label"] == 1 and by_name["rgb_noext"][0]["label"] == 0
    assert [it["label"] for it in by_name["multi.dcm"]] == [[1, 0]] * 3
    assert [it["frame"] for it in by_name["multi.dcm"]] == [0, 1, 2]

    single = [it for it in items if Path(it["image"]).name != "multi.dcm"]
    loaded = [LoadImaged(keys="image", reader=PydicomReader2D())(it)["image"] for it in single]
    for x in loaded:
        assert x.dtype.is_floating_point and 0 <= float(x.min()) and float(x.max()) <= 1
    mono = LoadImaged(keys="image", reader=PydicomReader2D())(by_name["mono1.dcm"][0])["image"]
    assert tuple(mono.shape) == (1, 8, 10)
    assert float(mono[0, 0, 0]) == pytest.approx(1.0) and float(mono[0, -1, -1]) == pytest.approx(0.0)  # inverted
    rgb = LoadImaged(keys="image", reader=PydicomReader2D())(by_name["rgb_noext"][0])["image"]
    assert tuple(rgb.shape) == (3, 6, 7) and float(rgb[0, 3, 3]) == 1.0 and float(rgb[1, 0, 0]) == 1.0
    m16 = LoadImaged(keys="image", reader=PydicomReader2D())(by_name["m16.dcm"][0])["image"]
    assert float(m16.min()) == 0.0 and float(m16.max()) == pytest.approx(1.0)
    frames = [LoadDicomFramed()(it)["image"] for it in by_name["multi.dcm"]]
    assert all(tuple(f.shape) == (1, 8, 10) for f in frames)
    assert [int(f.meta["frame"]) for f in frames] == [0, 1, 2]


def test_bad_files_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "r"
    uid = _write_dicom(root / "good.dcm", _grad())
    data = (root / "good.dcm").read_bytes()
    (root / "truncated.dcm").write_bytes(data[:-30])
    (root / "zero.dcm").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n")
    ds = pydicom.dcmread(root / "good.dcm")
    del ds.PixelData
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(root / "nopixels.dcm")
    phi_dir = root / "Doe_Jane_PHIMARKER"
    phi_dir.mkdir()
    (phi_dir / "junk").write_bytes(os.urandom(300))
    (root / "copy_of_good").write_bytes(data)

    rep = ingest(root, out=tmp_path / "m.csv", salt=SALT, unlabelled="keep", pseudonymise_report_paths=True)
    assert rep.added == 1
    reasons = sorted(s["reason"] for s in rep.skipped)
    assert any(r.startswith("truncated") for r in reasons)
    assert "empty file (0 bytes)" in reasons
    assert "no pixel data (not an image object)" in reasons
    assert sum(r.startswith("not a DICOM file") for r in reasons) == 2
    assert any(r.startswith("duplicate SOP instance") for r in reasons)
    report_text = Path(rep.report).read_text()
    assert "PHIMARKER" not in report_text and "truncated.dcm" not in report_text  # paths pseudonymised
    rows = read_manifest(tmp_path / "m.csv")
    assert rows[0]["instance_key"] == pseudonymise(uid, SALT) and rows[0]["frame"] == 0

    for name, match in (("truncated.dcm", "truncated"), ("zero.dcm", "empty"), ("notes.txt", "not a DICOM"),
                        ("nopixels.dcm", "no pixel data")):
        with pytest.raises(ImageReadError, match=match) as e:
            scan_dicom(root / name)
        assert name in str(e.value)
    for name in ("zero.dcm", "nopixels.dcm", "notes.txt", "truncated.dcm"):
        with pytest.raises(ImageReadError) as e:
            read_image_2d(root / name)
        assert e.value.path.endswith(name) and e.value.reason


def test_salt_required_and_pseudonyms(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTOK_SALT", raising=False)
    root = tmp_path / "r"
    _write_dicom(root / "x.dcm", _grad())
    with pytest.raises(MissingSaltError, match="refusing"):
        ingest(root, out=tmp_path / "m.jsonl", unlabelled="keep")
    assert not (tmp_path / "m.jsonl").exists()
    assert pseudonymise("abc", SALT) == pseudonymise("abc", SALT) != pseudonymise("abc", SALT + "x")
    assert len(pseudonymise("abc", SALT)) == 32

    monkeypatch.setenv("ATTOK_SALT", SALT)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,dx\nx.dcm,normal\n")
    rc = main([str(root), "--labels", str(csv_path), "--key", "path", "--label-column", "dx",
               "--out", str(tmp_path / "m.jsonl")])
    assert rc == 0
    items = load_manifest(tmp_path / "m.jsonl")
    assert items[0]["label"] == "normal" and Path(items[0]["image"]) == (root / "x.dcm").resolve()
    assert main([str(root), "--labels", str(csv_path), "--label-column", "nope", "--out", str(tmp_path / "n.jsonl")]) == 2

    csv_path.write_text("key,dx\nx,abnormal\n")
    rep = ingest(root, csv_path, key=r"regex:(?P<key>[^/]+)\.dcm$", label_column="dx", out=tmp_path / "r.jsonl")
    assert read_manifest(tmp_path / "r.jsonl")[0]["label"] == "abnormal" and rep.added == 1


def test_dicomdir_and_folder_datalist(tmp_path):
    root = PYDICOM_TEST_FILES / "dicomdirtests"
    rep = ingest(root, out=tmp_path / "m.jsonl", salt=SALT, unlabelled="keep", series_slices="middle")
    rows = read_manifest(tmp_path / "m.jsonl")
    paths = read_private_map(private_map_path(tmp_path / "m.jsonl"))["files"]
    assert rows and all(not paths[r["image"]].startswith("TINY_ALPHA") for r in rows)  # only what DICOMDIR lists
    assert not any("not a DICOM" in s["reason"] for s in rep.skipped)
    assert len({r["series_key"] for r in rows if r["modality"] in ("CT", "MR")}) == sum(
        r["modality"] in ("CT", "MR") for r in rows)  # one slice per CT/MR series

    from attok_monai.engines.inference import image_datalist

    with pytest.warns(UserWarning, match="may hold patient identifiers"):
        items = image_datalist(root / "98892003")
    folder_files = sorted(p.relative_to(root / "98892003").as_posix() for p in (root / "98892003").rglob("*")
                          if p.is_file())
    assert [it["id"] for it in items] == folder_files and len(items) == 17  # every file, named by its path
    keyed = image_datalist(root / "98892003", salt=SALT)
    assert all(len(it["id"]) == 16 for it in keyed) and len({it["id"] for it in keyed}) == 17
    pid = pydicom.dcmread(items[0]["image"]).PatientID
    assert all(pid not in it["id"] for it in keyed)


def test_select_indices_and_pil(tmp_path):
    assert select_indices(5) == [2] and select_indices(5, "all") == [0, 1, 2, 3, 4]
    assert select_indices(7, "every:3") == [0, 3, 6] and select_indices(4, -1) == [3]
    with pytest.raises(ValueError):
        select_indices(3, "sideways")
    from PIL import Image

    Image.fromarray(np.full((5, 6, 3), 128, np.uint8)).save(tmp_path / "c.jpg")
    Image.fromarray((np.arange(30).reshape(5, 6) * 1000).astype(np.uint16)).save(tmp_path / "g.png")
    c, _ = read_image_2d(tmp_path / "c.jpg")
    g, _ = read_image_2d(tmp_path / "g.png")
    assert c.shape == (3, 5, 6) and g.shape == (1, 5, 6) and g.max() == 1.0 and g.min() == 0.0
    arr = LoadDicomFramed()({"image": np.zeros((4, 4, 3), np.uint8), "id": "x"})["image"]
    assert tuple(arr.shape) == (3, 4, 4)
