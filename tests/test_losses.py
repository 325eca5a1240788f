import math

import pytest
import torch
import torch.nn.functional as F

from attok_monai.losses import ACMLoss, AttTokLoss
from attok_monai.networks.blocks import ACMProjection, EmbeddingBook
from attok_monai.optimizers import LambdaSchedule


def reference_acm(loss: ACMLoss, theta: ACMProjection, f_a, target, book):
    """Eq. (9) per sample with explicit sums over positives and negatives."""

    def s(a, b):
        ta, tb = theta(a).detach(), theta(b).detach()
        return (ta @ tb) / (ta.norm() * tb.norm())

    vals = []
    for n in range(f_a.shape[0]):
        k = int(target[n])
        pos = sum(math.exp(float(s(f_a[n], p)) / loss.tau) for p in book[k])
        neg = sum(
            math.exp(float(s(f_a[n], q)) / loss.tau) for j in range(book.shape[0]) if j != k for q in book[j]
        )
        vals.append(-math.log(pos / (pos + neg)))
    return torch.tensor(vals)


@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_acm_matches_reference(tau):
    torch.manual_seed(0)
    theta, loss = ACMProjection(12), ACMLoss(tau=tau, reduction="none")
    f_a, book = torch.randn(5, 12), torch.randn(4, 3, 12)
    target = torch.tensor([0, 3, 1, 1, 2])
    out = loss(theta(f_a), target, theta(book))
    assert torch.allclose(out, reference_acm(loss, theta, f_a, target, book), atol=1e-5)
    loss.reduction = "mean"
    assert torch.allclose(loss(theta(f_a), target, theta(book)), out.mean(), atol=1e-6)
    loss.reduction = "sum"
    assert torch.allclose(loss(theta(f_a), target, theta(book)), out.sum(), atol=1e-5)


def test_acm_loss_holds_no_parameters():
    assert list(ACMLoss().parameters()) == [] and list(AttTokLoss().parameters()) == []


def test_acm_numerics_unchanged_by_moving_theta():
    """Loss and gradients for a fixed seed equal those of the loss that owned theta (values from before the move)."""
    torch.manual_seed(0)
    theta, acm = ACMProjection(8), ACMLoss()
    f_a = torch.randn(4, 8, requires_grad=True)
    book = torch.randn(3, 3, 8, requires_grad=True)
    loss = acm(theta(f_a), torch.tensor([0, 1, 2, 0]), theta(book))
    loss.backward()
    got = [float(loss.detach()), float(f_a.grad.norm()), float(book.grad.norm()), float(theta.linear.weight.grad.norm()),
           float(theta.linear.bias.grad.norm())]
    expected = [0.9421144723892212, 0.07371056824922562, 0.12456545233726501, 0.44618043303489685, 0.11029720306396484]
    assert got == pytest.approx(expected, abs=1e-6)


def test_acm_ignore_index_and_bf16():
    torch.manual_seed(0)
    theta, loss = ACMProjection(8), ACMLoss(reduction="none")
    f_a, book = torch.randn(4, 8), torch.randn(3, 3, 8)
    target = torch.tensor([0, -100, 2, -100])
    out = loss(theta(f_a), target, theta(book))
    assert out[1] == 0 and out[3] == 0
    ref = reference_acm(loss, theta, f_a[[0, 2]], target[[0, 2]], book)
    assert torch.allclose(out[[0, 2]], ref, atol=1e-5)
    loss.reduction = "mean"
    assert torch.allclose(loss(theta(f_a), target, theta(book)), ref.mean(), atol=1e-5)
    all_ignored = loss(theta(f_a), torch.full((4,), -100), theta(book))
    assert all_ignored == 0 and all_ignored.requires_grad
    theta_bf = theta.to(torch.bfloat16)
    bf = loss(theta_bf(f_a.bfloat16()), target, theta_bf(book.bfloat16()))
    assert abs(float(bf.detach()) - float(ref.mean())) < 0.05


def test_acm_book_mask_drops_tokens():
    torch.manual_seed(0)
    loss = ACMLoss(reduction="none")
    f_a, book = torch.randn(2, 6), torch.randn(3, 3, 6)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[:, 2] = True
    out = loss(f_a, torch.tensor([0, 2]), book, book_mask=mask)
    sims = loss.similarities(f_a, book)[:, :, :2]
    expect = torch.logsumexp(sims.flatten(1), 1) - torch.logsumexp(sims[torch.arange(2), [0, 2]], 1)
    assert torch.allclose(out, expect, atol=1e-6)


def test_acm_gradients_reach_book_and_theta_not_prototypes():
    book = EmbeddingBook(3, 8)
    book.update_prototypes(torch.randn(3, 2, 8), torch.tensor([0, 1, 2]))
    theta, loss = ACMProjection(8), ACMLoss()
    f_a = torch.randn(4, 8, requires_grad=True)
    loss(theta(f_a), torch.tensor([0, 1, 2, 0]), theta(book.tokens())).backward()
    assert f_a.grad.abs().sum() > 0
    assert book.attribute_embeddings.grad.abs().sum() > 0
    assert book.keyword_embeddings.grad.abs().sum() > 0
    assert theta.linear.weight.grad.abs().sum() > 0
    assert not book.prototypes.requires_grad


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(2, 7), torch.tensor([0, 1]), torch.randn(3, 3, 8)), "book must be"),
        ((torch.randn(2, 3, 8), torch.tensor([0, 1]), torch.randn(3, 3, 8)), "z_a"),
        ((torch.randn(2, 8), torch.tensor([0, 3]), torch.randn(3, 3, 8)), "out of range"),
        ((torch.randn(2, 8), torch.tensor([0]), torch.randn(3, 3, 8)), "target must be"),
        ((torch.randn(2, 8), torch.tensor([0, 1]), torch.randn(3, 2, 8)), "book must be"),
        ((torch.randn(2, 8), torch.tensor([0.0, 1.0]), torch.randn(3, 3, 8)), "integer"),
    ],
)
def test_acm_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ACMLoss()(*args)


def test_attok_loss_combines_ntp_and_acm():
    torch.manual_seed(0)
    acm = ACMLoss()
    loss = AttTokLoss(lambda_weight=0.5)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    f_a, target, book = torch.randn(2, 8), torch.tensor([0, 2]), torch.randn(3, 3, 8)
    total = loss(logits, labels, f_a, target, book)
    ntp = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(total, ntp + 0.5 * acm(f_a, target, book), atol=1e-6)
    assert set(loss.last_components) == {"ntp", "acm", "lambda"}
    assert abs(loss.last_components["ntp"] - float(ntp)) < 1e-6
    baseline = AttTokLoss(use_acm=False)
    assert torch.allclose(baseline(logits, labels), ntp)
    assert torch.allclose(baseline(logits, labels, f_a, target, book), ntp)  # f_a ignored without ACM
    assert torch.allclose(loss(logits, labels, None, None, None), ntp)  # a model without ACM passes None


def test_attok_loss_refuses_a_module():
    with pytest.raises(TypeError, match="no longer takes an ACMLoss"):
        AttTokLoss(ACMLoss())


def test_lambda_schedules():
    lin = LambdaSchedule("linear", 1.0, 0.0, 10)
    assert lin(0) == 1.0 and lin(5) == 0.5 and lin(10) == 0.0 and lin(20) == 0.0
    cos = LambdaSchedule("cosine", 1.0, 0.0, 10)
    assert cos(0) == 1.0 and abs(cos(5) - 0.5) < 1e-9 and abs(cos(10)) < 1e-12
    assert LambdaSchedule("constant", 0.3)(99) == 0.3
    with pytest.raises(ValueError, match="mode"):
        LambdaSchedule("step")


def test_lambda_handler_steps_loss():
    from ignite.engine import Engine

    from attok_monai.handlers import LambdaScheduleHandler

    loss = AttTokLoss()
    seen = []
    engine = Engine(lambda e, b: seen.append(loss.lambda_weight))
    LambdaScheduleHandler(loss).attach(engine)
    engine.run(range(5), max_epochs=2)
    assert seen[0] == 1.0 and seen[-1] == pytest.approx(0.1) and seen == sorted(seen, reverse=True)
