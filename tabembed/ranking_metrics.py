"""Top-k ranking: selecting the best items per user and scoring the lists.

Two halves, both vectorised over users (numpy and ``scipy.sparse``, no loop
over users in Python):

- :func:`top_k` picks the ``k`` best-scored items of each row of a score
  matrix, with excluded items (a user's training items, a ``filter_items``
  list) given as a sparse matrix that is never densified, and ties broken
  deterministically (lower item index first).
- The metrics compare recommended lists (``[n_users, k]`` item indices, ``-1``
  where a user got fewer than ``k`` items) with the held-out relevant items
  (a sparse ``[n_users, n_items]`` matrix): :func:`recall_at_k`,
  :func:`precision_at_k`, :func:`ndcg_at_k`, :func:`map_at_k`,
  :func:`hit_rate_at_k` (means over the users with at least one relevant
  item) and :func:`coverage` (share of the catalogue recommended to anyone).
  :func:`evaluate` does the same from DataFrames of ids, and
  :func:`ranking_scorer` makes a scikit-learn scorer for ``GridSearchCV``.

Definitions, for a user with relevant set ``R`` and list ``L`` of length ``k``
(``hit_r`` = 1 when the item at rank ``r`` is in ``R``):

- recall@k = ``sum(hit) / |R|``; truncated recall@k = ``sum(hit) / min(k, |R|)``
  (reaches 1 for a perfect list even when ``|R| > k``); precision@k =
  ``sum(hit) / k``;
- hit rate@k = 1 when any ``hit``;
- NDCG@k = ``sum(hit_r / log2(r + 1)) / sum_{r <= min(|R|, k)} 1 / log2(r + 1)``
  (ranks from 1; the ideal list puts ``min(|R|, k)`` relevant items first);
- MAP@k: the mean over users of ``sum_r precision@r * hit_r / min(|R|, k)``.

Every metric is a mean over the users with at least one relevant item, a
user without a list counting as a list with no hit. docs/ranking_metrics.md
explains the choices and why published numbers differ.

Items a user saw in training must be excluded from the lists (as
:func:`top_k` does with ``exclude``, or :func:`evaluate` with ``seen``),
since they are never in the test set of a split such as
:func:`~tabembed.interaction_splits.random_holdout`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "METRICS",
    "coverage",
    "evaluate",
    "hit_rate_at_k",
    "interaction_matrix",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_scorer",
    "recall_at_k",
    "top_k",
    "truncated_recall_at_k",
]

# Scores per chunk of users when recommending, whatever the numbers of users and items:
# larger chunks were no faster and raised the peak memory (the allocator keeps freed blocks).
CHUNK_SCORES = 2_000_000


# ---------------------------------------------------------------- selecting

def top_k(scores: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None,
          exclude_columns=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores``, best first.

    Parameters
    ----------
    scores : array of shape (n_rows, n_items)
        Higher is better. NaN counts as excluded.
    k : int
    exclude : sparse matrix of shape (n_rows, n_items), optional
        Nonzero entries are never returned (a user's training items); read
        through its indices, never densified.
    exclude_columns : array of int, optional
        Columns excluded for every row (``filter_items``).

    Returns
    -------
    items : int64 array of shape (n_rows, min(k, n_items))
        Column indices, ``-1`` where a row has fewer than ``k`` eligible items.
    values : array of the same shape
        Their scores (``-inf`` where ``items`` is ``-1``).

    Ties are broken by the lower column index, so the result does not depend
    on the selection algorithm.
    """
    scores = np.array(scores, dtype=np.float64 if scores.dtype == np.float64 else np.float32)
    n_rows, n_items = scores.shape
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude has shape {exclude.shape} but scores {scores.shape}")
        rows = np.repeat(np.arange(n_rows), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    if exclude_columns is not None:
        scores[:, np.asarray(exclude_columns, dtype=np.int64)] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    k = min(int(k), n_items)
    if k == 0 or n_rows == 0:
        return np.full((n_rows, k), -1, np.int64), np.full((n_rows, k), -np.inf, scores.dtype)
    items = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k:]
    values = np.take_along_axis(scores, items, axis=1)
    threshold = values.min(axis=1, keepdims=True)
    # Only rows with more items at or above their k-th value than k (ties across the
    # cut) need the careful selection; one counting pass finds them.
    crowded = np.flatnonzero((scores >= threshold).sum(axis=1) > k)
    if len(crowded):
        rows = scores[crowded]
        items[crowded] = _lowest_index_top_k(rows, threshold[crowded], k)
        values[crowded] = np.take_along_axis(rows, items[crowded], axis=1)
    order = np.lexsort((items, -values), axis=1)    # best first, then the lower index
    items = np.take_along_axis(items, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    items[values == -np.inf] = -1
    return items, values


def _lowest_index_top_k(scores: np.ndarray, threshold: np.ndarray, k: int) -> np.ndarray:
    """Columns ``[n, k]`` above ``threshold``, then the lowest-indexed ones tied at it."""
    above = scores > threshold
    tied = scores == threshold
    slots = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= slots))
    return np.nonzero(chosen)[1].reshape(len(scores), k)


# ---------------------------------------------------------------- metrics

def _hits(recommended: np.ndarray, relevant) -> tuple[np.ndarray, np.ndarray]:
    """``hits[u, r]`` (item at rank r is relevant) and ``|R_u|``, for every row."""
    recommended = np.asarray(recommended, dtype=np.int64)
    if recommended.ndim != 2:
        raise ValueError(f"recommended must be 2-d (users x k), got shape {recommended.shape}")
    relevant = sp.csr_matrix(relevant, dtype=np.float64)
    relevant.sum_duplicates()
    relevant.eliminate_zeros()
    if relevant.shape[0] != recommended.shape[0]:
        raise ValueError(f"recommended has {recommended.shape[0]} rows (users) but relevant "
                         f"has {relevant.shape[0]}; give both in the same user order")
    n_items = relevant.shape[1]
    if recommended.size and recommended.max() >= n_items:
        raise ValueError(f"recommended holds item index {recommended.max()} but relevant has "
                         f"only {n_items} columns")
    # Sorted keys user * n_items + item of the relevant pairs, looked up by binary search.
    relevant.sort_indices()
    rows = np.repeat(np.arange(relevant.shape[0], dtype=np.int64), np.diff(relevant.indptr))
    keys = rows * n_items + relevant.indices
    wanted = np.arange(len(recommended), dtype=np.int64)[:, None] * n_items + recommended
    position = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    hits = (keys[position] == wanted) & (recommended >= 0) if len(keys) else \
        np.zeros(recommended.shape, bool)
    # A list may not repeat an item; count each relevant item once.
    return hits, np.diff(relevant.indptr)


def _mean_over_users(values: np.ndarray, n_relevant: np.ndarray) -> float:
    users = n_relevant > 0
    if not users.any():
        return float("nan")
    return float(values[users].mean())


def recall_at_k(recommended, relevant, k: int | None = None) -> float:
    """Mean over users with a relevant item of (relevant items in the top k) / (relevant items)."""
    hits, n_relevant = _hits(_cut(recommended, k), relevant)
    return _mean_over_users(hits.sum(1) / np.maximum(n_relevant, 1), n_relevant)


def truncated_recall_at_k(recommended, relevant, k: int | None = None) -> float:
    """Recall with the denominator capped at the list length: (relevant items in the top k)
    / min(k, relevant items), averaged over users with a relevant item; 1 for a perfect
    list (Liang et al., 2018, "Variational autoencoders for collaborative filtering")."""
    recommended = _cut(recommended, k)
    hits, n_relevant = _hits(recommended, relevant)
    denominator = np.maximum(np.minimum(n_relevant, recommended.shape[1]), 1)
    return _mean_over_users(hits.sum(1) / denominator, n_relevant)


def precision_at_k(recommended, relevant, k: int | None = None) -> float:
    """Mean over users with a relevant item of (relevant items in the top k) / k."""
    recommended = _cut(recommended, k)
    hits, n_relevant = _hits(recommended, relevant)
    return _mean_over_users(hits.sum(1) / max(recommended.shape[1], 1), n_relevant)


def hit_rate_at_k(recommended, relevant, k: int | None = None) -> float:
    """Share of users (with a relevant item) who have at least one relevant item in the top k."""
    hits, n_relevant = _hits(_cut(recommended, k), relevant)
    return _mean_over_users(hits.any(1).astype(float), n_relevant)


def ndcg_at_k(recommended, relevant, k: int | None = None) -> float:
    """Mean normalised discounted cumulative gain (binary relevance, ``log2`` discount)."""
    recommended = _cut(recommended, k)
    hits, n_relevant = _hits(recommended, relevant)
    discounts = 1.0 / np.log2(np.arange(2, recommended.shape[1] + 2))
    dcg = hits @ discounts
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_relevant,
                                                                    len(discounts))]
    return _mean_over_users(dcg / np.where(ideal > 0, ideal, 1.0), n_relevant)


def map_at_k(recommended, relevant, k: int | None = None) -> float:
    """Mean average precision: ``sum_r precision@r * hit_r / min(|R|, k)`` averaged over users."""
    recommended = _cut(recommended, k)
    hits, n_relevant = _hits(recommended, relevant)
    precision = np.cumsum(hits, axis=1) / np.arange(1, recommended.shape[1] + 1)
    denominator = np.maximum(np.minimum(n_relevant, recommended.shape[1]), 1)
    return _mean_over_users((precision * hits).sum(1) / denominator, n_relevant)


def coverage(recommended, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one list."""
    recommended = np.asarray(recommended)
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items=}")
    return float(len(np.unique(recommended[recommended >= 0])) / n_items)


def _cut(recommended, k):
    recommended = np.asarray(recommended)
    if k is None:
        return recommended
    if not (isinstance(k, int | np.integer) and k >= 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return recommended[:, :k]


METRICS: dict[str, Callable] = {
    "recall": recall_at_k,
    "truncated_recall": truncated_recall_at_k,
    "precision": precision_at_k,
    "ndcg": ndcg_at_k,
    "map": map_at_k,
    "hit_rate": hit_rate_at_k,
}


# ---------------------------------------------------------------- from frames

def interaction_matrix(users, items, user_index: pd.Index, item_index: pd.Index,
                       values=None) -> sp.csr_matrix:
    """A ``[len(user_index), len(item_index)]`` CSR matrix of the (user, item) pairs.

    Pairs whose user or item is not in the indexes are dropped; repeated
    pairs count once (``values`` default to 1; the largest is kept).
    """
    rows = user_index.get_indexer(pd.Index(users))
    cols = item_index.get_indexer(pd.Index(items))
    data = np.ones(len(rows)) if values is None else np.asarray(values, dtype=np.float64)
    keep = (rows >= 0) & (cols >= 0)
    matrix = sp.coo_matrix((data[keep], (rows[keep], cols[keep])),
                           shape=(len(user_index), len(item_index))).tocsr()
    if values is None:
        matrix.data[:] = 1.0       # duplicates were summed
    return matrix


def evaluate(recommendations: pd.DataFrame, test: pd.DataFrame, *, k: int = 10,
             user_column: str = "user", item_column: str = "item", n_items: int | None = None,
             metrics=("recall", "precision", "ndcg", "map", "hit_rate"),
             seen: pd.DataFrame | None = None, exclude_seen: bool = True,
             ) -> dict[str, float]:
    """Ranking metrics of top-k lists against held-out interactions, from DataFrames of ids.

    Every user of ``test`` counts: the means run over all of them (a user
    without a list, or with a short one, counts as a list with fewer or no
    hits), never only over the users who got a list. The number of those
    users is returned as ``"users"``.

    Parameters
    ----------
    recommendations : DataFrame
        One row per recommended (user, item), best first within each user
        (``EmbeddingRecommender.recommend(users, k)`` returns this shape).
    test : DataFrame
        The relevant (user, item) pairs (filter the ratings first, e.g.
        ``test[test.rating >= 4]``).
    k : int
        Cut-off.
    n_items : int, optional
        Catalogue size for ``coverage`` (omitted when not given).
    metrics : sequence of str
        Names among ``recall``, ``truncated_recall``, ``precision``, ``ndcg``,
        ``map``, ``hit_rate`` (definitions: the module's docstring and
        docs/ranking_metrics.md).
    seen : DataFrame, optional
        The (user, item) pairs of the training part, in the same columns.
        With ``exclude_seen=True`` they are dropped from the lists (the items
        below move up, then the lists are cut at ``k``: ask for ``k`` plus the
        largest number of seen items per user to keep ``k``) and from the
        relevant pairs (a user whose relevant items were all seen leaves the
        means). With ``exclude_seen=False`` nothing is dropped, and
        ``"seen_share"`` reports the share of the top-``k`` slots that hold a
        seen item (for lists made with ``recommend(..., exclude_seen=False)``).
        Without ``seen`` the lists and ``test`` are scored as given: the lists
        should already leave out seen items (``recommend`` does by default).
    exclude_seen : bool
        See ``seen``.

    Returns
    -------
    dict
        ``{"recall@10": ..., ...}``, ``"users"`` (how many users the means
        run over), ``"coverage"`` with ``n_items`` (the share of the
        catalogue in at least one top-``k`` list), ``"seen_share"`` with
        ``seen`` and ``exclude_seen=False``.
    """
    frames = [("recommendations", recommendations), ("test", test)]
    if seen is not None:
        frames.append(("seen", seen))
    for name, frame in frames:
        missing = {user_column, item_column} - set(frame.columns)
        if missing:
            raise ValueError(f"{name} has no column(s) {sorted(missing)}; set user_column/"
                             f"item_column (it has {list(frame.columns)})")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    _cut(np.zeros((0, 1)), k)       # k must be a positive integer
    seen_share = None
    if seen is not None:
        pairs = pd.MultiIndex.from_frame(seen[[user_column, item_column]])
        listed_seen = pd.MultiIndex.from_frame(
            recommendations[[user_column, item_column]]).isin(pairs)
        if exclude_seen:
            recommendations = recommendations[~listed_seen]
            test = test[~pd.MultiIndex.from_frame(test[[user_column, item_column]]).isin(pairs)]
        else:
            ranked = recommendations.groupby(user_column, sort=False).cumcount().to_numpy() < k
            seen_share = float(listed_seen[ranked].mean()) if ranked.any() else float("nan")
    users = pd.Index(pd.unique(test[user_column]))
    items = pd.Index(pd.unique(pd.concat([test[item_column],
                                          recommendations[item_column]], ignore_index=True)))
    relevant = interaction_matrix(test[user_column], test[item_column], users, items)
    listed = recommendations[recommendations[user_column].isin(users)]
    rows = users.get_indexer(listed[user_column])
    ranks = listed.groupby(user_column, sort=False).cumcount().to_numpy()
    keep = ranks < k
    lists = np.full((len(users), k), -1, np.int64)
    lists[rows[keep], ranks[keep]] = items.get_indexer(listed[item_column])[keep]
    result = {f"{name}@{k}": METRICS[name](lists, relevant) for name in metrics}
    result["users"] = int((np.diff(relevant.indptr) > 0).sum())
    if n_items is not None:
        ranked = recommendations.groupby(user_column, sort=False).cumcount() < k
        result["coverage"] = float(recommendations.loc[ranked.to_numpy(), item_column].nunique()
                                   / n_items)
    if seen_share is not None:
        result["seen_share"] = seen_share
    return result


def ranking_scorer(metric: str = "ndcg", *, k: int = 10, threshold: float | None = None,
                   ) -> Callable:
    """A scikit-learn scorer (``scoring=`` of ``GridSearchCV``, ``cross_val_score``) for
    recommenders: higher is better.

    ``scorer(recommender, X, y)`` asks ``recommender.recommend(users, k)`` for
    the users of ``X`` (their training items excluded) and scores the lists
    against the rows of ``X`` whose ``y`` is at least ``threshold`` (all rows
    when ``threshold`` is None or ``y`` is not given).

    Parameters
    ----------
    metric : {"recall", "truncated_recall", "precision", "ndcg", "map", "hit_rate"}
    k : int
    threshold : float, optional
        Ratings at least this high count as relevant (e.g. 4 of 5 stars).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")

    def scorer(recommender, X, y=None) -> float:
        test = X
        if threshold is not None and y is not None:
            test = X[np.asarray(y, dtype=np.float64) >= threshold]
        user_column, item_column = recommender.user_column, recommender.item_column
        users = pd.unique(test[user_column])
        lists = recommender.recommend(list(users), k=k)
        return evaluate(lists, test, k=k, user_column=user_column, item_column=item_column,
                        metrics=(metric,))[f"{metric}@{k}"]

    scorer.__name__ = f"{metric}_at_{k}"
    return scorer
