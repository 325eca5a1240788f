import numpy as np
import pytest

from attok_monai.attributes import AttributeVocabulary
from attok_monai.metrics import classification_metrics, parse_prediction, per_class_table

V = AttributeVocabulary.from_label_map(
    "fundus",
    {0: ["no diabetic retinopathy", "no dr"], 1: ["mild npdr"], 2: ["moderate npdr"], 3: ["severe npdr"],
     4: ["proliferative diabetic retinopathy", "pdr"]},
)


@pytest.mark.parametrize(
    "text, expect",
    [
        ("<|attribute_begin|> <|fundus_severe_npdr|> <|attribute_end|> severe npdr", 3),
        ("<|attribute_begin|><|fundus_mild_npdr|><|attribute_end|> severe npdr", 1),  # token wins over text
        ("Severe NPDR.", 3),  # text fallback, normalised
        ("the grade is pdr", 4),
        ("no dr", 0),
        ("<unk> <unk>", -1),  # unparseable
        ("mild npdr or severe npdr", -1),  # ambiguous text
        ("", -1),
    ],
)
def test_parse_prediction(text, expect):
    assert parse_prediction(V, text) == expect


def test_classification_metrics_hand_made():
    y = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, -1]
    m = classification_metrics(y, p, num_classes=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class recall 0.5, 1.0, 0.5; precision 1.0, 2/3, 1.0
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [2 * 1 * 0.5 / 1.5, 2 * (2 / 3) * 1 / (5 / 3), 2 * 1 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["unparseable_rate"] == pytest.approx(1 / 6)
    probs = np.eye(3)[[0, 0, 1, 1, 2, 2]] * 0.8 + 0.2 / 3
    assert classification_metrics(y, p, probs, 3)["auc"] == pytest.approx(1.0)
    rows, cm = per_class_table(y, p, ["a", "b", "c"])
    assert cm.shape == (3, 4) and cm[2, 3] == 1 and cm[0, 1] == 1
    assert rows[1]["support"] == 2 and rows[1]["recall"] == 1.0


def test_binary_auc_and_length_mismatch():
    m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]), 2)
    assert m["auc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels but"):
        classification_metrics([0, 1], [0], None, 2)


def test_calibration_ece_hand_computed():
    import numpy as np

    from attok_monai.metrics import calibration

    # two samples at confidence 0.9 (one right), two at 0.6 (both right): |0.5-0.9|*2/4 + |1.0-0.6|*2/4 = 0.4
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    out = calibration([0, 1, 1, 0], probs, n_bins=10)
    assert out["ece"] == pytest.approx(0.4) and out["mce"] == pytest.approx(0.4)
    assert sum(b["count"] for b in out["bins"]) == 4
    perfect = calibration([0, 1], np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect["ece"] == pytest.approx(0.0)


def test_temperature_fit_recovers_and_keeps_the_class():
    import torch

    from attok_monai.handlers.temperature import apply_temperature, fit_temperature

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 4, generator=g) * 3
    labels = torch.distributions.Categorical(logits=logits).sample()  # calibrated at T = 1
    over = torch.softmax(logits * 2.5, -1)  # an over-confident model: T should come out near 2.5
    t = fit_temperature(over, labels)
    assert 2.0 < t < 3.0
    fixed = apply_temperature(over, t)
    assert torch.equal(fixed.argmax(-1), over.argmax(-1)) and torch.allclose(fixed.sum(-1), torch.ones(2000))
    assert apply_temperature(over, None) is over
