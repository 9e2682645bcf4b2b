"""The rows one fit trains on, whatever their source: in memory or streamed from Parquet.

A fit first turns its data into a typed fit-data object (the MLP's
:class:`~tabembed.estimators.tabular_data.TabularData`, a recommender's
:class:`~tabembed.recommenders.interaction_data.InteractionData`): the fitted
encoders plus one of the two row holders here. Training asks the holder for
its batch sources once the batch size is known, and never asks where the
rows came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from tabembed.batches import EVALUATION_BATCH_SIZE, BatchSource, TensorBatches, row_batches
from tabembed.training import distributed

__all__ = ["MemoryRows", "StreamRows", "is_stream", "validation_split"]

# Rows a streamed fit transforms and shuffles at once (the training stream's buffer).
STREAM_BUFFER_ROWS = 1 << 18


def is_stream(X) -> bool:
    """Whether ``X`` names data to stream (a path, a folder, a URI, a list of paths or a
    pyarrow Dataset) rather than holding it (a DataFrame, an array, an Arrow table)."""
    if isinstance(X, str | os.PathLike):
        return True
    if isinstance(X, list | tuple) and X and all(isinstance(x, str | os.PathLike) for x in X):
        return True
    return type(X).__module__.startswith("pyarrow") and hasattr(X, "files")


@dataclass
class MemoryRows:
    """Encoded tensors in memory, the rows that train and those that validate.

    ``valid`` is a ready batch source (``eval_set``); otherwise ``valid_rows``
    of the same tensors validate. ``has_target=False``: the tensors are inputs
    only (implicit feedback, whose targets are sampled).
    """

    tensors: tuple[torch.Tensor, ...]
    train_rows: np.ndarray
    valid_rows: np.ndarray | None = None
    weights: np.ndarray | None = None
    valid: BatchSource | None = None
    has_target: bool = True

    @property
    def n_train_rows(self) -> int:
        return len(self.train_rows)

    def sources(self, batch_size: int, *, seed: int, valid_batch_size: int =
                EVALUATION_BATCH_SIZE) -> tuple[BatchSource, BatchSource | None]:
        """``(training batches, validation batches or None)``. The Learner seeds the
        training order at each fit (``seed`` only matters for streams)."""
        del seed
        train = self._batches(self.train_rows, batch_size, shuffle=True)
        valid = self.valid
        if valid is None and self.valid_rows is not None:
            valid = self._batches(self.valid_rows, valid_batch_size, shuffle=False)
        return train, valid

    def _batches(self, rows, batch_size: int, *, shuffle: bool) -> TensorBatches:
        if self.has_target:
            return row_batches(self.tensors, rows, self.weights, batch_size=batch_size,
                               shuffle=shuffle)
        tensors = [t[rows] for t in self.tensors]
        if self.weights is not None:
            tensors.append(torch.as_tensor(self.weights[rows], dtype=torch.float32))
        return TensorBatches(tensors, batch_size=batch_size, shuffle=shuffle, has_target=False,
                             has_weight=self.weights is not None, random_state=0)


@dataclass
class StreamRows:
    """Row groups of a Parquet dataset, transformed as they are read; ``split`` holds rows
    out by a hash of their position (``early_stopping``).

    ``shard_validation=False``: every process reads all validation rows (a
    sampled loss needs them whole).
    """

    row_groups: object
    transform: object
    split: object | None = None
    shard_validation: bool = True

    @property
    def n_train_rows(self) -> int:
        from tabembed.streaming import Part

        return Part(self.row_groups, self.split, "train").n_rows

    def sources(self, batch_size: int, *, seed: int, valid_batch_size: int | None = None
                ) -> tuple[BatchSource, BatchSource | None]:
        """This process's shuffled training shard and the validation stream.

        ``batch_size`` counts the rows of one step over all processes, as in memory.
        """
        from tabembed.streaming import train_valid_sources

        world_size = distributed.get_world_size()
        per_process = max(1, -(-batch_size // world_size))
        return train_valid_sources(
            self.row_groups, self.transform, self.split, batch_size=per_process,
            valid_batch_size=valid_batch_size, random_state=seed,
            rank=distributed.get_rank(), world_size=world_size,
            buffer_rows=STREAM_BUFFER_ROWS, shard_validation=self.shard_validation)


def validation_split(n_rows: int, y_values, task: str, seed: int, *, fraction: float | None):
    """Sorted ``(train_rows, valid_rows)`` positions: ``fraction`` of the rows held out
    (stratified for classification when every class allows it); None: no validation rows."""
    rows = np.arange(n_rows)
    if fraction is None:
        return rows, None
    stratify = y_values if task in ("binary", "multiclass") else None
    try:
        train_rows, valid_rows = train_test_split(
            rows, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:   # a class too rare to stratify
        train_rows, valid_rows = train_test_split(rows, test_size=fraction, random_state=seed)
    return np.sort(train_rows), np.sort(valid_rows)
