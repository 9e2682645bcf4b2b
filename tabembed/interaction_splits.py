"""Train/test splits of interaction logs, as recommender evaluations need them.

- :func:`random_holdout`: a random share of each user's interactions is held
  out (every user keeps at least one training row);
- :func:`leave_last_out`: each user's last ``n`` interactions by time;
- :func:`temporal_split`: everything after a global cut-off time.

Each takes a DataFrame and returns ``(train, test)`` DataFrames with the
original index; they are seeded (``random_state``) and vectorised (no loop
over users). Ties in time are broken by a seeded random key, so the same seed
gives the same split whatever the row order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["leave_last_out", "random_holdout", "temporal_split"]


def _check_columns(frame: pd.DataFrame, *columns) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no column(s) {missing} (it has {list(frame.columns)});"
                         " name the user/time columns")


def _rank_within_user(frame: pd.DataFrame, user_column: str, keys: list[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's 0-based rank within its user in the order of ``keys`` (last key most
    significant after the user), and its user's row count."""
    users = pd.factorize(frame[user_column])[0]
    order = np.lexsort((*keys, users))
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(frame), np.int64)
    rank[order] = np.arange(len(frame)) - np.repeat(starts, counts)
    return rank, counts[users]


def random_holdout(frame: pd.DataFrame, *, user_column: str = "user",
                   test_fraction: float = 0.2, random_state=None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``round(test_fraction * n)`` random interactions of each user with ``n``.

    A user with a single interaction stays whole in train; no user loses all
    training rows.
    """
    _check_columns(frame, user_column)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction=}")
    key = np.random.default_rng(random_state).random(len(frame))
    rank, count = _rank_within_user(frame, user_column, [key])
    n_test = np.minimum(np.round(test_fraction * count), count - 1)
    test = rank < n_test
    return frame[~test], frame[test]


def leave_last_out(frame: pd.DataFrame, *, user_column: str = "user",
                   time_column: str = "timestamp", n: int = 1, random_state=0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's ``n`` latest interactions (a user with ``n`` or fewer stays in
    train). Interactions at the same time are ordered by a key seeded by ``random_state``."""
    _check_columns(frame, user_column, time_column)
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n=}")
    key = np.random.default_rng(random_state).random(len(frame))
    time = frame[time_column].to_numpy()
    rank, count = _rank_within_user(frame, user_column, [key, -_sortable(time)])
    test = (rank < n) & (count > n)      # rank 0 is the latest
    return frame[~test], frame[test]


def temporal_split(frame: pd.DataFrame, *, time_column: str = "timestamp",
                   test_fraction: float = 0.2, random_state=0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest ``test_fraction`` of all interactions form the test set (one global
    cut-off; rows at the cut-off time are split by a seeded random key). Test users or
    items absent from train are kept: the metrics count them as misses."""
    _check_columns(frame, time_column)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction=}")
    key = np.random.default_rng(random_state).random(len(frame))
    order = np.lexsort((key, _sortable(frame[time_column].to_numpy())))
    test = np.zeros(len(frame), bool)
    test[order[len(frame) - round(test_fraction * len(frame)):]] = True
    return frame[~test], frame[test]


def _sortable(time: np.ndarray) -> np.ndarray:
    """Times as float64 for sorting (datetimes as nanoseconds)."""
    if np.issubdtype(time.dtype, np.datetime64):
        return time.astype("datetime64[ns]").astype(np.int64).astype(np.float64)
    return np.asarray(time, dtype=np.float64)
