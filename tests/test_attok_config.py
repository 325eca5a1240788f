"""AttTokConfig (issue #18): the model's hyper-parameters in one validated dataclass, saved as ``attok.json``."""

from __future__ import annotations

import json

import pytest
import torch

from attok_monai.networks.nets import AttTokConfig, AttTokGPTv
from tests.conftest import tiny_attok

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the keys attok.json held before the config existed (a hand-made dict), all with their defaults
OLD_KEYS = {
    "use_attribute_tokens": True, "use_acc": True, "use_acm": True, "acc_heads": 1, "gamma": 0.1, "momentum": 0.99,
    "tau": 1.0, "acc_inner_dim": None, "fa_position": "decision", "acm_bias": True, "acm_weighting": "mean",
    "prototype_init": "first_batch", "prototype_init_batches": 8, "acc_norm": False, "attribute_init": "keyword",
    "acc_book_grad": True, "acc_logit_scale": 1.0, "acc_logit_scale_learned": False,
    "acc_bias": True, "attribute_markers": True, "plain_markers": False,
}


def test_defaults_are_the_old_hparams():
    assert AttTokConfig().to_dict() == OLD_KEYS


@pytest.mark.parametrize("key, value, match", [
    ("fa_position", "end", "fa_position"), ("acm_weighting", "sum", "acm_weighting"),
    ("prototype_init", "random", "prototype_init"), ("acc_heads", 0, "acc_heads"), ("tau", 0.0, "tau"),
    ("momentum", 1.5, "momentum"), ("prototype_init_batches", 0, "prototype_init_batches"),
    ("acc_inner_dim", 0, "acc_inner_dim"), ("attribute_init", "random", "attribute_init"),
    ("acc_logit_scale", 0.0, "acc_logit_scale"), ("acc_logit_scale", float("nan"), "acc_logit_scale"),
])
def test_post_init_validates(key, value, match):
    with pytest.raises(ValueError, match=match):
        AttTokConfig(**{key: value})


def test_unknown_keys_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gama', 'heads'\]"):
        AttTokConfig.from_dict({"gama": 0.2, "heads": 2, "tau": 1.0})
    with pytest.raises(ValueError, match="gama"):
        tiny_attok(gama=0.2)
    path = tmp_path / "attok.json"
    path.write_text(json.dumps({**OLD_KEYS, "use_accc": True}))
    with pytest.raises(ValueError, match=r"use_accc.*attok.json"):
        AttTokConfig.from_json_file(path)


def test_config_and_keywords_build_the_same_model():
    by_config = tiny_attok(AttTokConfig(use_acc=False, tau=0.5, fa_position="attribute"))
    by_keywords = tiny_attok(use_acc=False, tau=0.5, fa_position="attribute")
    over = tiny_attok({"use_acc": True, "tau": 0.5}, use_acc=False, fa_position="attribute")  # keywords win over config
    assert by_config.config == by_keywords.config == over.config
    assert by_config.acc is None and by_config.fa_position == "attribute"
    assert all(torch.equal(a, b) for a, b in zip(by_config.state_dict().values(), by_keywords.state_dict().values()))


def test_saved_as_attok_json_and_old_files_load(tmp_path):
    net = tiny_attok(acm_bias=False, acc_norm=True, prototype_init="class_means")
    net.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "attok.json").read_text())
    assert saved == net.config.to_dict() == {**OLD_KEYS, "acm_bias": False, "acc_norm": True,
                                             "prototype_init": "class_means"}
    assert AttTokGPTv.from_pretrained(tmp_path).config == net.config
    # an attok.json from before the later keys existed: the missing keys take their defaults
    net2 = tiny_attok()
    net2.save_pretrained(tmp_path / "m2")
    (tmp_path / "m2" / "attok.json").write_text(json.dumps(
        {"use_attribute_tokens": True, "use_acc": True, "use_acm": True, "acc_heads": 1, "gamma": 0.1,
         "momentum": 0.99, "tau": 1.0}))
    again = AttTokGPTv.from_pretrained(tmp_path / "m2")
    assert again.config == AttTokConfig()
