"""Interaction data (user, item, side features) streamed from Parquet: what a recommender
needs from one pass, in memory that grows with users and items, not with rows.

- :class:`FirstValues`: each user's (or item's) first value of a column, and
  whether any user's value ever changes (a user feature or not), O(ids).
- :class:`Pairs`: the (user code, item code) pair of every row as int32, the one
  structure that grows with the rows (8 bytes a row), for excluding seen items
  and sampling negatives by popularity.
- :class:`FrameTransform`: a batch source's transform from a function of a
  DataFrame (one window of rows at a time).
- :func:`frames`: the row groups of a dataset as DataFrames, one at a time,
  with the rows' positions and which of them a validation split holds out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from tabembed._validation import arrow_to_pandas
from tabembed.streaming.dataset import RowGroups, ValidationSplit

__all__ = ["FirstValues", "FrameTransform", "Pairs", "frames"]


def frames(row_groups: RowGroups, columns: list, split: ValidationSplit | None = None
           ) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray | None]]:
    """``(frame, rows, held)`` per row group: its ``columns`` as a DataFrame, the rows'
    positions in the whole dataset (file order) and, with ``split``, whether each row is
    held out for validation. One row group in memory at a time."""
    read = list(dict.fromkeys([*columns, *(split.columns if split is not None else [])]))
    held_groups = (split.held_out_row_groups(row_groups)
                   if split is not None and split.whole_row_groups else None)
    for index in range(len(row_groups)):
        table = row_groups.read(index, read)
        positions = np.arange(table.num_rows, dtype=np.int64) + row_groups.offsets[index]
        held = (None if split is None else
                split.mask(row_groups, index, table, held_groups))
        yield arrow_to_pandas(table.select(columns)), positions, held


def _values(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(series) and not series.hasnans:
        return series.to_numpy(dtype=np.int64)     # exact: large ids and timestamps
    if pd.api.types.is_float_dtype(series):
        return series.to_numpy(dtype=np.float64)
    return series.to_numpy(dtype=object)


class FirstValues:
    """Per id code: the first value of a column seen with it (in stream order), and whether
    some id ever showed a second value (missing counts as a value, as ``nunique(dropna=False)``).

    Code 0 (a missing id) is left out, as ``groupby`` leaves missing keys out.
    Memory: one value per id.
    """

    def __init__(self, n_ids: int):
        self.n_ids = n_ids
        self.first = None
        self.filled = np.zeros(n_ids + 1, dtype=bool)
        self.varies = False

    def update(self, codes: np.ndarray, series: pd.Series) -> None:
        values = _values(series)
        if self.first is None:
            self.first = np.zeros(self.n_ids + 1, dtype=values.dtype)
        elif values.dtype != self.first.dtype:   # ints in one row group, floats in another
            self.first, values = self.first.astype(object), values.astype(object)
        known = codes > 0
        codes, values = codes[known], values[known]
        fresh = ~self.filled[codes]
        if fresh.any():
            ids, where = np.unique(codes[fresh], return_index=True)
            self.first[ids] = values[np.flatnonzero(fresh)[where]]
            self.filled[ids] = True
        if not self.varies and len(codes):
            reference = self.first[codes]
            missing_r, missing_v = pd.isna(reference), pd.isna(values)
            same = (missing_r & missing_v) | (~missing_r & ~missing_v & (reference == values))
            self.varies = not bool(np.all(same))

    def values(self, codes: np.ndarray) -> np.ndarray:
        """The first values of ``codes``."""
        return self.first[codes]


class Pairs:
    """The (user code, item code) of every row streamed, as int32: 8 bytes a row.

    The one structure of a streamed recommender fit that grows with the rows
    (the ``implicit`` package holds the same, a CSR matrix of int32 indices).
    Sorting at the end holds a 64-bit key a row (8 bytes more) for a moment.
    """

    def __init__(self):
        self.users, self.items = [], []
        self.n_rows = 0

    def update(self, user_codes: np.ndarray, item_codes: np.ndarray) -> None:
        self.users.append(np.asarray(user_codes, dtype=np.int32))
        self.items.append(np.asarray(item_codes, dtype=np.int32))
        self.n_rows += len(user_codes)

    def sorted(self, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """``(users, items)`` int32 sorted by user then item (duplicates kept)."""
        users = np.concatenate(self.users) if self.users else np.zeros(0, np.int32)
        self.users = []
        items = np.concatenate(self.items) if self.items else np.zeros(0, np.int32)
        self.items = []
        key = users.astype(np.int64) * (n_items + 1)
        key += items
        del users, items
        key.sort()
        width = np.int64(n_items + 1)
        return (key // width).astype(np.int32), (key % width).astype(np.int32)


class FrameTransform:
    """A :class:`~tabembed.streaming.ParquetBatches` transform from ``encode(frame)``.

    Parameters
    ----------
    features : list of str
        Columns read and handed to ``encode`` as a DataFrame.
    encode : callable
        ``encode(frame) -> tuple of ndarray``, one row per row of ``frame``, vectorised.
    target : str, optional
        A numeric column appended to the arrays as float32.
    """

    def __init__(self, features: list, encode: Callable, target: str | None = None):
        self.features, self.encode, self.target = list(features), encode, target
        self.columns = [*self.features, *([target] if target is not None else [])]
        self.has_target = target is not None

    def __call__(self, table: pa.Table) -> tuple[np.ndarray, ...]:
        arrays = tuple(np.asarray(a) for a in self.encode(
            arrow_to_pandas(table.select(self.features))))
        if self.target is None:
            return arrays
        column = table[self.target]
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        target = column.to_numpy(zero_copy_only=False).astype(np.float32)
        return (*arrays, target)
