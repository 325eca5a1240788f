"""Image tables + folders -> data lists: real HAM10000 / OCT / LC25000 folders, bad-row reporting, class folders."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.image_transforms import image_load_transforms
from attok_monai.data.table import DatasetTableError, TableImageDataset, TableSpec, load_table, table_datalist
from tests.conftest import require

DERMA = AttributeVocabulary.from_label_map(
    "derma",
    {
        "akiec": "actinic keratosis",
        "bcc": "basal cell carcinoma",
        "bkl": "benign keratosis",
        "df": "dermatofibroma",
        "mel": "melanoma",
        "nv": "melanocytic nevus",
        "vasc": "vascular lesion",
    },
)
OCT = AttributeVocabulary.from_label_map("oct", {"CNV": "choroidal neovascularisation", "NORMAL": "normal retina"})
LUNG = AttributeVocabulary.from_label_map(
    "pathology",
    {"lung_n": "benign lung tissue", "lung_aca": "lung adenocarcinoma", "lung_scc": "lung squamous cell carcinoma"},
)
# README of /work/shared/data/ham10000: per-class counts of the lesion-grouped split
HAM_TRAIN = {"akiec": 229, "bcc": 361, "bkl": 770, "df": 81, "mel": 780, "nv": 4694, "vasc": 100}
HAM_VAL = {"akiec": 33, "bcc": 51, "bkl": 110, "df": 11, "mel": 111, "nv": 670, "vasc": 14}


def _ham_spec(root: Path, **kw) -> TableSpec:
    base = dict(
        table=str(root / "HAM10000_metadata.csv"),
        id_column="image_id",
        image_dir="images",
        extension=".jpg",
        label_columns="dx",
        group_column="lesion_id",
    )
    return TableSpec(**(base | kw))


def _names(items, vocab) -> Counter:
    return Counter(str(vocab[it["label"]].label) for it in items)


@pytest.fixture(scope="module")
def ham(data_root) -> Path:
    return require(data_root / "ham10000" / "HAM10000_metadata.csv").parent


# ------------------------------------------------------------------------------------------------ HAM10000
def test_ham10000_given_split_file(ham):
    # the README's "10015" is the whole HAM10000; the metadata here lists only the 8015 images present
    # (train 7015 + val 1000; the 2000 test images are withheld)
    spec = _ham_spec(ham, split_file=str(ham / "splits.csv"))
    res = load_table(DERMA, None, spec=spec)
    assert res.counts["rows"] == len(pd.read_csv(ham / "HAM10000_metadata.csv")) == 8015
    assert res.counts["problems"] == 0 and res.split_counts == {"train": 7015, "val": 1000}
    train = table_datalist(DERMA, "train", spec=spec)
    val = table_datalist(DERMA, "val", spec=spec)
    assert len(train) == 7015 and len(val) == 1000
    assert _names(train, DERMA) == HAM_TRAIN and _names(val, DERMA) == HAM_VAL
    assert len(DERMA) == 7
    first = {it["id"]: it for it in train}["ISIC_0027419"]  # metadata row 1: bkl
    assert first["label"] == DERMA.index_of_label("bkl") == 2
    assert first["image"] == os.path.abspath(ham / "images" / "ISIC_0027419.jpg")
    assert Path(first["image"]).is_absolute() and first["split"] == "train"
    assert first["group"].startswith("g") and "HAM_" not in first["group"]  # lesion ids are pseudonymised
    # the given file honoured even when split fractions are also given (the file always wins)
    res2 = load_table(DERMA, "val", spec=spec, split_fractions={"train": 0.5, "val": 0.5}, split_seed=3)
    assert res2.split_info.source == "file" and res2.split_counts == {"train": 7015, "val": 1000}
    assert [it["id"] for it in res2.items] == [it["id"] for it in val]
    assert res2.split_info.groups_in_several_splits == 0


def test_ham10000_computed_split_grouped_stratified_deterministic(ham, tmp_path):
    meta = pd.read_csv(ham / "HAM10000_metadata.csv")
    lesion_of = dict(zip(meta.image_id, meta.lesion_id))
    spec = _ham_spec(ham, split_file=str(tmp_path / "split.csv"), split_fractions={"train": 0.8, "val": 0.2})
    res = load_table(DERMA, None, spec=spec, split_seed=7)
    info = res.split_info
    assert info.source == "computed" and (tmp_path / "split.csv").is_file()
    assert info.counts["train"] + info.counts["val"] == 8015
    assert abs(info.counts["val"] / 8015 - 0.2) < 0.01
    parts = {s: [it for it in res.items if it["split"] == s] for s in ("train", "val")}
    lesions = {s: {lesion_of[it["id"]] for it in items} for s, items in parts.items()}
    assert not lesions["train"] & lesions["val"]  # no lesion in two parts
    overall = meta.dx.value_counts(normalize=True)
    for s, items in parts.items():
        share = pd.Series(_names(items, DERMA)) / len(items)
        for dx, p in overall.items():
            assert abs(share[dx] - p) < 0.01, (s, dx, share[dx], p)
    # the split file records seed and counts, holds no lesion ids, and is what a later run reads
    text = (tmp_path / "split.csv").read_text()
    assert '"seed": 7' in text and '"counts"' in text and "HAM_" not in text
    again = load_table(DERMA, "val", spec=spec, split_seed=99)  # seed ignored: the file wins now
    assert again.split_info.source == "file" and again.split_info.seed == 7
    assert [it["id"] for it in again.items] == [it["id"] for it in parts["val"]]
    # deterministic for a seed, different for another seed (computed without a file)
    a = load_table(DERMA, "val", spec=spec, split_file=None, split_seed=7).items
    b = load_table(DERMA, "val", spec=spec, split_file=None, split_seed=8).items
    assert [it["id"] for it in a] == [it["id"] for it in parts["val"]]
    assert [it["id"] for it in a] != [it["id"] for it in b]


def test_ham10000_load_chain(ham):
    ds = TableImageDataset(DERMA, "val", spec=_ham_spec(ham, split_file=str(ham / "splits.csv")), size=64)
    assert len(ds) == 1000 and ds.counts["items"] == 1000
    for i in range(0, 1000, 125):  # 8 images
        x = ds[i]
        img = x["image"]
        assert isinstance(img, torch.Tensor) and img.shape == (3, 64, 64) and img.dtype == torch.float32
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.max()) > 0.2
        assert isinstance(x["label"], int) and x["split"] == "val"
    # 200x150 landscape: resized to 64x48 and zero-padded top and bottom (8 rows each)
    img = ds[0]["image"]
    assert float(img[:, :8].abs().sum()) == 0.0 and float(img[:, -8:].abs().sum()) == 0.0
    assert float(img[:, 8:56].amax()) > 0


# ------------------------------------------------------------------------------------------------ OCT, LC25000
def test_oct_cnv_counts_and_grey_to_rgb(data_root):
    labels = require(data_root / "oct_cnv" / "labels.csv")
    spec = TableSpec(table=str(labels), path_column="image", label_columns="label", split_column="split")
    train = table_datalist(OCT, "train", spec=spec)
    val = table_datalist(OCT, "val", spec=spec)
    assert len(train) == 4109 and len(val) == 462
    assert _names(train, OCT) == {"CNV": 2031, "NORMAL": 2078} and _names(val, OCT) == {"CNV": 241, "NORMAL": 221}
    assert train[0]["id"] == "images/cnv_train_1001" and train[0]["group"] is None  # no patient ids in this set
    chain = image_load_transforms(size=32)
    img = chain(dict(val[0]))["image"]
    assert img.shape == (3, 32, 32) and torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    grey = image_load_transforms(size=32, channels=1)(dict(val[0]))["image"]
    assert grey.shape == (1, 32, 32) and torch.allclose(grey[0], img[0])


def test_lc25000_counts_and_grouped_split(data_root, tmp_path):
    labels = require(data_root / "lc25000_lung" / "labels.csv")
    spec = TableSpec(
        table=str(labels), path_column="image", label_columns="label", group_column="group", split_column="split"
    )
    res = load_table(LUNG, None, spec=spec)
    assert res.split_counts == {"train": 1740, "val": 238}
    train = [it for it in res.items if it["split"] == "train"]
    val = [it for it in res.items if it["split"] == "val"]
    assert _names(train, LUNG) == {"lung_aca": 362, "lung_n": 1038, "lung_scc": 340}
    assert _names(val, LUNG) == {"lung_aca": 51, "lung_n": 142, "lung_scc": 45}
    assert not {it["group"] for it in train} & {it["group"] for it in val}  # the given split is grouped
    # a split computed by group never puts one group (one original tile and its copies) in two parts
    raw_group = dict(zip(*[pd.read_csv(labels)[c] for c in ("image", "group")]))
    computed = load_table(
        LUNG,
        None,
        spec=spec,
        split_column=None,
        split_file=str(tmp_path / "lung_split.json"),
        split_fractions={"train": 0.7, "val": 0.1, "test": 0.2},
        split_seed=0,
    )
    seen: dict[str, str] = {}
    for it in computed.items:
        g = raw_group[it["id"] + ".jpg"]
        assert seen.setdefault(g, it["split"]) == it["split"], g
    assert computed.split_info.groups_in_several_splits == 0
    assert set(computed.split_counts) == {"train", "val", "test"}
    assert abs(computed.split_counts["test"] / len(computed.items) - 0.2) < 0.03
    saved = json.loads((tmp_path / "lung_split.json").read_text())
    assert saved["seed"] == 0 and saved["counts"] == computed.split_info.counts and len(saved["assignment"]) == 1978


# ------------------------------------------------------------------------------------------------ bad input
def _png(path: Path, mode: str = "RGB", size=(12, 10), value=128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        im = Image.new("RGB", size, (value, 0, 255 - value)).convert("P")
    else:
        im = Image.new(mode, size, value if mode in ("L", "I;16") else (value,) * len(mode))
    im.save(path)


def _bad_table(tmp_path: Path) -> Path:
    for name in ("a", "b", "c", "d"):
        _png(tmp_path / "img" / f"{name}.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows = [
        ("a", "img/a.png", "nv"),  # row 1 fine
        ("b", "img/missing.png", "nv"),  # row 2: missing file
        ("c", "img/c.png", "melanoma?"),  # row 3: unknown label
        ("a", "img/d.png", "mel"),  # row 4: duplicate id
        ("e", "img/broken.png", "bkl"),  # row 5: unreadable (verify_images only)
        ("f", "img/d.png", "df"),  # row 6 fine
    ]
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "file", "dx"])
        w.writerows(rows)
    return path


def test_bad_rows_raise_one_clear_error(tmp_path):
    spec = TableSpec(table=str(_bad_table(tmp_path)), id_column="sample", path_column="file", label_columns="dx")
    with pytest.raises(DatasetTableError) as exc:
        load_table(DERMA, spec=spec, verify_images=True)
    msg = str(exc.value)
    assert "4 problem(s) in 4 of 6 row(s)" in msg
    assert "row 2 (id 'b'): missing_image" in msg and "missing.png" in msg
    assert "row 3 (id 'c'): unknown_label" in msg and "'melanoma?'" in msg and "'dx'" in msg
    assert "row 4 (id 'a'): duplicate_id" in msg and "first used in row 1" in msg
    assert "row 5 (id 'e'): unreadable_image" in msg and "broken.png" in msg
    assert [(p.row, p.kind) for p in exc.value.problems] == [
        (2, "missing_image"),
        (3, "unknown_label"),
        (4, "duplicate_id"),
        (5, "unreadable_image"),
    ]
    # without verify_images the broken file is not opened (3 problems)
    with pytest.raises(DatasetTableError, match=r"3 problem\(s\) in 3 of 6 row"):
        load_table(DERMA, spec=spec)


def test_bad_rows_skip_writes_report(tmp_path):
    spec = TableSpec(table=str(_bad_table(tmp_path)), id_column="sample", path_column="file", label_columns="dx")
    report = tmp_path / "out" / "skipped.csv"
    res = load_table(DERMA, spec=spec, on_error="skip", report_path=report, verify_images=True)
    assert [it["id"] for it in res.items] == ["a", "f"]
    assert [it["label"] for it in res.items] == [DERMA.index_of_label("nv"), DERMA.index_of_label("df")]
    assert res.counts["rows"] == 6 and res.counts["skipped"] == 4 and res.counts["valid"] == 2
    assert res.counts["missing_image"] == 1 and res.counts["unknown_label"] == 1
    assert res.counts["duplicate_id"] == 1 and res.counts["unreadable_image"] == 1
    rows = list(csv.DictReader(open(report)))
    assert [(r["row"], r["id"], r["problem"]) for r in rows] == [
        ("2", "b", "missing_image"),
        ("3", "c", "unknown_label"),
        ("4", "a", "duplicate_id"),
        ("5", "e", "unreadable_image"),
    ]
    assert res.report_path == str(report) and not list(report.parent.glob(".*.tmp"))


def test_many_bad_rows_listed_first_ten_and_total(tmp_path):
    pd.DataFrame({"id": [f"x{i}" for i in range(25)], "label": ["nv"] * 25}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetTableError) as exc:
        table_datalist(DERMA, table=str(tmp_path / "t.csv"), id_column="id", image_dir="images", extension="png")
    msg = str(exc.value)
    assert "25 problem(s) in 25 of 25 row(s)" in msg and "missing_image: 25" in msg
    assert "row 10 (id 'x9')" in msg and "row 11 (id" not in msg and "... and 15 more." in msg
    assert str(tmp_path / "images" / "x0.png") in msg


def test_missing_column_is_named(tmp_path):
    pd.DataFrame({"id": ["a"], "dx": ["nv"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetTableError, match=r"no column\(s\) \['label'\]"):
        table_datalist(DERMA, table=str(tmp_path / "t.csv"), id_column="id")


# ------------------------------------------------------------------------------------------------ folders, multi-label
def test_class_per_folder_tree(tmp_path):
    root = tmp_path / "tree"
    _png(root / "nv" / "n1.png", "L", size=(10, 10), value=200)
    _png(root / "nv" / "n2.png", "RGBA")
    _png(root / "mel" / "m1.png", "RGB", size=(8, 16))
    _png(root / "mel" / "sub" / "m2.png", "P")
    (root / "mel" / "notes.txt").write_text("not an image")
    items = table_datalist(DERMA, class_folders=str(root))
    got = {it["id"]: it["label"] for it in items}
    assert got == {"mel/m1": 4, "mel/sub/m2": 4, "nv/n1": 5, "nv/n2": 5}
    ds = TableImageDataset(DERMA, class_folders=str(root), size=16)
    for x in ds:
        assert x["image"].shape == (3, 16, 16) and x["image"].dtype == torch.float32
        assert 0 <= float(x["image"].min()) and float(x["image"].max()) <= 1
    grey = {x["id"]: x["image"] for x in ds}["nv/n1"]
    np.testing.assert_allclose(grey.numpy(), 200 / 255, atol=1e-5)
    tall = {x["id"]: x["image"] for x in ds}["mel/m1"]  # 8 wide x 16 high -> 8x16 centred, zero left/right
    assert float(tall[:, :, :4].abs().sum()) == 0 and float(tall[:, :, 4:12].min()) > 0
    # <split>/<class>/ trees; an unknown class folder is reported
    _png(tmp_path / "s" / "train" / "nv" / "a.png")
    _png(tmp_path / "s" / "val" / "bcc" / "b.png")
    _png(tmp_path / "s" / "val" / "zzz" / "c.png")
    with pytest.warns(UserWarning, match="skipped 1 bad row"):  # skipped without a report file: still said
        res = load_table(DERMA, "val", class_folders=str(tmp_path / "s"), split_folders=True, on_error="skip")
    assert [(it["id"], it["label"], it["split"]) for it in res.items] == [("val/bcc/b", 1, "val")]
    assert res.counts["unknown_label"] == 1 and res.problems[0].id == "val/zzz/c"


def test_multi_label_columns_separator_binary_and_json(tmp_path):
    for n in ("a", "b", "c"):
        _png(tmp_path / f"{n}.png")
    pd.DataFrame({"f": ["a.png", "b.png", "c.png"], "dx": ["nv|mel", "bcc", "mel| nv |nv"]}).to_csv(
        tmp_path / "sep.tsv", sep="\t", index=False
    )
    items = table_datalist(
        DERMA, table=str(tmp_path / "sep.tsv"), path_column="f", label_columns="dx", label_separator="|"
    )
    assert [it["label"] for it in items] == [[5, 4], [1], [4, 5]]
    pd.DataFrame({"f": ["a.png", "b.png"], "mel": [1, 0], "nv": [1, 1]}).to_csv(tmp_path / "bin.csv", index=False)
    items = table_datalist(
        DERMA, table=str(tmp_path / "bin.csv"), path_column="f", label_columns=["mel", "nv"], binary_labels=True
    )
    assert [it["label"] for it in items] == [[4, 5], [5]]
    records = [{"f": "a.png", "dx": ["df", "vasc"], "site": "back"}, {"f": "b.png", "dx": "akiec", "site": None}]
    (tmp_path / "t.json").write_text(json.dumps(records))
    items = table_datalist(DERMA, table=str(tmp_path / "t.json"), path_column="f", label_columns="dx")
    assert [it["label"] for it in items] == [[3, 6], 0] and items[0]["id"] == "a"


def test_dicom_rows_verified_and_dispatched_to_a_given_reader(tmp_path):
    import shutil

    pydicom_data = pytest.importorskip("pydicom.data")
    try:
        src = pydicom_data.get_testdata_file("CT_small.dcm", download=False)  # shipped with pydicom, no download
    except TypeError:
        src = pydicom_data.get_testdata_file("CT_small.dcm")
    if src is None:
        pytest.skip("pydicom test file CT_small.dcm not installed")
    shutil.copy(src, tmp_path / "ct.dcm")
    _png(tmp_path / "x.png", "L")
    pd.DataFrame({"f": ["ct.dcm", "x.png"], "dx": ["bcc", "nv"]}).to_csv(tmp_path / "t.csv", index=False)
    ds = TableImageDataset(
        DERMA,
        table=str(tmp_path / "t.csv"),
        path_column="f",
        label_columns="dx",
        verify_images=True,
        reader="PydicomReader",
        intensity_range=None,  # 12-bit CT: per-image min-max
        size=32,
    )
    ct, png = ds[0]["image"], ds[1]["image"]
    assert ct.shape == png.shape == (3, 32, 32) and ct.dtype == torch.float32
    assert 0.0 <= float(ct.min()) and 0.5 < float(ct.max()) <= 1.0 and float(ct.std()) > 0.05
    assert ds[0]["id"] == "ct" and ds[0]["label"] == 1


def test_class_folders_take_dicom_and_nifti_beside_png(tmp_path):
    """A class-per-folder tree mixing PNG, DICOM and NIfTI: every file is listed and read to (3, S, S) in [0, 1]."""
    import nibabel as nib

    from tests.test_dicom import _write_dicom

    root = tmp_path / "tree"
    _png(root / "nv" / "n1.png", "L", size=(10, 10), value=200)
    (root / "mel").mkdir(parents=True)
    _write_dicom(root / "mel" / "m1.dcm", (np.arange(100, dtype=np.uint16).reshape(10, 10) * 40), bits_stored=12)
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((10, 10, 1)).astype(np.float32), np.eye(4)),
             str(root / "mel" / "m2.nii.gz"))
    items = table_datalist(DERMA, class_folders=str(root))
    assert {it["id"]: it["label"] for it in items} == {"mel/m1": 4, "mel/m2.nii": 4, "nv/n1": 5}
    ds = TableImageDataset(DERMA, class_folders=str(root), size=16)
    for x in ds:
        assert x["image"].shape == (3, 16, 16) and 0 <= float(x["image"].min()) <= float(x["image"].max()) <= 1
        assert float(x["image"].max()) > 0.5
