"""The rankings of explicit ratings that blend models: which items a user would pick, and like.

Ranked by predicted rating alone, items with one or two high ratings crowd
the lists. These rankings add a model of *which* items a user picks to the
rating model, which says whether they would like them:

- ``"item_item"`` (the default up to ``defaults.ITEM_ITEM_MAX_ITEMS`` items):
  EASE's item-item scores (:mod:`~tabembed.recommenders.item_item`) from every
  rating, plus EASE's from the ratings in the top quarter of the rating scale
  (what users liked, 4 and 5 stars of 1-5; ``ITEM_ITEM_LIKED_WEIGHT``), plus
  ``ITEM_ITEM_RATING_WEIGHT`` x the predicted rating, each standardised per user over the catalogue;
- ``"blend"``: the same plus ``ITEM_ITEM_RANKER_WEIGHT`` x an
  :class:`~tabembed.recommenders.implicit.ImplicitRecommender`'s score,
  standardised (a little better on random splits, 15x the fit time);
- ``"hybrid"`` (the default above the size cap): the implicit ranker's score
  plus ``RANKING_RATING_WEIGHT`` x the predicted rating, unstandardised.
"""

from __future__ import annotations

import numpy as np
import torch

from tabembed import defaults
from tabembed.recommenders.fold_in import fold_in_logits
from tabembed.recommenders.implicit import ImplicitRecommender
from tabembed.recommenders.interaction_data import Interactions
from tabembed.recommenders.item_item import ItemItem, standardise

__all__ = ["blend", "blend_fold_in", "combine", "fit_item_item", "fit_ranker", "liked_pairs",
           "liked_threshold",
           "ranker_fold_in_scores", "resolve"]

RANKINGS = ("item_item", "blend", "hybrid", "rating")


def resolve(ranking: str, n_items: int) -> str:
    """The ranking a fit builds: ``"auto"`` is ``defaults.RANKING`` up to
    ``ITEM_ITEM_MAX_ITEMS`` items, ``defaults.RANKING_FALLBACK`` above; the item-item
    rankings asked for by name on a larger catalogue are an error (their memory)."""
    uses_item_item = ("item_item", "blend")
    if ranking == "auto":
        ranking = defaults.RANKING
        if ranking in uses_item_item and n_items > defaults.ITEM_ITEM_MAX_ITEMS:
            ranking = defaults.RANKING_FALLBACK
    elif ranking in uses_item_item and n_items > defaults.ITEM_ITEM_MAX_ITEMS:
        gigabytes = 4 * n_items ** 2 / 1e9
        raise ValueError(
            f"ranking={ranking!r} builds an item-item matrix of {n_items:,} x {n_items:,} "
            f"({gigabytes:.1f} GB per float32 copy, cubic time); it is limited to "
            f"{defaults.ITEM_ITEM_MAX_ITEMS:,} items. Use ranking='hybrid' (or 'auto', which "
            "picks it for large catalogues)")
    return ranking


def fit_item_item(user_codes: np.ndarray, item_codes: np.ndarray, *, n_users: int,
                  n_items: int) -> ItemItem | None:
    """EASE on (user, item) code pairs, its weights computed now (the fit's cost); None
    without pairs."""
    if not len(user_codes):
        return None
    model = ItemItem(user_codes, item_codes, n_users, n_items, defaults.ITEM_ITEM_STRENGTH)
    model.weights       # noqa: B018 - the inversion belongs to fit, not to the first ranking
    return model


def liked_threshold(rating_range) -> float:
    """The lowest liked rating: ``ITEM_ITEM_LIKED_FROM`` of the way up the rating scale."""
    low, high = rating_range
    return low + defaults.ITEM_ITEM_LIKED_FROM * (high - low)


def liked_pairs(data: Interactions, *, user_column, item_column
                ) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) codes of the liked ratings (:func:`liked_threshold`), from memory
    or, for a stream, in one more pass over three columns."""
    preprocessor = data.preprocessor
    threshold = liked_threshold(data.rating_range)
    if not data.streamed:
        keep = torch.from_numpy(np.asarray(data.ratings, dtype=np.float64) >= threshold)
        columns = [preprocessor.cat_columns_.index(c) for c in (user_column, item_column)]
        picked = data.codes[keep][:, columns].numpy().astype(np.int64)
        return picked[:, 0], picked[:, 1]
    from tabembed.streaming.interactions import frames

    users, items = [], []
    for frame, _, _ in frames(data.row_groups, [user_column, item_column, data.target]):
        liked = frame[frame[data.target].to_numpy(dtype=np.float64) >= threshold]
        users.append(preprocessor.encode(user_column, liked[user_column]).astype(np.int64))
        items.append(preprocessor.encode(item_column, liked[item_column]).astype(np.int64))
    return (np.concatenate(users) if users else np.zeros(0, np.int64),
            np.concatenate(items) if items else np.zeros(0, np.int64))


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


def blend(rating_scores: np.ndarray, item_item: ItemItem, liked: ItemItem | None,
          ranker: ImplicitRecommender | None, user_codes: np.ndarray) -> np.ndarray:
    """``"item_item"`` (and ``"blend"``, with a ranker): standardised scores, added."""
    scores = standardise(item_item.scores(user_codes))
    if liked is not None:
        liked_scores = standardise(liked.scores(user_codes))
        liked_scores *= defaults.ITEM_ITEM_LIKED_WEIGHT
        scores += liked_scores
    rating_scores = standardise(rating_scores)
    rating_scores *= defaults.ITEM_ITEM_RATING_WEIGHT
    scores += rating_scores
    if ranker is not None:
        ranked = standardise(ranker.scorer_.scores(user_codes))
        ranked *= defaults.ITEM_ITEM_RANKER_WEIGHT
        scores += ranked
    return scores


def blend_fold_in(rating_scores: np.ndarray, item_item: ItemItem, liked: ItemItem | None,
                  ranker: ImplicitRecommender | None, positions: np.ndarray,
                  liked_positions: np.ndarray) -> np.ndarray:
    """:func:`blend` for a new user who picked the items at ``positions`` and liked those
    at ``liked_positions``."""
    scores = standardise(item_item.fold_in_scores(positions).astype(np.float64))
    if liked is not None and len(liked_positions):
        scores += defaults.ITEM_ITEM_LIKED_WEIGHT * standardise(
            liked.fold_in_scores(liked_positions).astype(np.float64))
    scores += defaults.ITEM_ITEM_RATING_WEIGHT * standardise(
        np.array(rating_scores, dtype=np.float64))
    if ranker is not None:
        scores += defaults.ITEM_ITEM_RANKER_WEIGHT * standardise(
            ranker_fold_in_scores(ranker, positions))
    return scores


def ranker_fold_in_scores(ranker: ImplicitRecommender, positions: np.ndarray) -> np.ndarray:
    """The ranker's scores of a new user who picked the items at ``positions``."""
    logits = fold_in_logits(ranker.scorer_, positions, implicit=True,
                            strength=ranker.embedding_l2_)
    return logits.cpu().numpy().astype(np.float64)
