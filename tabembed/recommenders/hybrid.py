"""The hybrid ranking of explicit ratings: which items a user would pick, and like.

Ranked by predicted rating alone, items with one or two high ratings crowd
the lists. The hybrid composes two fitted models: an
:class:`~tabembed.recommenders.implicit.ImplicitRecommender` trained on the
same (user, item) rows learns *which* items a user rates, and the rating
model says whether they would like them. An item's score is the ranker's plus
``RANKING_RATING_WEIGHT`` times the predicted rating.
"""

from __future__ import annotations

import numpy as np

from tabembed import defaults
from tabembed.recommenders.fold_in import fold_in_logits
from tabembed.recommenders.implicit import ImplicitRecommender
from tabembed.recommenders.interaction_data import Interactions

__all__ = ["combine", "fit_ranker", "ranker_fold_in_scores"]


def fit_ranker(data: Interactions, *, user_column, item_column, device, seed: int,
               verbose: int) -> ImplicitRecommender:
    """The implicit model of a hybrid, trained on the scan the rating model used; its own
    seed (drawn after the rating model's), so ``predict`` never depends on it."""
    ranker = ImplicitRecommender(user_column=user_column, item_column=item_column,
                                 device=device, multi_valued=list(data.bags.columns),
                                 random_state=seed, verbose=verbose)
    return ranker.fit(data)


def combine(rating_scores: np.ndarray, ranker: ImplicitRecommender,
            user_codes: np.ndarray) -> np.ndarray:
    """The hybrid's scores, computed in place in ``rating_scores`` (the grids are large)."""
    rating_scores *= defaults.RANKING_RATING_WEIGHT
    rating_scores += ranker.scorer_.scores(user_codes)
    return rating_scores


def ranker_fold_in_scores(ranker: ImplicitRecommender, positions: np.ndarray) -> np.ndarray:
    """The ranker's scores of a new user who picked the items at ``positions``."""
    logits = fold_in_logits(ranker.scorer_, positions, implicit=True,
                            strength=ranker.embedding_l2_)
    return logits.cpu().numpy().astype(np.float64)
