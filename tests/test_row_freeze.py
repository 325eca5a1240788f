import pytest
import torch
from torch import nn

from attok_monai.networks.row_freeze import freeze_rows_except
from attok_monai.optimizers import optimizer_param_groups


class TinyLM(nn.Module):
    def __init__(self, tied: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.body = nn.Linear(6, 6)
        self.lm_head = nn.Linear(6, 10, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        return self.lm_head(torch.tanh(self.body(self.embed(ids))))


def _train(model, steps=5):
    opt = torch.optim.AdamW(optimizer_param_groups(model, weight_decay=0.1), lr=1e-2)
    for _ in range(steps):
        ids = torch.randint(0, 10, (4, 7))
        loss = nn.functional.cross_entropy(model(ids).reshape(-1, 10), ids.roll(1, 1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_untied_frozen_rows_bit_identical():
    torch.manual_seed(0)
    model = TinyLM(tied=False)
    new_rows = [8, 9]
    freeze_rows_except(model.embed, new_rows)
    freeze_rows_except(model.lm_head, new_rows)
    e0, h0 = model.embed.weight.detach().clone(), model.lm_head.weight.detach().clone()
    _train(model)
    assert torch.equal(model.embed.weight[:8], e0[:8])
    assert torch.equal(model.lm_head.weight[:8], h0[:8])
    assert not torch.equal(model.embed.weight[8:], e0[8:])
    assert not torch.equal(model.lm_head.weight[8:], h0[8:])


def test_tied_frozen_rows_bit_identical():
    torch.manual_seed(0)
    model = TinyLM(tied=True)
    freeze_rows_except(model.embed, [9])
    w0 = model.embed.weight.detach().clone()
    _train(model)
    assert torch.equal(model.embed.weight[:9], w0[:9])
    assert not torch.equal(model.embed.weight[9], w0[9])


def test_without_param_groups_weight_decay_would_move_rows():
    torch.manual_seed(0)
    model = TinyLM(tied=False)
    freeze_rows_except(model.embed, [9])
    e0 = model.embed.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model(torch.randint(0, 10, (2, 3))).sum().backward()
    opt.step()
    assert not torch.equal(model.embed.weight[:9], e0[:9])  # why optimizer_param_groups exists


def test_param_groups_split():
    model = TinyLM(tied=False)
    freeze_rows_except(model.embed, [9])
    groups = optimizer_param_groups(model, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    assert id(model.body.weight) in decayed and id(model.embed.weight) not in decayed
    assert groups[1]["weight_decay"] == 0.0


def test_lr_scales_put_a_prefix_in_its_own_groups_at_a_scaled_lr():
    model = TinyLM(tied=False)
    freeze_rows_except(model.embed, [9])
    plain = optimizer_param_groups(model, 0.01)
    assert optimizer_param_groups(model, 0.01, lr=1e-3, lr_scales={}) == plain  # no scales: the groups as before
    groups = optimizer_param_groups(model, 0.01, lr=1e-3, lr_scales={"body": 0.1})
    body = {id(p) for p in model.body.parameters()}
    scaled = [g for g in groups if "lr" in g]
    assert {id(p) for g in scaled for p in g["params"]} == body
    assert all(g["lr"] == pytest.approx(1e-4) for g in scaled)
    # decay still follows the name and shape rules inside the scaled part: body.weight decayed, body.bias not
    assert {g["weight_decay"] for g in scaled} == {0.01, 0.0}
    assert sum(len(g["params"]) for g in groups) == sum(len(g["params"]) for g in plain)
    # the scheduler keeps the ratio: a warm-up/cosine step scales every group's own lr
    from monai.optimizers import WarmupCosineSchedule

    own_lr = ["lr" in g for g in groups]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = WarmupCosineSchedule(opt, warmup_steps=2, t_total=10)
    for _ in range(3):
        opt.step()
        sched.step()
    lrs = {own: g["lr"] for own, g in zip(own_lr, opt.param_groups)}
    assert lrs[True] == pytest.approx(0.1 * lrs[False])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_scales": {"body": 0.1}}, "lr_scales needs lr"),
        ({"lr": 1e-3, "lr_scales": {"bdy": 0.1}}, r"lr_scales names \['bdy'\], which match no trainable parameter"),
        ({"lr": 1e-3, "lr_scales": {"body": 0.0}}, r"lr_scales\['body'\] must be a positive number"),
        ({"lr": 1e-3, "lr_scales": {"body": "0.1"}}, r"lr_scales\['body'\] must be a positive number"),
    ],
)
def test_lr_scales_bad_input_is_one_short_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizer_param_groups(TinyLM(tied=False), 0.01, **kwargs)
