"""Batch sources: what the training loop iterates over.

A batch source is any object with ``__iter__`` (one pass, yielding tuples of
tensors: the model's inputs, then the target when ``has_target``, then per-row
sample weights when ``has_weight``), ``__len__``
(batches per pass), ``has_target``, ``to(device)``, and ``state_dict()`` /
``load_state_dict()`` for exact resumption. :class:`TensorBatches` serves data
already in memory; a Parquet stream or a process shard implements the same
few methods and the loop does not change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

__all__ = ["BatchSource", "TensorBatches", "as_batches", "split_batch"]


@runtime_checkable
class BatchSource(Protocol):
    has_target: bool

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]: ...

    def __len__(self) -> int: ...

    def to(self, device) -> BatchSource: ...


class TensorBatches:
    """Mini-batches sliced from tensors held in memory.

    Each pass permutes all tensors once (one gather per tensor per epoch) and
    then yields contiguous slices, so no per-row Python and no collate step.
    A trailing batch of a single row is merged into the previous one when
    shuffling, because batch norm cannot train on one row.

    Parameters
    ----------
    tensors : sequence of Tensor
        Same first dimension: the inputs, then the target when ``has_target``,
        then the sample weights when ``has_weight``.
    batch_size : int
    shuffle : bool
        Draw a new permutation each pass (training); keep order otherwise.
    random_state : int, optional
        Seed of this source's own generator (never the global one).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], *, batch_size: int = 256,
                 shuffle: bool = False, has_target: bool = True, has_weight: bool = False,
                 random_state: int | None = None):
        tensors = tuple(tensors)
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[t.shape[0] for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size=}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.has_target = has_target
        self.has_weight = has_weight
        self.generator = torch.Generator()
        self.generator.manual_seed(random_state if random_state is not None
                                   else int(torch.randint(0, 2**62, (1,)).item()))

    @property
    def n_rows(self) -> int:
        return self.tensors[0].shape[0]

    def _bounds(self) -> list[tuple[int, int]]:
        n, size = self.n_rows, self.batch_size
        bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
        if self.shuffle and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], n)]
        return bounds

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        tensors = self.tensors
        if self.shuffle:
            order = torch.randperm(self.n_rows, generator=self.generator)
            order = order.to(tensors[0].device)
            tensors = tuple(t[order] for t in tensors)
        for start, stop in self._bounds():
            yield tuple(t[start:stop] for t in tensors)

    def to(self, device) -> TensorBatches:
        if all(t.device == torch.device(device) for t in self.tensors):
            return self
        moved = TensorBatches([t.to(device) for t in self.tensors], batch_size=self.batch_size,
                              shuffle=self.shuffle, has_target=self.has_target,
                              has_weight=self.has_weight)
        moved.generator = self.generator   # the same random stream, wherever the data lives
        return moved

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def as_batches(data, *, batch_size: int, shuffle: bool = False,
               has_target: bool = True, has_weight: bool = False) -> BatchSource:
    """A batch source from a batch source (unchanged) or a tuple of tensors."""
    if isinstance(data, TensorBatches) or (not isinstance(data, tuple | list | torch.Tensor)
                                           and isinstance(data, BatchSource)):
        return data
    if isinstance(data, torch.Tensor):
        data = (data,)
    return TensorBatches(data, batch_size=batch_size, shuffle=shuffle, has_target=has_target,
                         has_weight=has_weight)


def split_batch(batch: tuple, source) -> tuple[tuple, torch.Tensor | None, torch.Tensor | None]:
    """``(inputs, target, weight)`` of a batch from ``source`` (missing parts are None)."""
    weight = batch[-1] if getattr(source, "has_weight", False) else None
    rest = batch[:-1] if weight is not None else batch
    if source.has_target:
        return tuple(rest[:-1]), rest[-1], weight
    return tuple(rest), None, weight
