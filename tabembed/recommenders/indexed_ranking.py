"""Top-k through an approximate nearest-neighbour index, for large catalogues.

:class:`IndexedRanking` is the part of :class:`~tabembed.recommenders.base.Recommender`
that builds, caches and queries the indexes of :mod:`tabembed.recommenders.nearest_neighbours`
(one for ``recommend``, one for ``similar_items``). The indexes live in memory only: built
at first use or by :meth:`IndexedRanking.build_index`, dropped when the model they were
built for changes, never saved nor pickled.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from tabembed import defaults
from tabembed.recommenders import nearest_neighbours
from tabembed.recommenders.scoring import GridScorer, top_k_items

__all__ = ["IndexedRanking"]


class IndexedRanking:
    """Index-backed ranking of a recommender (a base of Recommender, which supplies
    ``_scores``, ``_ranking_weights``, ``_excluded``, ``_similarity_scorer`` and
    ``_new_item_vector``)."""

    def _ranking_terms(self) -> list:
        """``(GridScorer, weight, keep)`` terms whose ``weight * scores(keep=keep)`` sum to
        :meth:`_scores` (the hybrid: the rating model's and the ranker's)."""
        keep = self._ranking_weights()[0]
        ranker = getattr(self, "ranker_", None)
        if ranker is None:
            return [(self.scorer_, 1.0, keep)]
        return [(self.scorer_, defaults.RANKING_RATING_WEIGHT, keep),
                (ranker.scorer_, 1.0, None)]

    def _candidate_scores(self, terms, user_codes: np.ndarray, items: np.ndarray | None
                          ) -> np.ndarray:
        """:meth:`_scores` of ``items`` only (positions; None: all), from ``terms``."""
        total = None
        for scorer, weight, keep in terms:
            scores = scorer.scores(user_codes, keep, items=items)
            if weight != 1.0:
                scores *= weight
            total = scores if total is None else total + scores
        return total

    def _index_key(self, terms, kind: str) -> tuple:
        """What an index was built for: the models' weight tensors (a refit or a load makes
        new ones; weights edited in place need ``build_index()``), and the parameters that
        change the scores."""
        weights = tuple((id(p), p.data_ptr()) for scorer, _, _ in terms
                        for p in scorer.model.parameters())
        return (kind, weights, self.ranking_shrinkage, self.min_support)

    def _cached_index(self, kind: str, key: tuple):
        cache = getattr(self, "_index_cache", None) or {}
        found = cache.get(kind)
        return found if found is not None and found.key == key else None

    def _keep_index(self, kind: str, built) -> None:
        # Swapped in only once built: a failed build leaves any earlier index in place.
        self._index_cache = {**(getattr(self, "_index_cache", None) or {}), kind: built}

    def _ranking_index(self, index: str, n_items: int):
        """The ranking's index (built now if needed), or None for exact search."""
        if not nearest_neighbours.use_index(index, n_items):
            return None
        terms = self._ranking_terms()
        key = self._index_key(terms, "ranking")
        built = self._cached_index("ranking", key)
        if built is not None:
            return built
        try:
            self._check_terms(terms)
        except ValueError:
            if index == "ann":
                raise
            warnings.warn("this recommender's ranking has no inner-product form, so "
                          "index='auto' ranks exactly", UserWarning, stacklevel=4)
            return None
        built = nearest_neighbours.build_ranking_index(terms, self._ranking_weights()[1], key)
        self._keep_index("ranking", built)
        return built

    def _check_terms(self, terms) -> None:
        """The terms must give :meth:`_scores` (a subclass may rank otherwise); checked on
        the unknown user and the first known one."""
        if not all(scorer.is_dot_product() for scorer, _, _ in terms):
            raise ValueError("the ANN index needs a dot-product model (model='dot'); a "
                             "neural model has no inner-product form: use index='exact'")
        n_users = len(self.preprocessor_.categories_[self.user_column])
        codes = np.arange(min(2, n_users + 1), dtype=np.int64)
        if not np.allclose(self._candidate_scores(terms, codes, None), self._scores(codes),
                           rtol=1e-4, atol=1e-4):
            raise ValueError(f"{type(self).__name__}'s ranking is not a sum of dot-product "
                             "models, which the ANN index needs: use index='exact'")

    def build_index(self, *, similar: bool = False):
        """Build the approximate nearest-neighbour index now rather than at first use.

        ``recommend(index="ann")`` (and ``"auto"`` on large catalogues) builds
        it at its first call, which takes minutes on a million items; a server
        calls this once after loading. Needs ``pip install tabembed[ann]``. The
        index lives in memory only: it is never saved nor pickled, and a refit
        drops it.

        Parameters
        ----------
        similar : bool
            Also build the index of :meth:`similar_items`.

        Returns
        -------
        self
        """
        check_is_fitted(self, "learner_")
        n_items = len(self.preprocessor_.categories_[self.item_column])
        self._ranking_index("ann", n_items)
        if similar:
            self._similarity_index(self._similarity_scorer())
        return self

    def _index_top_k(self, ranking, codes: np.ndarray, k: int, n_items: int, seen,
                     filtered: np.ndarray, filter_items) -> tuple[np.ndarray, np.ndarray]:
        """Top-k through ``ranking``'s index: ``k`` plus what a user may not get (or
        ``CANDIDATES`` when the index only approximates the ranking) looked up, seen and
        filtered items dropped, the rest scored exactly. An unknown user, or one left short
        of ``k``, is ranked exactly."""
        width = min(k, n_items)
        found_items = np.full((len(codes), width), -1, dtype=np.int64)
        found_scores = np.full((len(codes), width), -np.inf, dtype=np.float32)
        redo = [np.flatnonzero(codes == 0)]
        known = np.flatnonzero(codes > 0)
        batch = max(1, nearest_neighbours.QUERY_BATCH)
        for start in range(0, len(known), batch):
            rows = known[start:start + batch]
            users = codes[rows]
            extra = len(filtered) + (0 if seen is None else int(np.diff(seen.indptr)[users].max()))
            count = k + extra if ranking.exact else max(k, nearest_neighbours.CANDIDATES) + extra
            candidates = ranking.graph.search(ranking.queries(users), count)
            valid = candidates >= 0
            exhausted = ~valid.all(axis=1)     # the index holds fewer than ``count``
            if len(filtered):
                valid &= ~np.isin(candidates, filtered)
            if seen is not None:
                for row, user in enumerate(users):
                    taken = seen.indices[seen.indptr[user]:seen.indptr[user + 1]]
                    if len(taken):
                        valid[row] &= ~np.isin(candidates[row], taken)
            union = np.unique(candidates[valid])
            if not len(union):
                redo.append(rows[~exhausted])
                continue
            grid = self._candidate_scores(ranking.terms, users, union)
            columns = np.searchsorted(union, np.where(valid, candidates, union[0]))
            values = np.where(valid, np.take_along_axis(grid, columns, axis=1), -np.inf)
            # Best first, ties to the lower item position (as the exact ranking).
            order = np.lexsort((np.where(valid, candidates, n_items), -values), axis=1)[:, :width]
            best = np.take_along_axis(candidates, order, axis=1)
            best_values = np.take_along_axis(values, order, axis=1)
            best[~np.isfinite(best_values)] = -1
            found_items[rows, :best.shape[1]] = best
            found_scores[rows, :best.shape[1]] = best_values
            short = ((best >= 0).sum(axis=1) < width) & ~exhausted
            redo.append(rows[short])
        redo = np.concatenate(redo)
        if len(redo):
            items, scores = top_k_items(self._scores, codes[redo], k, n_items, seen=seen,
                                        excluded=self._excluded(filter_items))
            found_items[redo], found_scores[redo] = items, scores
        return found_items, found_scores

    def _similarity_index(self, scorer: GridScorer):
        weights, eligible = self._ranking_weights(similarity=True)
        key = self._index_key([(scorer, 1.0, None)], "similar")
        built = self._cached_index("similar", key)
        if built is None:
            built = nearest_neighbours.SimilarityIndex(scorer.item_vectors(), weights,
                                                       eligible, key)
            self._keep_index("similar", built)
        return built

    def _similar_by_index(self, scorer: GridScorer, item_ids: pd.Index, item, k: int,
                          item_features) -> pd.DataFrame:
        if not scorer.is_dot_product():
            raise ValueError("the ANN index needs a dot-product model (model='dot'): use "
                             "index='exact'")
        built = self._similarity_index(scorer)
        position = item_ids.get_indexer([item])[0]
        items_table = scorer.tables[2]
        if position >= 0:
            target = scorer.item_vectors(items_table[[position]])[0]
        else:
            target = self._new_item_vector(scorer, item, item_features)
        length = float(np.linalg.norm(target)) or 1.0
        found = built.graph.search((target / length)[None, :].astype(np.float32), k + 1)[0]
        found = np.unique(found[(found >= 0) & (found != position)])
        vectors = scorer.item_vectors(items_table[torch.as_tensor(found, dtype=torch.long)])
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        weights = self._ranking_weights(similarity=True)[0]
        similarity = vectors @ target / (norms * length) * weights[found]
        order = np.lexsort((found, -similarity))[:k]      # ties to the lower item position
        return pd.DataFrame({self.item_column: item_ids[found[order]],
                             "similarity": similarity[order].astype(np.float64)})
