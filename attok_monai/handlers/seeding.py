"""Per-epoch seeding: training's random stream depends on (seed, epoch) alone.

Validation, t-SNE, reports and anything else that runs between epochs draw from the global random generators
(a PyTorch DataLoader draws a base seed from ``torch``'s global generator each time it is iterated, even with
``shuffle=False``; t-SNE and plots draw from NumPy). Without this handler those draws shift the shuffle order and
the augmentation of every following epoch, so two runs with the same seed but different validation or t-SNE settings
train different models, and a run resumed from a checkpoint cannot repeat the epochs it missed.

At each ``EPOCH_STARTED`` the handler reseeds Python's, NumPy's and PyTorch's generators
(``monai.utils.set_determinism``), the random transforms of the training dataset (``monai.data.utils.set_rnd``)
and a sampler's own generator from ``(seed, epoch)``, then restarts the data iterator, so each epoch sees the
same batches whatever ran before it: in an uninterrupted run, in a run resumed at an epoch boundary, and in a
run that validates more or less often.
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism

__all__ = ["EpochSeedHandler", "epoch_seed"]

_MOD = 2**31 - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a fixed mixing of ``seed`` and ``epoch`` (1-based), in ``[0, 2**31 - 1)``."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % _MOD


class EpochSeedHandler:
    """Reseed everything that shapes a training epoch from ``(seed, epoch)`` at ``EPOCH_STARTED``.

    Args:
        seed: the run's seed.
        restart_data: restart the data iterator at each epoch (``engine.set_data``), so that an epoch shorter
            than the loader (``epoch_length``) also starts from a fresh, seeded shuffle rather than where the
            previous epoch stopped (which a resumed run cannot know).

    Attach it to the trainer; it must fire before the epoch's first batch is drawn, which ignite guarantees for
    ``EPOCH_STARTED`` handlers (the iterator is created after them).
    """

    def __init__(self, seed: int, restart_data: bool = True) -> None:
        self.seed = int(seed)
        self.restart_data = restart_data

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        s = epoch_seed(self.seed, engine.state.epoch)
        set_determinism(seed=s)
        loader: Any = engine.state.dataloader
        if loader is None:
            return
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            set_rnd(dataset, seed=s)
        sampler = getattr(loader, "sampler", None)
        for obj in (sampler, getattr(loader, "batch_sampler", None)):
            gen = getattr(obj, "generator", None)
            if gen is not None:
                gen.manual_seed(s)
        if self.restart_data:
            engine.set_data(loader)
