"""Item vectors and similar items: cosine similarity of the rating model's item vectors
(side features included), for known items and for new ones described by their features.

:class:`ItemSimilarity` is that part of :class:`~tabembed.recommenders.base.Recommender`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from tabembed._validation import as_frame
from tabembed.ranking_metrics import top_k
from tabembed.recommenders import nearest_neighbours
from tabembed.recommenders.interaction_data import encode
from tabembed.recommenders.scoring import GridScorer, check_k, side_masks

__all__ = ["ItemSimilarity"]


class ItemSimilarity:
    """Item vectors and ``similar_items`` of a recommender (a base of Recommender, which
    supplies the fitted scorer, preprocessor and ranking weights)."""

    def item_vectors(self, X=None) -> pd.DataFrame:
        """Items' full vectors: their factors plus their pooled multi-valued features.

        Without ``X``: every training item (equal to :attr:`item_embeddings_` when
        there are no multi-valued features). With ``X`` (the item column and
        item features, e.g. ``{"item": ["new"], "genres": ["Action|Sci-Fi"]}``):
        those rows, new items included, whose vectors come from their features.
        """
        check_is_fitted(self, "learner_")
        return self._item_vectors(self.scorer_, X)

    def _item_vectors(self, scorer: GridScorer, X=None) -> pd.DataFrame:
        if X is None:
            vectors = scorer.item_vectors()
            index = pd.Index(self.preprocessor_.categories_[self.item_column],
                             name=self.item_column)
        else:
            frame = as_frame(X)
            index = pd.Index(frame[self.item_column], name=self.item_column)
            filled = self.bags_.canonical(frame.reindex(columns=list(self.feature_names_in_)))
            codes = encode(self.preprocessor_, self.bags_, filled)[0] * side_masks(
                self.preprocessor_, self.bags_, self.item_column,
                self.item_features_)[0].long()
            vectors = scorer.item_vectors(codes)
        return pd.DataFrame(vectors, index=index,
                            columns=[f"factor_{i}" for i in range(vectors.shape[1])])

    def _check_known_features(self, row: pd.DataFrame) -> None:
        """A new item's features must give it a vector: at least one known bag token or
        category among the item features, else its similarities would all be 0."""
        row = self.bags_.canonical(row.reindex(columns=list(self.feature_names_in_)))
        codes = encode(self.preprocessor_, self.bags_, row)[0][0]
        mask = side_masks(self.preprocessor_, self.bags_, self.item_column,
                          self.item_features_)[0].clone()
        mask[self.preprocessor_.cat_columns_.index(self.item_column)] = False
        if not bool((codes[mask] > 0).any()):
            given = {c: row[c].iloc[0] for c in row.columns if c != self.item_column
                     and row[c].notna().iloc[0]}
            raise ValueError(
                f"item_features {given} hold no value seen in training among the item "
                f"features {self.item_features_}, so the new item has no vector to compare; "
                "give it known values (e.g. known genres)")

    def similar_items(self, item, k: int = 10, *, item_features=None,
                      index: str = "auto") -> pd.DataFrame:
        """The ``k`` items whose vectors are most similar to ``item``'s.

        The cosine similarity of item vectors (:meth:`item_vectors`; with the
        hybrid ranking, the ranker's, which learned from co-occurrence),
        multiplied by the candidate's support share ``n / (n + ranking_shrinkage)``,
        and items below ``min_support`` left out, so barely-rated items (whose
        vectors are mostly noise) do not crowd the list. Ties go to the lower
        item code.

        Parameters
        ----------
        item : id
            A training item, or a new one described by ``item_features``.
        k : int
        item_features : dict or one-row table, optional
            A new item's features, e.g. ``{"genres": "Action|Sci-Fi"}`` or a
            one-row pandas, polars or Arrow table (cold start: its vector comes
            from its multi-valued features).
        index : {"auto", "exact", "ann"}
            As in :meth:`recommend`: ``"ann"`` looks the ``k + 1`` nearest up in
            an index of the items' unit vectors times their support share (the
            score is their inner product with the item's unit vector) and
            scores them exactly.
        """
        check_is_fitted(self, "learner_")
        k = check_k(k)
        scorer = self._similarity_scorer()
        item_ids = self._item_ids()
        if nearest_neighbours.use_index(index, len(item_ids)) and (
                index == "ann" or scorer.is_dot_product()):
            return self._similar_by_index(scorer, item_ids, item, k, item_features)
        vectors = self._item_vectors(scorer)
        position = vectors.index.get_indexer([item])[0]
        if position >= 0:
            target = vectors.to_numpy()[position]
        else:
            target = self._new_item_vector(scorer, item, item_features)
        matrix = vectors.to_numpy()
        norms = np.linalg.norm(matrix, axis=1)
        norms[norms == 0] = 1.0
        similarity = matrix @ target / (norms * (np.linalg.norm(target) or 1.0))
        weights, eligible = self._ranking_weights(similarity=True)
        similarity = similarity * weights
        excluded = np.flatnonzero(~eligible)
        if position >= 0:
            excluded = np.union1d(excluded, [position])
        best, values = top_k(similarity[None, :], k, exclude_columns=excluded)
        keep = best[0] >= 0
        return pd.DataFrame({self.item_column: vectors.index[best[0][keep]],
                             "similarity": values[0][keep]})

    def _new_item_vector(self, scorer: GridScorer, item, item_features) -> np.ndarray:
        """A new item's vector from its features (``similar_items``' cold start)."""
        if item_features is None:
            raise KeyError(f"item {item!r} was not seen in training; similar_items needs a "
                           "known item, or the new item's item_features")
        features = (item_features if isinstance(item_features, dict)
                    else as_frame(item_features).iloc[0].to_dict())   # a one-row table
        row = pd.DataFrame({self.item_column: [item], **{c: [v] for c, v in features.items()}})
        self._check_known_features(row)
        return self._item_vectors(scorer, row).to_numpy()[0]
