"""EASE, the closed-form item-item model (Steck, 2019), as a part of the ranking.

Given the binary users x items matrix ``X`` of training interactions, EASE's
item-item weights are the ridge regression of every item's column on the
others, with the diagonal held at zero:

    P = (X'X + lambda I)^-1,    B = I - P / diag(P)    (each column j divided by P_jj)

and a user's scores are their row of ``X`` times ``B``. A new user's scores
come from the items they picked alone (the sum of those rows of ``B``), with
no fitting. The cost is one inversion of the item Gram matrix: cubic time and
quadratic memory in the catalogue (float32: 1,682 items take 0.1 s and 11 MB,
9,724 items ~8 s and 378 MB on one thread; 20,000 items ~1 min and 1.6 GB), so
it is built only for catalogues up to ``defaults.ITEM_ITEM_MAX_ITEMS``.

The weights are never written to a model file: they are rebuilt from the
stored training pairs when a loaded model first ranks (the same inputs, the
same LAPACK calls: the same weights).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["ItemItem", "ease_weights", "standardise"]


def ease_weights(matrix: sp.spmatrix, strength: float, dropout: float = 0.0) -> np.ndarray:
    """EASE's weights ``B`` ``[items, items]`` (float32, zero diagonal) from the binary
    users x items ``matrix``, with L2 strength ``strength`` (lambda).

    ``dropout`` ``p`` > 0 adds ``p / (1 - p)`` x each item's count to its penalty:
    EDLAE (Steck, 2020), the closed form of training EASE with dropout on the inputs.

    ``X'X + lambda I`` is symmetric positive definite, so a Cholesky factor and its
    inverse (LAPACK ``potrf``/``potri``, half the work of a general inverse), in place.
    """
    from scipy.linalg import lapack

    if strength <= 0:
        raise ValueError(f"the item-item L2 strength must be positive, got {strength}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    gram = np.asarray((matrix.T @ matrix).todense(), dtype=np.float32)
    diagonal = np.diag_indices_from(gram)
    gram[diagonal] += np.float32(strength) + np.float32(dropout / (1 - dropout)) * gram[diagonal]
    factor, info = lapack.spotrf(gram, lower=0, overwrite_a=1, clean=0)
    if info:
        raise np.linalg.LinAlgError(f"the item Gram matrix is not positive definite "
                                    f"(LAPACK potrf info {info})")
    inverse, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info:
        raise np.linalg.LinAlgError(f"inverting the item Gram matrix failed (potri info {info})")
    inverse = np.triu(inverse)          # potri fills the upper triangle only
    inverse += np.triu(inverse, 1).T
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal[None, :]
    inverse[np.diag_indices_from(inverse)] = 0.0
    return inverse


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each row (or a 1-d vector) less its mean over the catalogue, over its standard
    deviation, in place: a blend of unlike scores (item-item weights, ratings, logits)
    needs them on one scale per user. A constant row becomes zeros."""
    scores = np.asarray(scores)
    mean = scores.mean(axis=-1, keepdims=True, dtype=np.float64)
    spread = scores.std(axis=-1, keepdims=True, dtype=np.float64)
    spread[spread == 0] = 1.0
    scores -= mean.astype(scores.dtype)
    scores /= spread.astype(scores.dtype)
    return scores


class ItemItem:
    """EASE over a fitted recommender's vocabularies.

    Parameters
    ----------
    user_codes, item_codes : array of int
        The training (user, item) pairs as the preprocessor's codes (0 is the unknown
        token, never a training pair); repeated pairs count once.
    n_users, n_items : int
        The vocabularies' sizes (codes run 1..n).
    strength : float
        EASE's lambda.
    """

    def __init__(self, user_codes: np.ndarray, item_codes: np.ndarray, n_users: int,
                 n_items: int, strength: float):
        self.strength = float(strength)
        self.n_items = int(n_items)
        rows = np.asarray(user_codes, dtype=np.int64) - 1
        columns = np.asarray(item_codes, dtype=np.int64) - 1
        keep = (rows >= 0) & (columns >= 0)
        matrix = sp.csr_matrix((np.ones(int(keep.sum()), np.float32),
                                (rows[keep], columns[keep])), shape=(n_users, n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        self.matrix = matrix
        self._weights = None

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (user, item) code pairs it was built from, sorted."""
        coo = self.matrix.tocoo()
        order = np.lexsort((coo.col, coo.row))
        return (coo.row[order].astype(np.int64) + 1, coo.col[order].astype(np.int64) + 1)

    @property
    def weights(self) -> np.ndarray:
        """``B`` ``[items, items]``, computed at first use, then kept."""
        if self._weights is None:
            self._weights = ease_weights(self.matrix, self.strength)
        return self._weights

    def scores(self, user_codes: np.ndarray) -> np.ndarray:
        """Scores ``[len(user_codes), items]`` (float32) of users given by code; an unknown
        user (code 0) has no interactions and scores 0 everywhere."""
        codes = np.asarray(user_codes, dtype=np.int64)
        rows = self.matrix[np.clip(codes - 1, 0, None)]
        scores = np.asarray(rows @ self.weights, dtype=np.float32)
        scores[codes <= 0] = 0.0
        return scores

    def fold_in_scores(self, positions: np.ndarray) -> np.ndarray:
        """Scores ``[items]`` of a new user who picked the items at ``positions`` (item
        codes less one)."""
        picked = np.unique(np.asarray(positions, dtype=np.int64))
        return self.weights[picked].sum(axis=0, dtype=np.float64).astype(np.float32)

    def similarity(self, position: int) -> np.ndarray:
        """How much picking the item at ``position`` raises every item's score: its row
        of ``B`` (0 for itself)."""
        return self.weights[position].astype(np.float64)
