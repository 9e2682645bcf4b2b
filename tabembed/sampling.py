"""Negative sampling: a batch source that adds sampled item codes to batches of positives.

Implicit feedback (clicks, plays) has only positive (user, item) rows. A
ranking loss compares each positive with items the user did not pick, drawn
at random per batch. :class:`NegativeSampling` wraps the batch source of the
positive rows and appends those draws, so the training loop stays the one
loop: it sees a batch source like any other (``__iter__``, ``__len__``,
``to``, ``state_dict``), and the draws come from the source's own seeded
generator, saved and restored with checkpoints.

Item codes run from 1 to ``n_items`` (0 is the unknown token, never drawn).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch

from tabembed.batches import TensorBatches

__all__ = ["NegativeSampling", "sampling_probabilities"]


def sampling_probabilities(item_codes: np.ndarray, n_items: int, *, kind: str = "uniform",
                           exponent: float = 0.75) -> np.ndarray | None:
    """Probabilities of drawing item codes ``1..n_items`` as negatives.

    ``"uniform"``: None (every item alike); ``"popularity"``: proportional to
    ``count ** exponent`` (word2vec's 0.75 flattens the head), every item at
    least once so that none is never drawn.
    """
    if kind == "uniform":
        return None
    if kind != "popularity":
        raise ValueError(f"negatives must be 'uniform' or 'popularity', got {kind!r}")
    counts = np.bincount(np.asarray(item_codes, dtype=np.int64), minlength=n_items + 1)[1:]
    weights = np.maximum(counts, 1).astype(np.float64) ** exponent
    return weights / weights.sum()


class NegativeSampling:
    """Batches of positive rows, each followed by sampled negative item codes.

    Yields ``(*inputs, negatives[, weight])``: ``negatives`` is ``[b, n]`` (a
    draw per row, for pairwise losses such as BPR) or, with ``shared=True``,
    ``[n]`` (one draw for the whole batch, scored against every row: the
    sampled softmax).

    Parameters
    ----------
    positives : TensorBatches or ParquetBatches
        The positive rows (inputs only, ``has_target=False``). Under torchrun
        each rank's positives are its shard (:meth:`sharded`, or a sharded
        stream) and its negatives come from its own seeded generator.
    n_items : int
        Items are codes ``1..n_items``.
    n_negatives : int
    probabilities : array of shape (n_items,), optional
        Sampling distribution over codes ``1..n_items``; uniform when None.
    shared : bool
    random_state : int, optional
        Seed of this source's generator.
    fixed : bool
        Draw the same negatives on every pass (validation: comparable losses).
    """

    has_target = False

    def __init__(self, positives: TensorBatches, *, n_items: int, n_negatives: int,
                 probabilities=None, shared: bool = False, random_state: int | None = None,
                 fixed: bool = False):
        if positives.has_target:
            raise ValueError("positives must hold inputs only (has_target=False)")
        if not (isinstance(n_negatives, int | np.integer) and n_negatives >= 1):
            raise ValueError(f"n_negatives must be a positive integer, got {n_negatives!r}")
        if n_items < 1:
            raise ValueError(f"there must be at least one item to sample, got {n_items=}")
        self.positives = positives
        self.has_weight = getattr(positives, "has_weight", False)
        self.n_items, self.n_negatives, self.shared = int(n_items), int(n_negatives), shared
        self.probabilities = (None if probabilities is None else
                              torch.as_tensor(np.asarray(probabilities), dtype=torch.float64))
        if self.probabilities is not None and len(self.probabilities) != n_items:
            raise ValueError(f"probabilities has {len(self.probabilities)} entries for "
                             f"{n_items} items")
        self.seed = random_state if random_state is not None else int(
            np.random.SeedSequence().generate_state(1)[0])
        self.fixed = fixed
        self.generator = torch.Generator()
        self.generator.manual_seed(self._negative_seed(self.seed))

    @property
    def rank(self) -> int:
        return getattr(self.positives, "rank", 0)

    @property
    def world_size(self) -> int:
        """The positives' processes: each rank draws its own negatives for its own rows."""
        return getattr(self.positives, "world_size", 1)

    def _negative_seed(self, seed: int) -> int:
        """The negatives' seed: ``seed`` itself in one process; under torchrun one stream
        per rank (the same negatives on every rank would waste the second process's draws)."""
        if self.world_size == 1:
            return int(seed)
        return int(np.random.SeedSequence([int(seed), self.rank]).generate_state(1)[0])

    @property
    def batch_size(self) -> int:
        return self.positives.batch_size

    @property
    def n_rows(self) -> int:
        return self.positives.n_rows

    def __len__(self) -> int:
        return len(self.positives)

    @property
    def resume_position(self) -> int:
        return self.positives.resume_position

    def _draw(self, n_rows: int) -> torch.Tensor:
        shape = (self.n_negatives,) if self.shared else (n_rows, self.n_negatives)
        count = int(np.prod(shape))
        if self.probabilities is None:
            drawn = torch.randint(1, self.n_items + 1, (count,), generator=self.generator)
        else:
            drawn = torch.multinomial(self.probabilities, count, replacement=True,
                                      generator=self.generator) + 1
        return drawn.reshape(shape)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.fixed:
            self.generator.manual_seed(self.seed)
        for batch in self.positives:
            if self.has_weight:
                inputs, weight = batch[:-1], batch[-1:]
            else:
                inputs, weight = batch, ()
            negatives = self._draw(inputs[0].shape[0]).to(inputs[0].device)
            yield (*inputs, negatives, *weight)

    def to(self, device) -> NegativeSampling:
        moved = copy.copy(self)
        moved.positives = self.positives.to(device)
        return moved      # the same generator: one random stream wherever the data lives

    def manual_seed(self, seed: int) -> None:
        """Restart both streams (batch order and negatives) from ``seed`` (the same on every
        rank: the batch order is shared, the negatives are drawn per rank)."""
        self.positives.manual_seed(seed)
        negative_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        self.generator.manual_seed(self._negative_seed(negative_seed))

    def sharded(self, rank: int, world_size: int, *, random_state: int,
                batch_size: int | None = None) -> NegativeSampling:
        """``rank``'s shard of the positives (``TensorBatches.sharded``, every rank the same
        ``random_state``), with negatives from a generator of its own (this source's seed
        and the rank; the Learner reseeds both through :meth:`manual_seed` at ``fit``)."""
        shard = copy.copy(self)
        shard.positives = self.positives.sharded(rank, world_size, random_state=random_state,
                                                 batch_size=batch_size)
        shard.generator = torch.Generator()
        shard.generator.manual_seed(shard._negative_seed(self.seed))
        return shard

    def state_dict(self) -> dict:
        return {"positives": self.positives.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.positives.load_state_dict(state["positives"])
        self.generator.set_state(state["generator"])
