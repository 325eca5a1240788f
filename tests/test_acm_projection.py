"""theta of ACM lives in the network (ACMProjection), the loss holds no parameters (issue #18): the same numbers as
when the loss owned theta, the same random init for a seed, and old state dicts (``acm.projection.*``) still load."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from attok_monai.losses import AttTokLoss
from attok_monai.networks.nets import AttributeClassifier, AttTokGPTv
from tests.conftest import tiny_attok

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


def test_loss_and_gradients_equal_values_before_the_move():
    """Values computed at the commit before theta moved (the loss owned it as ``acm.projection``)."""
    net = tiny_attok()
    torch.manual_seed(1)
    x = torch.rand(3, 1, 16, 16)
    out = net(x, ["what is this radiology image?"] * 3, [None] * 3, [[0], [2], [1]])
    z_a, book = net.acm_inputs(out.f_a)
    loss_fn = AttTokLoss(lambda_weight=0.5)
    loss = loss_fn(out.logits, out.labels, z_a, out.attr_targets, book, net.book.key_padding_mask())
    loss.backward()
    grads = dict(net.named_parameters())
    got = {
        "loss": float(loss.detach()), "ntp": loss_fn.last_components["ntp"], "acm": loss_fn.last_components["acm"],
        "theta_w": float(grads["acm_projection.linear.weight"].grad.double().norm()),
        "theta_b": float(grads["acm_projection.linear.bias"].grad.double().norm()),
        "a_k": float(grads["book.attribute_embeddings"].grad.double().norm()),
        "e_k": float(grads["book.keyword_embeddings"].grad.double().norm()),
        "acc_o": float(grads["acc.o_proj.weight"].grad.double().norm()),
        "lm_head": float(grads["backbone.llm.lm_head.weight"].grad.double().norm()),
    }
    expected = {
        "loss": 3.642273187637329, "ntp": 3.0945496559143066, "acm": 1.095447063446045,
        "theta_w": 0.01107687824642161, "theta_b": 0.0036944053711498925, "a_k": 0.6007634720821408,
        "e_k": 0.02549065530939036, "acc_o": 0.0024579681328630635, "lm_head": 1.6363997843876712,
    }
    assert got == pytest.approx(expected, abs=1e-6)


def _legacy(state: dict) -> dict:
    return {k.replace("acm_projection.linear.", "acm.projection."): v for k, v in state.items()}


def test_old_state_dict_loads(tmp_path):
    net = tiny_attok()
    state = net.state_dict()
    old = _legacy(state)
    assert "acm.projection.weight" in old and "acm.projection.bias" in old
    other = tiny_attok(acm_bias=True)
    with torch.no_grad():
        other.acm_projection.linear.weight.zero_()
    other.load_state_dict(old)  # strict: every key renamed
    assert torch.equal(other.acm_projection.linear.weight, net.acm_projection.linear.weight)
    # a model folder saved before the move: model.pt with the old keys
    net.save_pretrained(tmp_path)
    torch.save(_legacy(torch.load(tmp_path / "model.pt", weights_only=True)), tmp_path / "model.pt")
    again = AttTokGPTv.from_pretrained(tmp_path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    # the export wrapper loads the model's state dict under the model's names, old keys included
    clf = AttributeClassifier(tiny_attok(), "what is this radiology image?")
    clf.load_state_dict(old)
    assert torch.equal(clf.acm_projection.linear.bias, net.acm_projection.linear.bias)


def test_same_seed_same_model_as_before():
    """The projection is created where the loss used to create it (last, after ACC), so a seeded build is the same
    as before the move (checked once by hand against the fundus bundle's network: all parameters torch.equal)."""
    a, b = tiny_attok(), tiny_attok()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert list(a.state_dict())[-2:] == ["acm_projection.linear.weight", "acm_projection.linear.bias"]


def test_networks_do_not_import_losses():
    for path in (REPO / "attok_monai" / "networks").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.startswith("attok_monai.losses") for n in names), path


def test_acm_weightings_agree():
    from attok_monai.losses.attok_loss import ACM_WEIGHTINGS as loss_side
    from attok_monai.networks.nets.attok_config import ACM_WEIGHTINGS as net_side

    assert loss_side == net_side
