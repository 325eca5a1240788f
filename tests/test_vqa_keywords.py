"""Attribute keywords for VQA: lexicon extractor on real VQA-RAD pairs, LLM workflow with a stub chat, the
build_vocabulary command with its cache."""

from __future__ import annotations

import json

import pytest
from conftest import require

from attok_monai.attributes import AttributeVocabulary
from attok_monai.data.vqa import read_vqa_rad, vqa_datalist
from attok_monai.vqa import build_vocabulary as bv
from attok_monai.vqa.keywords import Lexicon, LexiconExtractor, LLMExtractor, answer_polarity
from attok_monai.vqa.llm import parse_json_response


@pytest.fixture(scope="module")
def rad_root(data_root):
    return require(data_root / "vqa_rad" / "VQA_RAD_train.json").parent


@pytest.fixture(scope="module")
def rad(rad_root):
    return {r.id: r for r in read_vqa_rad(rad_root)}


# hand-checked against the released questions and answers
EXPECTED = {
    # "Are regions of the brain infarcted?" / "Yes"
    "vqa_rad_0": ["infarct", "head", "brain"],
    # "Are the lungs normal appearing?" / "No"  -> status flips to abnormal
    "vqa_rad_1": ["abnormal", "chest", "lung"],
    # "Is there evidence of a pneumothorax" / "No" -> the denied finding becomes no_finding
    "vqa_rad_2": ["no_finding", "chest"],
    # "What type of imaging was used?" / "MR - T2 weighted"
    "vqa_rad_1414": ["mri", "head"],
    # "On what side of the body is there pathology?" / "right sided pleural effusion" (no token for "right")
    "vqa_rad_1912": ["abnormal", "pleural_effusion", "chest"],
    # "Is the hila normal or enlarged?" / "Enlarged" -> the unchosen alternative "normal" is not stated
    "vqa_rad_240": ["chest"],
    # "Is the lesion on the patient's right or left side?" / "Left side" -> the lesion stays, the side does not
    "vqa_rad_365": ["lesion", "head"],
}
# position questions: nothing beyond the dataset's own organ field
NONE_FROM_TEXT = {
    "vqa_rad_302": "chest",  # "Where is the catheter tip located?" / "Right superior cavoatrial junction"
    "vqa_rad_426": "head",  # "Which side is the lateral ventricle visible on?" / "Left"
}


def test_lexicon_on_real_vqa_rad_pairs(rad):
    ex = LexiconExtractor()
    for qid, expected in EXPECTED.items():
        assert ex.extract(rad[qid]) == expected, (qid, rad[qid].question, rad[qid].answer)
    text_only = LexiconExtractor(use_aux=False)
    for qid, organ in NONE_FROM_TEXT.items():
        assert text_only.extract(rad[qid]) == [], (qid, rad[qid].question)
        assert ex.extract(rad[qid]) == [organ]


def test_lexicon_never_fires_on_positions_sizes_colours_counts():
    ex = LexiconExtractor(use_aux=False)
    for answer in ["left", "right upper lobe", "3 cm", "5.6cm", "two", "2", "white", "axial", "bilateral", "small"]:
        assert ex.extract({"question": "Where / how large / how many / what colour?", "answer": answer}) == []
    # word boundaries: "mr" inside "mri" or "pa" never matters, "ct" inside "contrast"/"act" never fires
    assert ex.extract({"question": "Was contrast used? Did the patient act?", "answer": "yes"}) == []
    assert ex.extract({"question": "what modality", "answer": "X-ray"}) == ["xray"]
    assert ex.extract({"question": "what modality", "answer": "computed tomography"}) == ["ct"]
    assert ex.extract({"question": "Is this a CT or an MRI?", "answer": "MRI"}) == ["mri"]
    assert ex.extract({"question": "Is this an MRI?", "answer": "No"}) == []
    assert ex.extract({"question": "Is there a pleural effusion?", "answer": "not sure"}) == []
    assert ex.extract({"question": "Are there effusions?", "answer": "yes"}) == ["pleural_effusion"]


def test_lexicon_aux_fields_and_validation(tmp_path):
    ex = LexiconExtractor()
    slake = {
        "question": "Which organ is abnormal?",
        "answer": "Heart",
        "modality": "X-Ray",
        "location": "Chest_heart",
        "organ": "Chest_heart",
    }
    assert ex.extract(slake) == ["xray", "abnormal", "chest", "heart"]
    assert ex.extract({"question": "q", "answer": "a", "modality": "CT", "organ": "Pelvic Cavity"}) == ["ct", "pelvis"]
    assert answer_polarity("Yes, there is", ex.lexicon) == "yes" and answer_polarity("None", ex.lexicon) == "no"
    assert answer_polarity("not sure", ex.lexicon) == "unsure" and answer_polarity("liver", ex.lexicon) is None
    lx = Lexicon.load()
    assert lx.name == "radiology" and lx.version == "1.0.0" and {"ct", "mri", "xray", "normal"} <= set(lx.entries)
    bad = json.loads(json.dumps(lx.raw))
    bad["concepts"].append({"concept": "side", "group": "finding", "keywords": ["left"]})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="'left' is only positions"):
        Lexicon.load(tmp_path / "bad.json")
    bad["concepts"][-1] = {"concept": "ptx2", "group": "finding", "keywords": ["pneumothorax"]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="already belongs to concept 'pneumothorax'"):
        Lexicon.load(tmp_path / "bad.json")
    assert LexiconExtractor().cache_key().startswith("lexicon:radiology:1.0.0:")


class StubChat:
    """A fake OpenAI-style chat: answers each of the three prompts by keyword; records the calls."""

    def __init__(self):
        self.calls = []
        self.model_name = "stub"

    def __call__(self, messages):
        text = messages[-1]["content"]
        self.calls.append(text)
        if "Candidates (keyword: count)" in text:
            return (
                '```json\n{"pleural effusion": ["pleural effusion", "effusion"], "ct": ["ct"], "left": ["left"]}\n```'
            )
        if "Assign attribute concepts" in text:
            q = text.split("Question:")[1].split("Answer:")[0].lower()
            return json.dumps([k for k in ("effusion", "ct", "liver") if k in q])
        q = text.split("Question:")[1].split("Auxiliary")[0].lower()
        kws = [k for k in ("pleural effusion", "effusion", "ct", "left", "3 cm") if k in q]
        return json.dumps({"sentence": "...", "keywords": kws})


def test_llm_extractor_three_stages_with_stub():
    recs = [
        {"id": "a", "question": "Is there a pleural effusion on the left?", "answer": "yes"},
        {"id": "b", "question": "Is the effusion 3 cm?", "answer": "no"},
        {"id": "c", "question": "Is this a CT?", "answer": "yes"},
        {"id": "d", "question": "Is the liver seen on CT?", "answer": "yes"},
    ]
    chat = StubChat()
    ex = LLMExtractor(chat, min_count=1)
    with pytest.raises(RuntimeError, match="fit"):
        ex.extract(recs[0])
    assert ex.propose(recs[0]) == ["pleural effusion", "effusion"]  # stage 1; "left" is blocked
    out = ex.extract_all(recs)
    assert ex.vocabulary == {"pleural_effusion": ["pleural effusion", "effusion"], "ct": ["ct"]}  # "left" blocked
    assert out == {
        "a": ["pleural_effusion"],
        "b": ["pleural_effusion"],
        "c": ["ct"],
        "d": ["ct"],
    }  # liver: not in vocab
    assert len(chat.calls) == 1 + 4 + 1 + 4  # the extra propose, 4 proposals, one merge, 4 assignments
    assert "3 cm" not in ex.candidate_counts and ex.candidate_counts["ct"] == 2
    assert ex.cache_key().startswith("llm:stub:")
    assert parse_json_response('Sure! ["a", "b"] hope it helps') == ["a", "b"]


def test_build_vocabulary_command_on_real_vqa_rad(rad_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "vocab"
    args = ["--dataset", "vqa_rad", "--root", str(rad_root), "--out", str(out), "--min-count", "5"]
    assert bv.main(args) == 0
    assert "cache written" in capsys.readouterr().out
    vocab = AttributeVocabulary.from_json(out / "attribute_vocabulary.json")
    assign = json.loads((out / "assignments.json").read_text())
    assert len(assign) == 1797 and 20 <= len(vocab) <= 80
    assert {"<|rad_ct|>", "<|rad_mri|>", "<|rad_xray|>", "<|rad_normal|>", "<|rad_abnormal|>", "<|rad_lung|>"} <= set(
        vocab.tokens
    )
    assert assign["vqa_rad_2"] == ["<|rad_no_finding|>", "<|rad_chest|>"]
    assert all(t in vocab.tokens for ts in assign.values() for t in ts)
    csv_rows = (out / "concept_report.csv").read_text().splitlines()
    assert csv_rows[0] == "concept,group,count,fraction,kept" and csv_rows[1].startswith("chest,organ,620,")
    dropped = [r.split(",")[0] for r in csv_rows[1:] if r.endswith(",0")]
    assert dropped and not any(f"<|rad_{c}|>" in vocab.tokens for c in dropped)
    assert "| chest | organ | 620 | yes |" in (out / "concept_report.md").read_text()
    # records -> data list with attribute indices and the multi-attribute answer format
    items = vqa_datalist(read_vqa_rad(rad_root)[:3], assignment=assign, vocab=vocab)
    assert items[2]["attributes"] == [vocab.index("<|rad_no_finding|>"), vocab.index("<|rad_chest|>")]
    assert vocab.format_answer(items[2]["attributes"], "No") == (
        "<|attribute_begin|><|rad_no_finding|><|rad_chest|><|attribute_end|> No"
    )

    # second run: the cached extraction is reused (the extractor is not called)
    def boom(self, records):
        raise AssertionError("extractor ran again despite the cache")

    monkeypatch.setattr(bv.LexiconExtractor, "extract_all", boom)
    assert bv.main(args) == 0
    assert "cache reused" in capsys.readouterr().out
    assert json.loads((out / "assignments.json").read_text()) == assign
    # a different lexicon version is a different cache key
    lx = Lexicon.load()
    raw = dict(lx.raw, version="1.0.1")
    (tmp_path / "lex.json").write_text(json.dumps(raw))
    with pytest.raises(AssertionError, match="extractor ran again"):
        bv.main([*args, "--lexicon", str(tmp_path / "lex.json")])
