import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from attok_monai.networks.blocks import EmbeddingBook


def test_ema_hand_computed():
    book = EmbeddingBook(3, 2, momentum=0.9, first_update="ema")
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]], [[0.0, 0.0], [2.0, 2.0]]])  # (3, 2, 2)
    updated = book.update_prototypes(v, torch.tensor([0, 0, 2]))
    assert updated.tolist() == [True, False, True]
    # attribute 0: mean of the 4 tokens of images 0 and 1 = (4, 5); 0.9*0 + 0.1*(4,5)
    assert torch.allclose(book.prototypes[0], torch.tensor([0.4, 0.5]))
    assert torch.equal(book.prototypes[1], torch.zeros(2))  # absent: unchanged
    assert torch.allclose(book.prototypes[2], torch.tensor([0.1, 0.1]))
    book.update_prototypes(v[:1], torch.tensor([0]))  # mean (2, 3)
    assert torch.allclose(book.prototypes[0], 0.9 * torch.tensor([0.4, 0.5]) + 0.1 * torch.tensor([2.0, 3.0]))


def test_first_update_copy_then_ema():
    book = EmbeddingBook(2, 2, momentum=0.99)
    v = torch.tensor([[[1.0, 3.0], [3.0, 5.0]]])
    book.update_prototypes(v, torch.tensor([1]))
    assert torch.allclose(book.prototypes[1], torch.tensor([2.0, 4.0]))
    assert book.key_padding_mask().tolist() == [[False, False, True], [False, False, False]]
    book.update_prototypes(torch.zeros(1, 2, 2), torch.tensor([1]))
    assert torch.allclose(book.prototypes[1], 0.99 * torch.tensor([2.0, 4.0]))


def test_multi_hot_and_ignore():
    book = EmbeddingBook(3, 1, momentum=0.5, first_update="ema")
    v = torch.tensor([[[2.0]], [[4.0]]])
    book.update_prototypes(v, torch.tensor([[1, 1, 0], [0, 1, 0]]))
    assert torch.allclose(book.prototypes[:, 0], torch.tensor([1.0, 1.5, 0.0]))
    book2 = EmbeddingBook(3, 1, momentum=0.5, first_update="ema")
    book2.update_prototypes(v, torch.tensor([-100, 2]))
    assert torch.allclose(book2.prototypes[:, 0], torch.tensor([0.0, 0.0, 2.0]))


def test_no_grad_and_tokens_and_state_dict():
    book = EmbeddingBook(4, 8)
    v = torch.randn(2, 3, 8, requires_grad=True)
    book.update_prototypes(v, torch.tensor([0, 3]))
    assert not book.prototypes.requires_grad
    t = book.tokens()
    assert t.shape == (4, 3, 8)
    t.sum().backward()
    assert book.attribute_embeddings.grad is not None and book.keyword_embeddings.grad is not None
    assert v.grad is None
    other = EmbeddingBook(4, 8)
    other.load_state_dict(book.state_dict())
    assert torch.equal(other.tokens(), book.tokens())
    assert torch.equal(other.prototype_initialized, book.prototype_initialized)


def test_keyword_init():
    book = EmbeddingBook(2, 3)
    table = torch.arange(15, dtype=torch.float).view(5, 3)
    book.init_keyword_embeddings(table, [[0, 2], [4]])
    assert torch.allclose(book.keyword_embeddings[0], torch.tensor([3.0, 4.0, 5.0]))
    assert torch.allclose(book.keyword_embeddings[1], table[4])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda b: b.update_prototypes(torch.randn(2, 3, 5), torch.tensor([0, 1])), "visual_tokens"),
        (lambda b: b.update_prototypes(torch.randn(2, 3, 4), torch.tensor([0, 9])), "out of range"),
        (lambda b: b.update_prototypes(torch.randn(2, 3, 4), torch.tensor([0])), "targets for 2"),
        (lambda b: b.update_prototypes(torch.randn(2, 3, 4), torch.ones(2, 5)), "multi-hot"),
        (lambda b: b.init_keyword_embeddings(torch.randn(9, 4), [[1]]), "keyword id lists"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(EmbeddingBook(3, 4))


def test_bad_construction():
    with pytest.raises(ValueError, match="num_attributes"):
        EmbeddingBook(0, 4)


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    book = EmbeddingBook(3, 4, momentum=0.9, first_update="ema")
    g = torch.Generator().manual_seed(100 + rank)  # different data on each rank
    v = torch.randn(2, 5, 4, generator=g)
    targets = torch.tensor([rank, 2])
    book.update_prototypes(v, targets)
    out[rank] = book.prototypes.clone()
    dist.destroy_process_group()


def test_distributed_prototypes_agree():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    assert torch.equal(out[0], out[1])
    # the global mean over both ranks' images, computed by hand
    v0 = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(100))
    v1 = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(101))
    expect2 = 0.1 * torch.cat([v0[1], v1[1]]).mean(0)
    assert torch.allclose(out[0][2], expect2, atol=1e-6)
    assert torch.allclose(out[0][0], 0.1 * v0[0].mean(0), atol=1e-6)
    assert torch.allclose(out[0][1], 0.1 * v1[0].mean(0), atol=1e-6)
