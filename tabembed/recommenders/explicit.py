"""EmbeddingRecommender: rating prediction, top-k lists and similar items from ratings."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted

from tabembed import defaults, persistence
from tabembed._validation import as_frame, check_rows, check_sample_weight, require_target
from tabembed.batches import EVALUATION_BATCH_SIZE, row_batches
from tabembed.estimators.base import fit_events
from tabembed.estimators.fit_data import is_stream
from tabembed.estimators.parameters import (
    RANGE,
    Options,
    accepts_retired_parameters,
    store_parameters,
)
from tabembed.metrics import task_metrics
from tabembed.models import loss_for_task
from tabembed.ranking_metrics import top_k
from tabembed.recommenders import hybrid
from tabembed.recommenders.base import (
    RECOMMENDER_CONSTRAINTS,
    EmbeddingPenalty,
    Recommender,
    flatten,
)
from tabembed.recommenders.implicit import ImplicitRecommender
from tabembed.recommenders.interaction_data import (
    Interactions,
    check_ratings,
    encode,
    frame_holdout,
    scan_frame,
    scan_parquet,
)
from tabembed.recommenders.item_item import ItemItem
from tabembed.recommenders.scoring import check_k
from tabembed.training.run import train
from tabembed.training.seeding import isolated_random_state

__all__ = ["EmbeddingRecommender"]

_D = defaults.RECOMMENDER_DEFAULTS


def _strength(value) -> float:
    """A loaded item-item model's lambda, checked."""
    if isinstance(value, bool) or not (isinstance(value, int | float) and value > 0):
        raise persistence.DamagedFileError(
            f"the item-item model's strength must be a positive number, got {value!r}")
    return float(value)


@persistence.persistable
class EmbeddingRecommender(RegressorMixin, Recommender):
    """Collaborative filtering with entity embeddings (dot-bias or neural CF) from ratings.

    ``fit(X, y)`` takes a user column, an item column and optional side-feature
    columns (see ``user_features``), and the ratings; or Parquet to stream
    (``fit("ratings/", y="rating")``). ``predict`` returns ratings; unknown
    users or items get the prior (the global mean plus the known side's bias).

    Parameters
    ----------
    %(recommender_parameters)s
        ``"auto"`` here: in ``recommend`` 25 and 20 for ``ranking="rating"``
        (the support a tenth of the most-rated item's count, if smaller), none
        for the hybrid.
    y_range : (low, high), "auto" or None
        ``"auto"``: from a quarter of the rating span below the minimum to an
        eighth above the maximum ((0, 5.5) for 1-5 stars, as fastai).
    ranking : {"item_item", "blend", "hybrid", "rating"} or "auto"
        What :meth:`recommend` ranks by (:mod:`tabembed.recommenders.hybrid`).
        ``"rating"``: the predicted rating (with ``ranking_shrinkage`` and
        ``min_support``). ``"item_item"``: ``fit`` also solves EASE, the
        closed-form item-item model, on the same (user, item) rows, which
        says *which* items a user picks, and again on the ratings in the top
        quarter of the scale (which they liked); items are ranked by the two scores plus the
        predicted rating, each standardised per user; ``similar_items`` uses
        its item-item weights. It costs one inversion of the items x items
        matrix (cubic in the catalogue), so it is limited to
        ``defaults.ITEM_ITEM_MAX_ITEMS`` (20,000) items. ``"hybrid"``: ``fit``
        also trains an :class:`ImplicitRecommender` (sampled softmax) on the
        same rows, and items are ranked by its score plus the predicted
        rating; ``similar_items`` uses its item vectors. ``"blend"``: all
        three (the best lists on random splits, at the ranker's fit time).
        ``predict`` is the same either way. ``"auto"``: ``"item_item"`` up to
        20,000 items, ``"hybrid"`` above.
    %(loop_parameters)s
        ``batch_size="auto"``, ``weight_decay="auto"`` and ``embedding_l2="auto"``
        are the values measured best per model (``tabembed.defaults.RECOMMENDER_AUTO``).

    Attributes
    ----------
    user_embeddings_, item_embeddings_ : DataFrame
        Learned factors indexed by the original ids.
    ranker_ : ImplicitRecommender or None
        The implicit model of ``ranking="hybrid"`` or ``"blend"`` (else None).
    item_item_, liked_item_item_ : ItemItem or None
        EASE on every rating, and on the liked ones (the top quarter of the
        rating scale), of
        ``ranking="item_item"`` or ``"blend"`` (else None).
    ranking_ : str
        The ranking fitted (``"auto"`` resolved).
    user_features_, item_features_, context_features_ : list
        The side columns' roles.
    bag_columns_ : list
        The multi-valued side-feature columns; ``bag_vocabulary_`` their values.
    scorer_ : GridScorer
        Scores every item for users by predicted rating.
    """

    _parameter_constraints: ClassVar[dict] = {
        **RECOMMENDER_CONSTRAINTS,
        "y_range": [Options(("auto", None)), RANGE],
        "ranking": [Options(("auto", *hybrid.RANKINGS))],
    }

    @accepts_retired_parameters
    def __init__(
        self,
        *,
        user_column="user",
        item_column="item",
        model="dot",
        n_factors=defaults.FACTORS,
        hidden=defaults.NEURAL_HIDDEN,
        dropout=defaults.NEURAL_DROPOUT,
        y_range="auto",
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        averaging=_D.averaging,
        weight_decay=_D.weight_decay,
        embedding_l2="auto",
        multi_valued="auto",
        user_features=None,
        item_features=None,
        ranking="auto",
        ranking_shrinkage="auto",
        min_support="auto",
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        store_parameters(self, locals())

    def _auto_values(self) -> dict:
        return defaults.RECOMMENDER_AUTO[self.model]

    @property
    def ranking_(self) -> str:
        """The fitted ranking, read from the parts fitted (so files of any release agree)."""
        check_is_fitted(self, "learner_")
        if getattr(self, "item_item_", None) is not None:
            return "blend" if self.ranker_ is not None else "item_item"
        return "hybrid" if self.ranker_ is not None else "rating"

    def _ranking_auto(self) -> tuple[float, int]:
        return defaults.RANKING_AUTO[self.ranking_]

    # ------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None, *, eval_set=None, callbacks=None):
        """Learn user, item and side-feature embeddings from ratings ``y``.

        Parameters
        ----------
        X : DataFrame, or Parquet to stream
            The user and item columns, and optional side-feature columns. Or a
            Parquet file, folder, URI, list of files or ``pyarrow.dataset.Dataset``
            holding them and the ratings, streamed in bounded memory: one pass
            (a row group at a time) fits the vocabularies, the side features'
            roles and tables, the bags and the rating range; training streams
            row groups (each process its own under torchrun), and
            ``early_stopping`` holds rows out by a hash of their position.
            Memory grows with users and items, and with the rows by 8 bytes
            each (their (user, item) pair, which ``recommend(exclude_seen=True)``
            and the hybrid ranking's popularity-sampled negatives need).
        y : array-like, or str with Parquet
            Ratings; with Parquet, the name of the rating column.
        sample_weight : array-like of shape (n_samples,), optional
            Per-rating weights of the training loss and validation scores.
        eval_set : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Ratings scored after every epoch (loss, RMSE and MAE in ``history_``),
            and watched by early stopping instead of a random ``validation_fraction``.
        callbacks : list of Callback, optional
            Run in the rating model's training loop (not the hybrid ranker's); see
            ``EmbeddingMLPClassifier.fit``.
        """
        with fit_events(self, callbacks) as callbacks:
            return self._fit(X, y, sample_weight, eval_set, callbacks)

    def _fit(self, X, y, sample_weight, eval_set, callbacks):
        seed = self._begin_fit()
        config = self._training_config(seed, self._auto_values())
        seeds = config.seeds
        held = None
        if is_stream(X):
            if not isinstance(y, str):
                raise TypeError(f"to fit from {type(X).__name__} data, name its rating "
                                f"column: fit(source, y='rating'); got y of type "
                                f"{type(y).__name__}")
            if sample_weight is not None or eval_set is not None:
                raise ValueError("sample_weight and eval_set need a DataFrame; a Parquet "
                                 "stream takes the rating column's name only (use "
                                 "early_stopping=True to hold rows out of the stream)")
            if config.early_stopping:
                from tabembed.streaming import ValidationSplit

                held = ValidationSplit(config.validation_fraction, seed=seeds.split)
            data = scan_parquet(X, user_column=self.user_column, item_column=self.item_column,
                                target=y, multi_valued=self.multi_valued, split=held,
                                **self._roles())
            valid = None
        else:
            require_target(self, y)
            frame = self._frame(X)
            ratings = check_ratings(self._one_column(y, len(frame)), "y")
            weights = None if sample_weight is None else check_sample_weight(sample_weight,
                                                                             len(frame))
            if weights is not None and np.all(weights == weights[0]):
                weights = None      # equal weights change nothing
            if eval_set is None and config.early_stopping:
                held = frame_holdout(len(frame), config.validation_fraction, seeds.split)
            data = scan_frame(frame, user_column=self.user_column, item_column=self.item_column,
                              multi_valued=self.multi_valued, ratings=ratings,
                              weights=weights, held=held, **self._roles())
            valid = None if eval_set is None else self._eval_data(eval_set, data)
        n_users, n_items = (len(data.preprocessor.categories_[c])
                            for c in (self.user_column, self.item_column))
        ranking = hybrid.resolve(self.ranking, n_items)
        rows = data.rows(held, with_ratings=True, valid=valid)
        fitted = {**self._data_state(data),
                  **self._train_rating_model(data, rows, config, callbacks)}
        fitted["ranker_"] = fitted["item_item_"] = None
        if ranking in ("hybrid", "blend"):
            fitted["ranker_"] = hybrid.fit_ranker(
                data, user_column=self.user_column, item_column=self.item_column,
                device=self.device, seed=seeds.split + 1, verbose=self.verbose)
        fitted["liked_item_item_"] = None
        if ranking in ("item_item", "blend"):
            fitted["item_item_"] = hybrid.fit_item_item(
                data.seen_users, data.seen_items, n_users=n_users, n_items=n_items)
            if defaults.ITEM_ITEM_LIKED_WEIGHT:
                fitted["liked_item_item_"] = hybrid.fit_item_item(
                    *hybrid.liked_pairs(data, user_column=self.user_column,
                                        item_column=self.item_column),
                    n_users=n_users, n_items=n_items)
        self._adopt(fitted)
        return self

    def _train_rating_model(self, data: Interactions, rows, config, callbacks=()) -> dict:
        """A fresh rating model trained on ``rows``: the fitted attributes it gives."""
        train_data, valid = rows.sources(config.batch_size, seed=config.seeds.shuffle,
                                         valid_batch_size=EVALUATION_BATCH_SIZE)
        model_kwargs = self._model_kwargs(data, data.rating_mean,
                                          self._y_range(data.rating_range))
        strength = self._strength()
        with isolated_random_state():
            torch.manual_seed(config.seeds.init)
            model = self._new_model(model_kwargs, config.device, data.bags)
            result = train(config, model, loss_for_task("regression"), train_data, valid,
                           output_activation=flatten, metrics=task_metrics("regression", flatten),
                           penalty=EmbeddingPenalty(strength) if strength else None,
                           callbacks=callbacks)
        return {"model_": model, "model_kwargs_": model_kwargs,
                "n_train_rows_": rows.n_train_rows, **self._result_state(config, result)}

    def _eval_data(self, eval_set, data: Interactions):
        """Validation batches from ``(X_val, y_val[, sample_weight_val])``."""
        if isinstance(eval_set, list) and len(eval_set) == 1:
            eval_set = eval_set[0]
        if not (isinstance(eval_set, tuple | list) and len(eval_set) in (2, 3)):
            raise ValueError("eval_set must be (X_val, y_val) or (X_val, y_val, "
                             f"sample_weight_val), got {type(eval_set).__name__}")
        X_val, y_val, *weight = eval_set
        frame = data.bags.canonical(as_frame(X_val))
        check_rows(frame)
        ratings = check_ratings(self._one_column(y_val, len(frame)), "y_val")
        weights = check_sample_weight(weight[0], len(frame)) if weight else None
        codes, continuous = encode(data.preprocessor, data.bags, frame)
        tensors = (codes, continuous, torch.tensor(ratings, dtype=torch.float32))
        return row_batches(tensors, np.arange(len(frame)), weights)

    def _y_range(self, rating_range):
        if self.y_range is None:
            return None
        if isinstance(self.y_range, str):
            low, high = rating_range
            span = (high - low) or 1.0
            return low - span / 4, high + span / 8
        return tuple(self.y_range)

    # ------------------------------------------------------------ predicting

    def predict(self, X) -> np.ndarray:
        """Predicted ratings; unknown users or items get the prior (global and known biases)."""
        return self._predict_values(X)

    def _scores(self, user_codes: np.ndarray) -> np.ndarray:
        """The predicted rating, each item's bias shrunk by its support (and, with the
        blended rankings, the item-item model's or the ranker's score added)."""
        scores = self.scorer_.scores(user_codes, self._ranking_weights()[0])
        if getattr(self, "item_item_", None) is not None:
            return hybrid.blend(scores, self.item_item_, self.liked_item_item_, self.ranker_,
                                user_codes)
        if self.ranker_ is not None:
            scores = hybrid.combine(scores, self.ranker_, user_codes)
        return scores

    def _fold_in_scores(self, positions: np.ndarray, ratings) -> np.ndarray:
        scores = self._fold_in(self.scorer_, positions, ratings, implicit=False,
                               strength=self._strength(), keep=self._ranking_weights()[0])
        if getattr(self, "item_item_", None) is not None:
            # Without ratings every given item counts as liked.
            liked = positions if ratings is None else positions[
                np.asarray(ratings, dtype=np.float64)
                >= hybrid.liked_threshold(self.rating_range_)]
            return hybrid.blend_fold_in(scores, self.item_item_, self.liked_item_item_,
                                        self.ranker_, positions, liked)
        if self.ranker_ is not None:
            scores = hybrid.ranker_fold_in_scores(self.ranker_, positions) + \
                defaults.RANKING_RATING_WEIGHT * scores
        return scores

    def similar_items(self, item, k: int = 10, *, item_features=None,
                      index: str = "auto") -> pd.DataFrame:
        """The ``k`` items most similar to ``item``.

        With the item-item ranking (``ranking_`` ``"item_item"`` or ``"blend"``)
        and a training item: EASE's weights, how much picking ``item`` raises
        each other item's score (its row of the item-item matrix; items below
        ``min_support`` left out). Otherwise, and for a new item described by
        ``item_features``, or with ``index="ann"``, the cosine of item vectors
        as in :meth:`Recommender.similar_items
        <tabembed.recommenders.base.Recommender.similar_items>` (``index`` as
        there; the item-item matrix exists only up to 20,000 items, where
        ``"auto"`` is exact).
        """
        check_is_fitted(self, "learner_")
        item_item = getattr(self, "item_item_", None)
        item_ids = pd.Index(self.preprocessor_.categories_[self.item_column],
                            name=self.item_column)
        position = item_ids.get_indexer([item])[0]
        if item_item is None or position < 0 or index == "ann":
            return super().similar_items(item, k, item_features=item_features, index=index)
        _, eligible = self._ranking_weights(similarity=True)
        excluded = np.union1d(np.flatnonzero(~eligible), [position])
        best, values = top_k(item_item.similarity(position)[None, :], check_k(k),
                             exclude_columns=excluded)
        keep = best[0] >= 0
        return pd.DataFrame({self.item_column: item_ids[best[0][keep]],
                             "similarity": values[0][keep]})

    def _similarity_scorer(self):
        return self.ranker_.scorer_ if self.ranker_ is not None else self.scorer_

    # ------------------------------------------------------------ saving and loading

    def _extra_state(self, meta: dict, tensors: dict) -> None:
        super()._extra_state(meta, tensors)
        if self.ranker_ is not None:
            meta["ranker"], ranker_tensors = self.ranker_.to_state()
            tensors.update({f"ranker.{k}": v for k, v in ranker_tensors.items()})
        if getattr(self, "item_item_", None) is not None:
            # Only lambda and the liked pairs: the weights are rebuilt from the stored pairs
            # (they are O(items^2) floats).
            meta["item_item"] = {"strength": self.item_item_.strength}
            liked = self.liked_item_item_
            if liked is not None:
                meta["item_item"]["liked_strength"] = liked.strength
                users, items = liked.pairs()
                tensors["item_item.liked_users"] = torch.from_numpy(users)
                tensors["item_item.liked_items"] = torch.from_numpy(items)

    def _restore_extra(self, meta: dict, tensors: dict, *, snapshots, device) -> None:
        super()._restore_extra(meta, tensors, snapshots=snapshots, device=device)
        self.ranker_ = None
        if "ranker" in meta:
            self.ranker_ = ImplicitRecommender.from_state(
                meta["ranker"], {k[len("ranker."):]: v for k, v in tensors.items()
                                 if k.startswith("ranker.")}, device=device)
        self.item_item_ = self.liked_item_item_ = None
        if "item_item" in meta:
            stored = meta["item_item"]
            sizes = (len(self.preprocessor_.categories_[self.user_column]),
                     len(self.preprocessor_.categories_[self.item_column]))
            self.item_item_ = ItemItem(self.seen_users_, self.seen_items_, *sizes,
                                       _strength(stored.get("strength")))
            if "liked_strength" in stored:
                users = persistence.check_ids("item_item.liked_users",
                                              tensors.get("item_item.liked_users"),
                                              sizes[0] + 1)
                items = persistence.check_ids("item_item.liked_items",
                                              tensors.get("item_item.liked_items"),
                                              sizes[1] + 1)
                if len(users) != len(items):
                    raise persistence.DamagedFileError(
                        "item_item.liked_users and liked_items differ in length")
                self.liked_item_item_ = ItemItem(users, items, *sizes,
                                                 _strength(stored["liked_strength"]))

