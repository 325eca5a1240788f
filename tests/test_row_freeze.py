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
