"""ImplicitRecommender: collaborative filtering from interactions without ratings."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from tabembed import defaults, persistence
from tabembed._validation import check_sample_weight, frame_for_prediction
from tabembed.batches import TensorBatches
from tabembed.estimators.base import fit_events
from tabembed.estimators.fit_data import is_stream
from tabembed.estimators.parameters import (
    POSITIVE_INT,
    Options,
    accepts_retired_parameters,
    store_parameters,
)
from tabembed.models import loss_for_task
from tabembed.models.implicit_losses import IMPLICIT_LOSSES, CandidateScores, implicit_loss
from tabembed.ranking_metrics import evaluate
from tabembed.recommenders.base import (
    RECOMMENDER_CONSTRAINTS,
    EmbeddingPenalty,
    Recommender,
    flatten,
)
from tabembed.recommenders.interaction_data import (
    Interactions,
    check_ratings,
    encode,
    scan_frame,
    scan_parquet,
)
from tabembed.recommenders.scoring import grid_tables, side_masks
from tabembed.sampling import NegativeSampling, sampling_probabilities
from tabembed.training.run import inference_learner, train
from tabembed.training.seeding import isolated_random_state

__all__ = ["ImplicitRecommender"]

_I = defaults.IMPLICIT_DEFAULTS


@persistence.persistable
class ImplicitRecommender(Recommender):
    """Collaborative filtering from implicit feedback: (user, item) interactions, no ratings.

    Each row of ``X`` is one interaction (a click, a play, a rating above a
    threshold). The model (dot-bias or neural CF, with side features) learns
    to score each interaction above items the user did not pick, drawn at
    random (:class:`~tabembed.sampling.NegativeSampling`), through the same
    training loop, schedules and averaging. ``recommend``, ``recommend_all``,
    ``similar_items``, the embeddings and ``save``/``tabembed.load`` work as for
    :class:`EmbeddingRecommender`; ``predict`` returns the score of each pair
    (a logit: higher means more likely; not a rating) and ``score`` is NDCG@10.

    Parameters
    ----------
    loss : {"softmax", "bpr"} or "auto"
        ``"softmax"``: the sampled softmax, each positive against
        ``n_negatives`` items drawn once per batch and shared by its rows;
        ``"bpr"``: Bayesian personalised ranking, ``n_negatives`` draws per
        row. ``"auto"``: the softmax for ``model="dot"``, BPR for
        ``model="neural"``, whose MLP must score every negative of every row.
    negatives : {"uniform", "popularity"} or "auto"
        How negatives are drawn: every item alike, or in proportion to
        ``count ** 0.75``. With the softmax, popularity draws are corrected by
        subtracting ``log q`` from the scores (Yi et al., 2019). ``"auto"``:
        popularity for the softmax, uniform for BPR.
    n_negatives : int or "auto"
        ``"auto"``: ``tabembed.defaults.IMPLICIT_AUTO`` for the loss.
    %(recommender_parameters)s
        ``"auto"`` here: no shrinkage and no required support in
        ``recommend`` (a ranking loss already scores rarely seen items low).
    %(loop_parameters)s

    Attributes
    ----------
    user_embeddings_, item_embeddings_ : DataFrame
        Learned factors indexed by the original ids.
    user_features_, item_features_, context_features_ : list
        The side columns' roles.
    bag_columns_ : list
        The multi-valued side-feature columns; ``bag_vocabulary_`` their values.
    scorer_ : GridScorer
        Scores every item for users (what ``recommend`` ranks by).
    """

    _parameter_constraints: ClassVar[dict] = {
        **RECOMMENDER_CONSTRAINTS,
        "loss": [Options(("auto", *IMPLICIT_LOSSES))],
        "negatives": [Options(("auto", "uniform", "popularity"))],
        "n_negatives": [POSITIVE_INT, Options(("auto",))],
    }

    @accepts_retired_parameters
    def __init__(
        self,
        *,
        user_column="user",
        item_column="item",
        model="dot",
        loss="auto",
        negatives="auto",
        n_negatives="auto",
        n_factors=defaults.FACTORS,
        hidden=defaults.NEURAL_HIDDEN,
        dropout=defaults.NEURAL_DROPOUT,
        epochs=_I.epochs,
        batch_size=_I.batch_size,
        lr=_I.lr,
        schedule=_I.schedule,
        averaging=_I.averaging,
        weight_decay=_I.weight_decay,
        embedding_l2="auto",
        multi_valued="auto",
        user_features=None,
        item_features=None,
        ranking_shrinkage="auto",
        min_support="auto",
        early_stopping=False,
        validation_fraction=_I.validation_fraction,
        patience=_I.patience,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        store_parameters(self, locals())

    # ------------------------------------------------------------ options

    def _loss_name(self) -> str:
        """The loss: ``"auto"`` is the softmax for dot-bias, BPR for neural CF."""
        if self.loss == "auto":
            return "bpr" if self.model == "neural" else "softmax"
        return self.loss

    def _auto_values(self) -> dict:
        return {"batch_size": _I.batch_size, "weight_decay": _I.weight_decay,
                **defaults.IMPLICIT_AUTO[self._loss_name()]}

    def _ranking_auto(self) -> tuple[float, int]:
        return 0, 0

    # ------------------------------------------------------------ fitting

    def fit(self, X, y=None, sample_weight=None, *, eval_set=None, callbacks=None):
        """Learn embeddings that rank each user's interactions above other items.

        Parameters
        ----------
        X : DataFrame, Parquet to stream, or Interactions
            One row per interaction: the user and item columns, and optional
            side-feature columns (user, item and multi-valued features as in
            :class:`EmbeddingRecommender`). Or a Parquet file, folder, URI,
            list of files or ``pyarrow.dataset.Dataset`` of such rows, every
            row an interaction, streamed in bounded memory: ``fit("clicks/")``.
            Or the :class:`~tabembed.recommenders.Interactions` another
            recommender scanned (the hybrid ranking shares its scan this way).
        y : array-like, optional
            When given, only rows with ``y > 0`` are interactions (0/1 click
            labels; threshold ratings yourself, e.g. ``X[ratings >= 4]``).
        sample_weight : array-like, optional
            Per-interaction weights of the loss (a confidence, a play count).
        eval_set : DataFrame or (X_val, y_val), optional
            Held-out interactions whose sampled loss is reported each epoch
            (and watched by early stopping).
        callbacks : list of Callback, optional
            Run in the training loop; see ``EmbeddingMLPClassifier.fit``.
        """
        with fit_events(self, callbacks) as callbacks:
            return self._fit(X, y, sample_weight, eval_set, callbacks)

    def _fit(self, X, y, sample_weight, eval_set, callbacks):
        seed = self._begin_fit()
        config = self._training_config(seed, self._auto_values())
        if isinstance(X, Interactions):
            data = X
        elif is_stream(X):
            if y is not None:
                raise ValueError(
                    f"fit(source, y={y!r}): from a Parquet stream every row is an "
                    "interaction, and rows cannot be dropped from a stream's batches; write "
                    "the interactions alone to Parquet first (e.g. "
                    "pyarrow.dataset.write_dataset(dataset.filter(pyarrow.compute.field(y) "
                    "> 0), ...)) and fit(that) without y")
            if sample_weight is not None or eval_set is not None:
                raise ValueError("sample_weight and eval_set need a DataFrame; a Parquet "
                                 "stream takes no options (use early_stopping=True to hold "
                                 "rows out of the stream)")
            data = scan_parquet(X, user_column=self.user_column, item_column=self.item_column,
                                multi_valued=self.multi_valued, **self._roles())
        else:
            frame, weights = self._interactions(X, y, sample_weight)
            data = scan_frame(frame, user_column=self.user_column,
                              item_column=self.item_column, multi_valued=self.multi_valued,
                              weights=weights, **self._roles())
        held = None
        if config.early_stopping and eval_set is None:
            held = data.holdout(config.validation_fraction, config.seeds.split)
        rows = data.rows(held, with_ratings=False, shard_validation=False)
        n_items = len(data.preprocessor.categories_[self.item_column])
        options = self._auto_values()
        negatives = options["negatives"] if self.negatives == "auto" else self.negatives
        probabilities = sampling_probabilities(data.seen_items, n_items, kind=negatives)
        sampling = dict(n_items=n_items, probabilities=probabilities,
                        n_negatives=int(options["n_negatives"] if self.n_negatives == "auto"
                                        else self.n_negatives),
                        shared=self._loss_name() == "softmax")
        positives, valid = rows.sources(config.batch_size, seed=config.seeds.shuffle,
                                        valid_batch_size=config.batch_size)
        if eval_set is not None:
            valid = self._eval_data(eval_set, data, config.batch_size)
        if valid is not None:
            valid = NegativeSampling(valid, random_state=config.seeds.split, fixed=True,
                                     **sampling)
        train_data = NegativeSampling(positives, random_state=config.seeds.shuffle, **sampling)
        self._adopt({**self._data_state(data),
                     **self._train_ranking(data, config, train_data, valid, probabilities,
                                           callbacks),
                     "n_train_rows_": rows.n_train_rows})
        return self

    def _interactions(self, X, y, sample_weight) -> tuple[pd.DataFrame, np.ndarray | None]:
        """The rows of ``X`` that are interactions (``y > 0`` when ``y`` is given)."""
        frame = self._frame(X)
        weights = None if sample_weight is None else check_sample_weight(sample_weight,
                                                                         len(frame))
        if y is not None:
            keep = check_ratings(self._one_column(y, len(frame)), "y") > 0
            if not keep.any():
                raise ValueError(f"y has no positive value among its {len(keep)} rows, so "
                                 "there is no interaction to learn from: rows with y > 0 "
                                 "are the interactions (0/1 labels, counts)")
            frame = frame[keep]
            weights = None if weights is None else weights[keep]
        if weights is not None and np.all(weights == weights[0]):
            weights = None
        return frame, weights

    def _eval_data(self, eval_set, data: Interactions, batch_size: int) -> TensorBatches:
        """Held-out interactions (a frame or ``(X_val, y_val)``) as positives."""
        if isinstance(eval_set, list) and len(eval_set) == 1:
            eval_set = eval_set[0]
        if isinstance(eval_set, tuple | list):
            if len(eval_set) not in (1, 2):
                raise ValueError("eval_set must be X_val or (X_val, y_val)")
            eval_set = (eval_set[0], eval_set[1] if len(eval_set) == 2 else None)
        else:
            eval_set = (eval_set, None)
        frame, _ = self._interactions(*eval_set, None)
        codes, continuous = encode(data.preprocessor, data.bags, data.bags.canonical(frame))
        return TensorBatches((codes, continuous), batch_size=batch_size, has_target=False,
                             random_state=0)

    def _train_ranking(self, data: Interactions, config, train_data, valid,
                       probabilities, callbacks=()) -> dict:
        """A fresh model trained to rank positives above the sampled negatives."""
        loss = self._loss_name()
        log_q = None
        if probabilities is not None and loss == "softmax":
            log_q = torch.from_numpy(np.log(np.concatenate([[1.0], probabilities])))
        items, items_continuous = grid_tables(
            data.preprocessor, data.bags, data.sides, data.feature_names, self.user_column,
            self.item_column)[2:]
        item_columns, item_numeric = side_masks(data.preprocessor, data.bags, self.item_column,
                                                data.sides.item_features)
        # Item codes c -> their side's columns (row 0 zeros).
        item_codes = torch.cat([torch.zeros(1, items.shape[1], dtype=items.dtype), items])
        item_continuous = torch.cat([torch.zeros(1, items_continuous.shape[1],
                                                 dtype=items_continuous.dtype),
                                     items_continuous])
        model_kwargs = self._model_kwargs(data, 0.0, None)
        strength = self._strength()
        with isolated_random_state():
            torch.manual_seed(config.seeds.init)
            model = self._new_model(model_kwargs, config.device, data.bags)
            scorer = CandidateScores(model, item_codes, item_continuous, item_columns,
                                     item_numeric, log_q)
            result = train(config, scorer, implicit_loss(loss), train_data, valid,
                           penalty=EmbeddingPenalty(strength) if strength else None,
                           callbacks=callbacks)
        fitted = self._result_state(config, result)
        fitted.update({
            "model_": model, "model_kwargs_": model_kwargs,
            # The trained scorer wraps the model: predict with the model alone.
            "learner_": inference_learner(model, loss_for_task("regression"),
                                          output_activation=flatten, device=config.device,
                                          snapshots=_model_snapshots(result.learner)),
        })
        return fitted

    # ------------------------------------------------------------ predicting

    def predict(self, X) -> np.ndarray:
        """The score of each (user, item) row: a logit, higher is more likely (not a rating)."""
        return self._predict_values(X)

    def _scores(self, user_codes: np.ndarray) -> np.ndarray:
        return self.scorer_.scores(user_codes, self._ranking_weights()[0])

    def _fold_in_scores(self, positions: np.ndarray, ratings) -> np.ndarray:
        return self._fold_in(self.scorer_, positions, None, implicit=True,
                             strength=self._strength(), keep=self._ranking_weights()[0])

    @property
    def embedding_l2_(self) -> float:
        """The embedding penalty's strength used (``embedding_l2`` with "auto" resolved)."""
        check_is_fitted(self, "learner_")
        return self._strength()

    def score(self, X, y=None, sample_weight=None) -> float:
        """NDCG@10 of :meth:`recommend` for the users of ``X`` against their rows of ``X``
        (those with ``y > 0`` when ``y`` is given); training items excluded."""
        check_is_fitted(self, "learner_")
        frame, _ = self._interactions(frame_for_prediction(self, X), y, None)
        users = pd.unique(frame[self.user_column])
        lists = self.recommend(list(users), k=10)
        return evaluate(lists, frame, k=10, user_column=self.user_column,
                        item_column=self.item_column, metrics=("ndcg",))["ndcg@10"]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags


def _model_snapshots(learner) -> list[dict]:
    """An ensemble's snapshots of the wrapped model, as state dicts of the model alone."""
    predictor = learner.predictor
    if predictor is None or not predictor.snapshots:
        return []
    prefix = "model."
    return [{k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            for state in predictor.snapshot_states()]
