"""Top-k over large catalogues through an approximate nearest-neighbour index.

Exact ranking scores every item for every user: at a million items that is a
million dot products and a partial sort per user. Above :data:`ANN_MIN_ITEMS`
items (``index="auto"``), or when asked (``index="ann"``), ``recommend``,
``recommend_all`` and ``similar_items`` look the candidates up in a graph
index instead, and score only those exactly.

The index: faiss (``pip install tabembed[ann]``, the ``faiss-cpu`` wheel),
an HNSW graph (``IndexHNSWFlat``) under the inner-product metric. Why faiss:
it installs as a binary wheel in seconds on Linux, macOS and Windows, is
maintained by Meta's FAIR team with regular releases, searches inner products
natively (no transform to Euclidean distance needed), and in our measurement
(bench/NOTES.md, issue 32) built the same graph about twice as fast as
usearch at equal recall; hnswlib had its last release in 2023 and compiles
from source here.

How scores become inner products. A dot-bias model's logit is
``u . v + b_item + c_user``; the per-user constant does not change a user's
order, and the item part folds into one more dimension: item rows
``[v, b_item]`` and user rows ``[u, 1]`` (:meth:`GridScorer.item_parts`).
Support shrinkage only changes ``b_item``. When a ranking is one such model
(or an ensemble of models without ``y_range``, whose mean is still linear),
the index's order is the ranking's order: it returns ``k`` plus as many items
as the user may not get (seen, filtered), which are then dropped. When it is
not (an ensemble squashed by ``y_range``, or the hybrid ranking: the ranker's
score plus a squashed rating), the concatenated parts are a linear stand-in
and the index generates :data:`CANDIDATES` candidates per user, which are
scored exactly. Either way the scores returned are the exact ranking's, and
seen items are excluded exactly (after the look-up).

The index is built at first use (or by ``build_index``), kept in memory with
the fitted model, never saved nor pickled: a loaded model rebuilds it, a refit
(or changed ``ranking_shrinkage`` or ``min_support``) drops it. A build that
fails leaves the model, and any index it had, as they were.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ANN_MIN_ITEMS", "CANDIDATES", "INDEX_OPTIONS", "InnerProductIndex", "RankingIndex",
           "SimilarityIndex", "available", "build_ranking_index", "use_index"]

# ``index="auto"`` uses the index from this many items: below it the exact search of one
# user costs a few milliseconds, and the graph's build (about 5 minutes per million items on
# one core) does not pay off.
ANN_MIN_ITEMS = 500_000
# Candidates per user when the index order only approximates the ranking (the hybrid).
CANDIDATES = 200
# HNSW: neighbours per node, and the search depths at build and query time (bench/NOTES.md).
HNSW_NEIGHBOURS = 32
HNSW_BUILD_DEPTH = 100
HNSW_SEARCH_DEPTH = 128
INDEX_OPTIONS = ("auto", "exact", "ann")
# Users looked up together (one faiss call) and rescored in one grid.
QUERY_BATCH = 256

_MISSING = ("index='ann' needs faiss: pip install 'tabembed[ann]' (or pip install faiss-cpu); "
            "index='exact' ranks without it")


def available() -> bool:
    """Whether faiss can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def use_index(index, n_items: int) -> bool:
    """Whether ``index`` (``"auto"``, ``"exact"`` or ``"ann"``) means the ANN index for a
    catalogue of ``n_items``; ``"ann"`` without faiss is an ``ImportError``."""
    if not isinstance(index, str) or index not in INDEX_OPTIONS:
        raise ValueError(f"index must be one of {INDEX_OPTIONS}, got {index!r}")
    if index == "exact":
        return False
    if index == "ann":
        if not available():
            raise ImportError(_MISSING)
        return True
    return n_items >= ANN_MIN_ITEMS and available()


class InnerProductIndex:
    """An HNSW graph over rows of ``vectors`` under the inner product (faiss).

    Parameters
    ----------
    vectors : ndarray [n, d]
        One row per indexed item (float32).
    keys : ndarray [n]
        What :meth:`search` returns for each row (item positions).
    """

    def __init__(self, vectors: np.ndarray, keys: np.ndarray):
        try:
            import faiss
        except ImportError as error:
            raise ImportError(_MISSING) from error
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise ValueError("the item vectors hold NaN or infinite values: the model's "
                             "weights are not finite, refit it")
        self.keys = np.asarray(keys, dtype=np.int64)
        self.dimension = vectors.shape[1]
        graph = faiss.IndexHNSWFlat(self.dimension, HNSW_NEIGHBOURS,
                                    faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_BUILD_DEPTH
        if len(vectors):
            graph.add(vectors)
        self.graph = graph

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: np.ndarray, count: int) -> np.ndarray:
        """Keys ``[n, count]`` of each query's best rows by inner product, best first; -1
        where the index holds fewer."""
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        count = max(1, min(int(count), len(self.keys)))
        if not len(self.keys):
            return np.full((len(queries), 1), -1, dtype=np.int64)
        parameters = faiss.SearchParametersHNSW(efSearch=max(HNSW_SEARCH_DEPTH, count))
        _, rows = self.graph.search(queries, count, params=parameters)
        return np.where(rows >= 0, self.keys[np.maximum(rows, 0)], -1)

    def __reduce__(self):
        raise TypeError("an ANN index is never pickled; the recommender rebuilds it after "
                        "loading (tabembed.load) or unpickling")


class RankingIndex:
    """The index of one ranking: the graph, how its queries are made, whether its order is
    the ranking's (``exact``), and what it was built for (``key``)."""

    def __init__(self, graph: InnerProductIndex, terms, exact: bool, key):
        self.graph, self.terms, self.exact, self.key = graph, terms, exact, key

    def queries(self, user_codes: np.ndarray) -> np.ndarray:
        """Users' query rows: each term's ``[vector, 1]`` parts times its weight."""
        parts = []
        for scorer, weight, _ in self.terms:
            states = scorer.user_parts(user_codes)
            parts += [part * (weight / len(states)) for part in states]
        return np.concatenate(parts, axis=1)

    def __reduce__(self):
        raise TypeError("an ANN index is never pickled; the recommender rebuilds it after "
                        "loading (tabembed.load) or unpickling")


def build_ranking_index(terms, eligible: np.ndarray, key) -> RankingIndex:
    """A :class:`RankingIndex` over the ``eligible`` items of a ranking that is the sum of
    ``terms``, each ``(GridScorer, weight, keep)``: ``weight * scores(keep=keep)``."""
    if not all(scorer.is_dot_product() for scorer, _, _ in terms):
        raise ValueError("the ANN index needs a dot-product model (model='dot'); a neural "
                         "model has no inner-product form: use index='exact'")
    positions = np.flatnonzero(eligible)
    parts = []
    for scorer, _, keep in terms:
        parts += [part[positions] for part in scorer.item_parts(keep)]
    exact = len(parts) == 1 or all(scorer.is_linear() for scorer, _, _ in terms)
    vectors = np.concatenate(parts, axis=1)
    del parts
    return RankingIndex(InnerProductIndex(vectors, positions), terms, exact, key)


class SimilarityIndex:
    """Items' unit vectors times their support weight: the inner product with a unit query
    is ``similar_items``' score (cosine times weight)."""

    def __init__(self, vectors: np.ndarray, weights: np.ndarray, eligible: np.ndarray, key):
        positions = np.flatnonzero(eligible)
        chosen = vectors[positions].astype(np.float32)
        norms = np.linalg.norm(chosen, axis=1)
        norms[norms == 0] = 1.0
        chosen /= norms[:, None]
        chosen *= weights[positions, None].astype(np.float32)
        self.graph = InnerProductIndex(chosen, positions)
        self.key = key

    def __reduce__(self):
        raise TypeError("an ANN index is never pickled; the recommender rebuilds it after "
                        "loading (tabembed.load) or unpickling")
