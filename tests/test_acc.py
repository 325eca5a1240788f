import math

import pytest
import torch

from attok_monai.networks.blocks import ACCAdapter, EmbeddingBook


def reference_acc(acc: ACCAdapter, f: torch.Tensor, book: torch.Tensor, mask=None) -> torch.Tensor:
    """Eqs. (6)-(7) written per image, per head and per query, with explicit loops."""
    bk = book.reshape(-1, acc.dim)
    h, dh = acc.num_heads, acc.head_dim
    out = torch.empty_like(f)
    k_all, v_all = acc.k_proj(bk), acc.v_proj(bk)
    for b in range(f.shape[0]):
        q_all = acc.q_proj(f[b])
        heads = []
        for hi in range(h):
            sl = slice(hi * dh, (hi + 1) * dh)
            rows = []
            for n in range(f.shape[1]):
                scores = torch.stack([q_all[n, sl] @ k_all[j, sl] / math.sqrt(dh) for j in range(bk.shape[0])])
                scores = scores * acc.logit_scale()
                if mask is not None:
                    scores = scores.masked_fill(mask.reshape(-1), -math.inf)
                w = torch.softmax(scores, 0)
                rows.append((w[:, None] * v_all[:, sl]).sum(0))
            heads.append(torch.stack(rows))
        att = torch.cat(heads, dim=-1)
        out[b] = f[b] + acc.gamma * acc.o_proj(att)
    return out


@pytest.mark.parametrize("inner", [None, 8])  # None: eq. 6 (d x d); 8: the low-rank option (d x r)
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("mode", ["projected", "reassociated", "auto"])
def test_matches_loop_reference(heads, mode, inner):
    torch.manual_seed(0)
    acc = ACCAdapter(16, num_heads=heads, gamma=0.1, mode=mode, inner_dim=inner)
    assert acc.inner_dim == (inner or 16) and acc.k_proj.weight.shape == (inner or 16, 16)
    f, book = torch.randn(2, 5, 16), torch.randn(4, 3, 16)
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[1, 2] = True
    for m in (None, mask):
        out = acc(f, book, key_padding_mask=m)
        ref = reference_acc(acc, f, book, m)
        assert torch.allclose(out, ref, atol=1e-5), (mode, heads)


@pytest.mark.parametrize("inner", [None, 8])
@pytest.mark.parametrize("heads", [1, 2])
def test_modes_equal_outputs_and_gradients(heads, inner):
    torch.manual_seed(1)
    f = torch.randn(3, 6, 32)
    book_p = torch.randn(10, 3, 32)
    grads = {}
    outs = {}
    for mode in ("projected", "reassociated"):
        torch.manual_seed(2)
        acc = ACCAdapter(32, num_heads=heads, mode=mode, inner_dim=inner)
        fi = f.clone().requires_grad_(True)
        bi = book_p.clone().requires_grad_(True)
        out, att = acc(fi, bi, return_attention=True)
        (out.square().sum() + att.sum()).backward()
        outs[mode] = (out.detach(), att.detach())
        grads[mode] = [fi.grad, bi.grad] + [
            torch.zeros_like(p) if p.grad is None else p.grad for p in acc.parameters()
        ]
    assert torch.allclose(outs["projected"][0], outs["reassociated"][0], atol=1e-5)
    assert torch.allclose(outs["projected"][1], outs["reassociated"][1], atol=1e-6)
    assert outs["projected"][1].shape == (3, heads, 6, 30)
    for a, b in zip(grads["projected"], grads["reassociated"]):
        # the key bias only shifts scores by a per-query constant: its true gradient is zero in both orders
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_auto_picks_reassociated_for_large_books():
    acc = ACCAdapter(64, num_heads=1)
    assert acc._choose(n_queries=16, n_keys=3000, cached=False) == "reassociated"
    assert acc._choose(n_queries=4096, n_keys=15, cached=False) == "projected"
    assert acc._choose(n_queries=16, n_keys=3000, cached=True) == "projected"


def test_bf16_close_to_fp32():
    torch.manual_seed(0)
    acc = ACCAdapter(64, num_heads=2)
    f, book = torch.randn(2, 8, 64), torch.randn(6, 3, 64)
    ref = acc(f, book)
    out = acc.to(torch.bfloat16)(f.bfloat16(), book.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, atol=5e-2, rtol=5e-2)


def test_gamma_zero_returns_input():
    acc = ACCAdapter(8, gamma=0.0)
    f = torch.randn(2, 3, 8)
    assert torch.equal(acc(f, torch.randn(2, 3, 8)), f)


def test_gradients_reach_book_and_weights():
    book = EmbeddingBook(3, 8)
    book.update_prototypes(torch.randn(3, 2, 8), torch.tensor([0, 1, 2]))
    acc = ACCAdapter(8)
    out = acc(torch.randn(2, 4, 8), book.tokens())
    out.sum().backward()
    assert book.attribute_embeddings.grad.abs().sum() > 0
    assert book.keyword_embeddings.grad.abs().sum() > 0
    for name in ("q_proj", "v_proj", "o_proj"):
        assert getattr(acc, name).weight.grad.abs().sum() > 0, name


def test_cache_reused_and_invalidated():
    torch.manual_seed(0)
    book = EmbeddingBook(5, 16)
    book.update_prototypes(torch.randn(5, 2, 16), torch.arange(5))
    acc = ACCAdapter(16, num_heads=2)
    acc.eval()
    f = torch.randn(2, 3, 16)
    with torch.no_grad():
        first = acc(f, book.tokens(), book_version=book.version())
        cached = acc._cache
        again = acc(f, book.tokens(), book_version=book.version())
        assert acc._cache is cached and torch.equal(first, again)
        # an EMA update changes the book: the cache must not be reused
        book.update_prototypes(torch.randn(1, 2, 16), torch.tensor([0]))
        after_ema = acc(f, book.tokens(), book_version=book.version())
        assert acc._cache is not cached
        fresh = ACCAdapter(16, num_heads=2)
        fresh.load_state_dict(acc.state_dict())
        assert torch.allclose(after_ema, fresh(f, book.tokens()), atol=1e-6)
    # an optimizer step on the key projection invalidates it too
    opt = torch.optim.SGD(acc.parameters(), lr=0.5)
    acc.train()
    acc(f, book.tokens()).sum().backward()
    opt.step()
    with torch.no_grad():
        out = acc(f, book.tokens(), book_version=book.version())
        ref = ACCAdapter(16, num_heads=2)
        ref.load_state_dict(acc.state_dict())
        assert torch.allclose(out, ref(f, book.tokens()), atol=1e-6)
        # load_state_dict (in-place copy) invalidates as well
        state = {k: torch.randn_like(v) for k, v in acc.state_dict().items()}
        acc.load_state_dict(state)
        ref.load_state_dict(state)
        assert torch.allclose(acc(f, book.tokens(), book_version=book.version()), ref(f, book.tokens()), atol=1e-6)


@pytest.mark.parametrize(
    "f, book, mask, match",
    [
        (torch.randn(2, 3, 7), torch.randn(2, 3, 8), None, "visual_tokens"),
        (torch.randn(2, 3, 8), torch.randn(2, 4, 8), None, "book_tokens"),
        (torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.zeros(5, dtype=torch.bool), "key_padding_mask"),
    ],
)
def test_bad_input(f, book, mask, match):
    with pytest.raises(ValueError, match=match):
        ACCAdapter(8)(f, book, key_padding_mask=mask)


def test_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        ACCAdapter(10, num_heads=3)


def test_bf16_tokens_with_fp32_weights():
    """Visual tokens from a bf16 backbone, fp32 ACC weights (the HF path without autocast): computed in fp32,
    returned in the tokens' dtype."""
    torch.manual_seed(0)
    acc = ACCAdapter(16, num_heads=2, gamma=0.5)
    f, book = torch.randn(2, 5, 16), torch.randn(4, 3, 16)
    out = acc(f.bfloat16(), book)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), acc(f.bfloat16().float(), book), atol=2e-2)


@pytest.mark.parametrize("mode", ["projected", "reassociated"])
def test_norm_is_prenorm_cross_attention(mode):
    """``norm=True``: queries and book tokens are LayerNorm-ed before eq. 6, the residual adds to the raw tokens, so
    rescaling a book token (a prototype 30x larger than a_k) changes nothing, and both orders agree."""
    torch.manual_seed(3)
    acc = ACCAdapter(16, num_heads=2, mode=mode, norm=True)
    assert isinstance(acc.q_norm, torch.nn.LayerNorm) and isinstance(acc.kv_norm, torch.nn.LayerNorm)
    with torch.no_grad():  # non-trivial affine parameters, so the test sees them applied
        for ln in (acc.q_norm, acc.kv_norm):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_()
    f, book = torch.randn(2, 5, 16), torch.randn(4, 3, 16)
    out = acc(f, book)
    ref = reference_acc(acc, acc.q_norm(f), acc.kv_norm(book)) - acc.q_norm(f) + f
    assert torch.allclose(out, ref, atol=1e-5)
    scaled = book.clone()
    scaled[:, 2] *= 30.0
    assert torch.allclose(acc(f, scaled), out, atol=1e-4)
    assert torch.allclose(acc(f * 50.0, book) - f * 50.0, out - f, atol=1e-4)
    plain = ACCAdapter(16, num_heads=2, mode=mode)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in plain.modules())


def test_norm_cache_invalidated_by_norm_weights():
    torch.manual_seed(4)
    acc = ACCAdapter(16, norm=True, mode="projected").eval()
    f, book = torch.randn(1, 3, 16), torch.randn(2, 3, 16)
    with torch.no_grad():
        first = acc(f, book, book_version=1)
        acc.kv_norm.weight.mul_(2.0)
        second = acc(f, book, book_version=1)
        assert torch.allclose(second, acc(f, book))  # recomputed, not the stale cache
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("mode", ["projected", "reassociated"])
@pytest.mark.parametrize("learned", [False, True])
def test_logit_scale_multiplies_the_scores(mode, learned):
    """s (fixed or learned as log s) multiplies every scaled dot product, in both orders and with return_attention."""
    torch.manual_seed(0)
    acc = ACCAdapter(16, num_heads=2, mode=mode, logit_scale=7.0, learn_logit_scale=learned)
    f, book = torch.randn(2, 5, 16), torch.randn(4, 3, 16)
    assert math.isclose(torch.as_tensor(acc.logit_scale()).item(), 7.0, rel_tol=1e-6)
    torch.testing.assert_close(acc(f, book), reference_acc(acc, f, book), rtol=1e-5, atol=1e-6)
    out, w = acc(f, book, return_attention=True)
    torch.testing.assert_close(out, reference_acc(acc, f, book), rtol=1e-5, atol=1e-6)
    # the same adapter at s = 1: the logits are the scaled ones divided by 7
    plain = ACCAdapter(16, num_heads=2, mode=mode)
    plain.load_state_dict({k: v for k, v in acc.state_dict().items() if k != "log_logit_scale"})
    _, w1 = plain(f, book, return_attention=True)
    torch.testing.assert_close(w.log() - w.log().mean(-1, keepdim=True),
                               7.0 * (w1.log() - w1.log().mean(-1, keepdim=True)), rtol=1e-4, atol=1e-5)
    names = [n for n, _ in acc.named_parameters()]
    assert ("log_logit_scale" in names) is learned
    if learned:
        acc(f, book).square().sum().backward()
        assert acc.log_logit_scale.grad is not None and acc.log_logit_scale.grad.abs() > 0


def test_logit_scale_default_is_eq6_and_validated():
    torch.manual_seed(0)
    a = ACCAdapter(16)
    torch.manual_seed(0)
    b = ACCAdapter(16, logit_scale=1.0, learn_logit_scale=False)
    f, book = torch.randn(2, 5, 16), torch.randn(4, 3, 16)
    assert a.logit_scale() == 1.0 and list(a.state_dict()) == list(b.state_dict())
    assert torch.equal(a(f, book), b(f, book))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="logit_scale"):
            ACCAdapter(16, logit_scale=bad)
