"""Paper-style VQA scoring on hand-made cases, and the question-only baseline on real VQA-RAD."""

from __future__ import annotations

import pytest
from conftest import require

from attok_monai.data.vqa import read_vqa_rad, split_by_image
from attok_monai.vqa.scoring import (
    format_scores_markdown,
    leading_yes_no,
    normalize_answer,
    question_only_baseline,
    score_vqa,
    token_scores,
)


def test_normalize_answer():
    assert normalize_answer("The Left  Lung.") == "left lung"
    assert normalize_answer("Two") == "2" and normalize_answer("two masses") == "2 masses"
    assert normalize_answer("5.6cm focal, predominantly hypodense") == "5.6cm focal predominantly hypodense"
    assert normalize_answer("X-Ray") == "x ray" and normalize_answer(12) == "12"
    assert normalize_answer("<|attribute_begin|><|rad_ct|><|attribute_end|> CT") == "ct"
    assert normalize_answer("an MRI") == "mri" and normalize_answer(None) == ""


def test_yes_no_and_token_scores():
    assert leading_yes_no("Yes, there is a pneumothorax.") == "yes"
    assert leading_yes_no("No.") == "no" and leading_yes_no("There is no effusion") is None
    assert token_scores("left lung", "the left lung") == (1.0, 1.0)
    r, f1 = token_scores("right upper lobe of lung", "right lung")
    assert r == 1.0 and f1 == pytest.approx(2 * 0.4 * 1.0 / 1.4)
    assert token_scores("liver", "kidney") == (0.0, 0.0)


REFS = [
    {
        "id": "c1",
        "question": "Is there a pneumothorax?",
        "answer": "No",
        "answer_type": "closed",
        "question_type": ["PRES"],
        "organ": "CHEST",
    },
    {
        "id": "c2",
        "question": "Is this normal?",
        "answer": "yes",
        "answer_type": "closed",
        "question_type": ["ABN"],
        "organ": "HEAD",
    },
    {
        "id": "c3",
        "question": "Is this a CT or MRI?",
        "answer": "MRI",
        "answer_type": "closed",
        "question_type": ["MODALITY"],
        "organ": "HEAD",
    },
    {
        "id": "o1",
        "question": "Where is the lesion?",
        "answer": "Left lung",
        "answer_type": "open",
        "question_type": ["POS"],
        "organ": "CHEST",
    },
    {
        "id": "o2",
        "question": "What is abnormal?",
        "answer": "no abnormality",
        "answer_type": "open",
        "question_type": ["ABN", "PRES"],
        "organ": "CHEST",
    },
    {
        "id": "o3",
        "question": "How many masses?",
        "answer": "two",
        "answer_type": "open",
        "question_type": ["COUNT"],
        "organ": "ABD",
    },
]
PREDS = {
    "c1": "no, there is none",  # correct (leading no)
    "c2": "There is nothing wrong, yes",  # wrong: no leading yes
    "c3": "<|attribute_begin|><|rad_mri|><|attribute_end|> MRI.",  # correct after normalisation
    "o1": "the left lung",  # exact
    "o2": "normal",  # not exact; a judge may accept it
    "o3": "2",  # exact via number words
}


def test_score_vqa_without_judge():
    s = score_vqa(PREDS, REFS)
    assert s["n"] == 6 and s["n_closed"] == 3 and s["n_open"] == 3
    assert s["closed_accuracy"] == pytest.approx(2 / 3)
    assert s["open_accuracy"] == pytest.approx(2 / 3)
    assert s["overall_accuracy"] == pytest.approx(4 / 6)
    assert s["open_token_recall"] == pytest.approx(2 / 3) and s["open_token_f1"] == pytest.approx(2 / 3)
    assert s["open_judge_accuracy"] is None
    assert s["by_organ"]["HEAD"]["accuracy"] == pytest.approx(0.5)
    assert s["by_organ"]["CHEST"] == {
        "n": 3,
        "accuracy": pytest.approx(2 / 3),
        "n_closed": 1,
        "closed_accuracy": 1.0,
        "n_open": 2,
        "open_accuracy": 0.5,
    }
    assert s["by_question_type"]["ABN"]["n"] == 2 and s["by_question_type"]["ABN"]["accuracy"] == 0.0
    assert s["worst_question_types"][0] == {"question_type": "ABN", "n": 2, "accuracy": 0.0}
    assert [w["question_type"] for w in s["worst_question_types"]][:2] == ["ABN", "PRES"]
    table = format_scores_markdown(s)
    assert "| 6 | 66.7 | 66.7 | 66.7 | 66.7 | 66.7 | — |" in table and "| ABN | 2 | 0.0 |" in table
    # a list aligned with the references works the same
    assert score_vqa([PREDS[r["id"]] for r in REFS], REFS)["overall_accuracy"] == s["overall_accuracy"]


def test_score_vqa_with_fake_judge():
    calls = []

    def judge(messages):
        text = messages[-1]["content"]
        calls.append(text)
        return "Yes." if "Predicted answer: normal" in text and "Reference answer: no abnormality" in text else "no"

    s = score_vqa(PREDS, REFS, judge=judge)
    assert len(calls) == 1  # only the open answer without an exact match goes to the judge
    assert "Question: What is abnormal?" in calls[0]
    assert s["open_judge_accuracy"] == pytest.approx(1.0)
    assert s["open_accuracy"] == pytest.approx(2 / 3)  # exact match is never changed by the judge
    assert [x.get("judged") for x in s["per_sample"] if x["answer_type"] == "open"] == [True, True, True]


def test_score_vqa_errors():
    with pytest.raises(ValueError, match="no prediction.*o3"):
        score_vqa({k: v for k, v in PREDS.items() if k != "o3"}, REFS)
    with pytest.raises(ValueError, match="answer_type 'maybe'"):
        score_vqa({"x": "a"}, [{"id": "x", "answer": "a", "answer_type": "maybe"}])


def test_question_only_baseline_hand_made():
    train = [
        {"id": "t1", "answer": "Yes", "answer_type": "closed", "question_type": ["PRES"]},
        {"id": "t2", "answer": "yes", "answer_type": "closed", "question_type": ["PRES"]},
        {"id": "t3", "answer": "No", "answer_type": "closed", "question_type": ["PRES"]},
        {"id": "t4", "answer": "Axial", "answer_type": "open", "question_type": ["PLANE"]},
        {"id": "t5", "answer": "No", "answer_type": "closed", "question_type": ["ABN"]},
    ]
    evals = [
        {"id": "e1", "answer_type": "closed", "question_type": ["PRES"]},
        {"id": "e2", "answer_type": "open", "question_type": ["PLANE"]},
        {"id": "e3", "answer_type": "open", "question_type": ["SIZE"]},  # falls back to the open majority
    ]
    assert question_only_baseline(train, evals) == {"e1": "Yes", "e2": "Axial", "e3": "Axial"}


def test_question_only_baseline_real_vqa_rad(data_root):
    root = require(data_root / "vqa_rad" / "VQA_RAD_train.json").parent
    recs = read_vqa_rad(root)
    train, val = split_by_image(recs, val_fraction=0.15, seed=0)
    preds = question_only_baseline(train, val)
    s = score_vqa(preds, val)
    assert s["n"] == len(val)
    assert 0.45 <= s["closed_accuracy"] <= 0.75  # yes/no majority per type is near a coin flip
    assert s["open_accuracy"] < s["closed_accuracy"]
    assert {"HEAD", "CHEST", "ABD"} == set(s["by_organ"])
