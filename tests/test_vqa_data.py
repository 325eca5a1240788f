"""VQA readers: real VQA-RAD (skips when absent) and hand-written SLAKE / PathVQA files in tmp_path."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import numpy as np
import pytest
from conftest import require
from PIL import Image

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.vqa import (
    VQARecordError,
    read_pathvqa,
    read_slake,
    read_vqa,
    read_vqa_rad,
    split_by_image,
    vqa_datalist,
)


def _jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def vqa_rad(data_root):
    root = require(data_root / "vqa_rad" / "VQA_RAD_train.json").parent
    return read_vqa_rad(root)


def test_vqa_rad_real_counts_and_cleaning(vqa_rad):
    assert len(vqa_rad) == 1797
    assert vqa_rad.report.n_read == 1797 and vqa_rad.report.n_skipped == 0
    types = Counter(r.answer_type for r in vqa_rad)
    assert types == {"closed": 1027, "open": 770}  # includes the two "CLOSED " records
    by_id = {r.id: r for r in vqa_rad}
    assert by_id["vqa_rad_2156"].answer_type == "closed" and by_id["vqa_rad_2157"].answer_type == "closed"
    assert len({r.image for r in vqa_rad}) <= 314
    assert len({r.id for r in vqa_rad}) == 1797
    combined = [r for r in vqa_rad if len(r.question_type) > 1]
    assert len(combined) == 26 and ["POS", "PRES"] in [r.question_type for r in combined]
    all_types = {t for r in vqa_rad for t in r.question_type}
    assert {"ATRIB", "PRSE", "Other"}.isdisjoint(all_types) and {"PRES", "ATTRIB", "OTHER"} <= all_types
    assert all(isinstance(r.answer, str) and r.answer == r.answer.strip() and r.answer for r in vqa_rad)
    assert {"12", "4", "2"} <= {r.answer for r in vqa_rad}  # int answers became text
    assert {r.organ for r in vqa_rad} == {"HEAD", "CHEST", "ABD"}
    r0 = by_id["vqa_rad_0"]
    assert r0.question == "Are regions of the brain infarcted?" and r0.answer == "Yes"
    assert r0.image.endswith("synpic54610.jpg") and r0.question_type == ["PRES"] and r0.split == "train"
    # the phrase_type filter: every record of the training file is a train pair
    folder = vqa_rad.report.source.rsplit("/", 1)[0]
    assert len(read_vqa("vqa-rad", folder, json_file="VQA_RAD_train.json", split="test")) == 0
    with pytest.raises(FileNotFoundError, match="VQA_RAD_test.json"):  # split="test" never falls back to the train file
        read_vqa("vqa-rad", folder, split="test")


def test_vqa_rad_datalist_and_split(vqa_rad):
    items = vqa_datalist(vqa_rad[:20])
    assert set(items[0]) >= {"image", "question", "answer", "answer_type", "question_type", "organ", "id", "attributes"}
    assert items[0]["attributes"] == [] and items[0]["label"] == []
    train, val = split_by_image(vqa_rad, val_fraction=0.2, seed=3)
    assert len(train) + len(val) == len(vqa_rad)
    assert not {r.image for r in train} & {r.image for r in val}
    n_img = len({r.image for r in vqa_rad})
    assert len({r.image for r in val}) == round(n_img * 0.2)
    train2, val2 = split_by_image(list(reversed(vqa_rad)), val_fraction=0.2, seed=3)
    assert {r.id for r in val2} == {r.id for r in val}  # deterministic, independent of input order
    _, val3 = split_by_image(vqa_rad, val_fraction=0.2, seed=4)
    assert {r.id for r in val3} != {r.id for r in val}


def _vqa_rad_file(tmp_path, rows):
    (tmp_path / "images").mkdir(exist_ok=True)
    _jpg(tmp_path / "images" / "synpic1.jpg")
    (tmp_path / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    return tmp_path


def _rad(qid, **kw):
    row = {
        "qid": qid,
        "image_name": "synpic1.jpg",
        "image_organ": "CHEST",
        "question": "Is this normal?",
        "answer": "Yes",
        "answer_type": "CLOSED",
        "question_type": "ABN",
        "phrase_type": "freeform",
    }
    row.update(kw)
    return row


def test_vqa_rad_bad_records_raise_or_skip(tmp_path):
    rows = [
        _rad(1),
        _rad(2, image_name="synpic_missing.jpg"),
        _rad(3, answer_type="MAYBE"),
        _rad(4, question="   "),
        _rad(5, phrase_type="test_freeform", answer=7, answer_type="OPEN", question_type="COUNT"),
    ]
    root = _vqa_rad_file(tmp_path, rows)
    with pytest.raises(VQARecordError, match=r"qid=2.*synpic_missing\.jpg not found"):
        read_vqa_rad(root)
    recs = read_vqa_rad(root, on_error="skip")
    assert [r.id for r in recs] == ["vqa_rad_1", "vqa_rad_5"]
    assert recs.report.skipped == {"missing_image": 1, "unknown_answer_type": 1, "empty_question": 1}
    assert recs.report.n_read == 5 and recs.report.n_kept == 2
    assert ("record qid=3 (item 2)", "unknown_answer_type") in recs.report.skipped_records
    assert "skipped 3" in recs.report.summary()
    assert recs[1].answer == "7" and recs[1].split == "test"
    test_only = read_vqa_rad(root, split="test", on_error="skip")
    assert [r.id for r in test_only] == ["vqa_rad_5"] and test_only.report.filtered["split!=test"] == 4
    with pytest.raises(VQARecordError, match="unknown_answer_type|answer_type 'MAYBE'"):
        read_vqa_rad(root, json_file=root / "VQA_RAD Dataset Public.json", split="train", check_images=False)


def test_slake_reader(tmp_path):
    _jpg(tmp_path / "imgs" / "xmlab1" / "source.jpg")
    _jpg(tmp_path / "imgs" / "xmlab2" / "source.jpg")
    base = {
        "img_id": 1,
        "img_name": "xmlab1/source.jpg",
        "location": "Chest_heart",
        "modality": "X-Ray",
        "base_type": "vqa",
        "triple": ["vhead", "_", "_"],
    }
    rows = [
        base
        | {
            "qid": 10,
            "question": "What modality is used to take this image?",
            "answer": "X-Ray",
            "answer_type": "OPEN",
            "q_lang": "en",
            "content_type": "Modality",
        },
        base
        | {
            "qid": 11,
            "question": "图片是什么模态?",
            "answer": "X光",
            "answer_type": "OPEN",
            "q_lang": "zh",
            "content_type": "Modality",
        },
        base
        | {
            "qid": 12,
            "img_name": "xmlab2/source.jpg",
            "question": "Does the picture contain lung?",
            "answer": "Yes",
            "answer_type": "CLOSED",
            "q_lang": "en",
            "content_type": "Organ",
            "location": "Lung",
            "modality": "CT",
        },
        base
        | {
            "qid": 13,
            "question": "Is this normal?",
            "answer": "No",
            "answer_type": "CLOSE?",
            "q_lang": "en",
            "content_type": "Abnormal",
        },
    ]
    (tmp_path / "validate.json").write_text(json.dumps(rows, ensure_ascii=False))
    with pytest.raises(VQARecordError, match=r"qid=13.*answer_type"):
        read_slake(tmp_path, split="val")
    recs = read_slake(tmp_path, split="val", on_error="skip")
    assert [r.id for r in recs] == ["slake_10", "slake_12"]
    assert recs.report.filtered == {"q_lang!=en": 1} and recs.report.skipped == {"unknown_answer_type": 1}
    r = recs[0]
    assert (r.modality, r.location, r.organ, r.question_type, r.answer_type) == (
        "X-Ray",
        "Chest_heart",
        "Chest_heart",
        ["Modality"],
        "open",
    )
    assert r.image.endswith("xmlab1/source.jpg") and r.split == "val"
    assert len(read_slake(tmp_path, split="validate", q_lang=None, on_error="skip")) == 3
    with pytest.raises(FileNotFoundError):
        read_slake(tmp_path, split="train")


@pytest.mark.parametrize("layout", ["list", "columns", "json"])
def test_pathvqa_reader(tmp_path, layout):
    for name in ("train_0001", "train_0002"):
        _jpg(tmp_path / "images" / "train" / f"{name}.jpg")
    rows = [
        {"image": "train_0001", "question": "Does this image show necrosis?", "answer": "yes"},
        {"image": "train_0001", "question": "What is present?", "answer": "Granuloma"},
        {"image": "train_0002", "question": "is the nucleus enlarged ?", "answer": "No"},
        {"image": "train_0404", "question": "what is shown?", "answer": "tumor"},
        {"image": "train_0002", "question": "", "answer": "tumor"},
    ]
    qa = tmp_path / "qas" / "train"
    qa.mkdir(parents=True)
    if layout == "json":
        (qa / "train_qa.json").write_text(json.dumps(rows))
    else:
        data = rows if layout == "list" else {k: [r[k] for r in rows] for k in rows[0]}
        (qa / "train_qa.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(VQARecordError, match=r"item 3.*train_0404"):
        read_pathvqa(tmp_path)
    recs = read_pathvqa(tmp_path, on_error="skip")
    assert [r.answer_type for r in recs] == ["closed", "open", "closed"]
    assert [r.question_type for r in recs] == [["yes/no"], ["other"], ["yes/no"]]
    assert recs[0].id == "pathvqa_train_0" and recs[0].image.endswith("train_0001.jpg")
    assert recs.report.skipped == {"missing_image": 1, "empty_question": 1}


def test_pathvqa_refuses_code_pickles(tmp_path):
    from fractions import Fraction  # any non-container class stands in for code a pickle could run

    (tmp_path / "train.pkl").write_bytes(pickle.dumps([{"image": "x", "question": "q", "answer": Fraction(1, 2)}]))
    with pytest.raises(VQARecordError, match="refusing to load"):
        read_pathvqa(tmp_path, qa_file=tmp_path / "train.pkl", image_dir=tmp_path)


def test_datalist_with_assignment(tmp_path):
    root = _vqa_rad_file(tmp_path, [_rad(1), _rad(2, question="Is there a pneumothorax?", answer="no")])
    recs = read_vqa_rad(root)
    vocab = AttributeVocabulary.from_label_map("rad", {0: "chest", 1: "no finding", 2: "normal"})
    assign = {"vqa_rad_1": ["<|rad_normal|>", "<|rad_chest|>"], "vqa_rad_2": ["rad_no_finding", "chest"]}
    items = vqa_datalist(recs, assignment=assign, vocab=vocab, split="train")
    assert items[0]["attributes"] == [2, 0] and items[1]["attributes"] == [1, 0]
    assert items[0]["label"] == [2, 0] and items[0]["split"] == "train" and items[0]["answer_type"] == "closed"
    assert vocab.format_answer(items[0]["attributes"], items[0]["answer"]).startswith(
        "<|attribute_begin|><|rad_normal|>"
    )
    with pytest.raises(VQARecordError, match="vqa_rad_2 has no entry"):
        vqa_datalist(recs, assignment={"vqa_rad_1": []}, vocab=vocab)
    with pytest.raises(VQARecordError, match="not in the vocabulary"):
        vqa_datalist(recs, assignment={"vqa_rad_1": ["<|rad_ct|>"], "vqa_rad_2": []}, vocab=vocab)
