import json

import pytest

from attok_monai.attributes import ATTRIBUTE_BEGIN, ATTRIBUTE_END, Attribute, AttributeVocabulary, block_answer

FUNDUS = {
    0: {"concept": "nodr", "keywords": ["no diabetic retinopathy", "no dr"]},
    1: {"concept": "mildnpdr", "keywords": ["mild non-proliferative diabetic retinopathy", "mild npdr"]},
    2: {"concept": "moderatenpdr", "keywords": ["moderate non-proliferative diabetic retinopathy", "moderate npdr"]},
    3: {"concept": "severedr", "keywords": ["severe diabetic retinopathy", "severe npdr"]},
    4: {"concept": "pdr", "keywords": ["proliferative diabetic retinopathy", "pdr"]},
}


@pytest.fixture
def vocab():
    return AttributeVocabulary.from_label_map("fundus", FUNDUS)


def test_tokens_indices_keywords(vocab):
    assert len(vocab) == 5
    assert vocab.tokens[3] == "<|fundus_severedr|>"
    assert vocab.special_tokens[:2] == [ATTRIBUTE_BEGIN, ATTRIBUTE_END]
    assert vocab.index("<|fundus_severedr|>") == 3 and vocab.index("fundus_pdr") == 4
    assert vocab.token(1) == "<|fundus_mildnpdr|>"
    assert vocab.keywords(4) == ("proliferative diabetic retinopathy", "pdr")
    assert vocab.index_of_label(2) == 2 and vocab.index_of_label("2") == 2


def test_format_and_parse(vocab):
    ans = vocab.format_answer(3)
    assert ans == "<|attribute_begin|><|fundus_severedr|><|attribute_end|> severe diabetic retinopathy"
    parsed = vocab.parse_answer(ans)
    assert parsed.indices == [3] and parsed.text == "severe diabetic retinopathy" and parsed.has_block
    multi = vocab.format_answer([0, 4], text="two findings")
    p = vocab.parse_answer(multi)
    assert p.indices == [0, 4] and p.text == "two findings"
    p = vocab.parse_answer("<|attribute_begin|><|fundus_unknown|><|attribute_end|> x")
    assert p.indices == [] and p.unknown_tokens == ["fundus_unknown"]
    p = vocab.parse_answer("garbage without block")
    assert p.indices == [] and not p.has_block and p.text == "garbage without block"


def test_block_answer_is_the_one_layout(vocab):
    """Every answer form goes through block_answer: with attribute tokens (markers on and off) and plain_markers' empty
    block; parse_answer reads each back."""
    assert vocab.format_answer(3) == block_answer("<|fundus_severedr|>", "severe diabetic retinopathy")
    assert vocab.format_answer(3, "x", markers=False) == block_answer("<|fundus_severedr|>", "x", markers=False)
    empty = block_answer("", "mild npdr")
    assert empty == "<|attribute_begin|><|attribute_end|> mild npdr"
    p = vocab.parse_answer(empty)
    assert p.has_block and p.indices == [] and p.text == "mild npdr"


def test_match_text_prefers_longest(vocab):
    assert vocab.match_text("Severe NPDR.") == [3]
    assert vocab.match_text("the image shows proliferative diabetic retinopathy") == [4]
    assert vocab.match_text("nothing relevant") == []


def test_json_round_trip(vocab, tmp_path):
    path = tmp_path / "vocab.json"
    vocab.to_json(path)
    data = json.loads(path.read_text())
    assert data["attributes"][3]["token"] == "<|fundus_severedr|>"
    again = AttributeVocabulary.from_json(path)
    assert again == vocab and again.index_of_label(4) == 4
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "attrs, match",
    [
        ([], "empty"),
        ([Attribute("Fundus", "dr", ("dr",))], "modality"),
        ([Attribute("fundus", "severe-dr", ("x",))], "concept"),
        ([Attribute("fundus", "dr", ("a",)), Attribute("fundus", "dr", ("b",))], "duplicate token"),
        ([Attribute("fundus", "dr", ())], "keyword"),
        ([Attribute("attribute", "begin", ("x",))], "reserved"),
        ([Attribute("fundus", "a", ("a",), label=1), Attribute("fundus", "b", ("b",), label=1)], "label 1"),
    ],
)
def test_bad_vocabularies(attrs, match):
    with pytest.raises(ValueError, match=match):
        AttributeVocabulary(attrs)


def test_unknown_label_and_index(vocab):
    with pytest.raises(ValueError, match="unknown label 7"):
        vocab.index_of_label(7)
    with pytest.raises(ValueError, match="out of range"):
        vocab.format_answer(9)
    with pytest.raises(ValueError, match="unknown attribute token"):
        vocab.index("<|fundus_nothing|>")
