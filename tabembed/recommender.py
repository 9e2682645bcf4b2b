"""EmbeddingRecommender: rating prediction, top-k recommendations and similar items.

``fit(X, y)`` takes a user column, an item column and optional side-feature
columns, with ratings in ``y``. Side features are split automatically into
user features (constant per user), item features (constant per item) and
context features (neither); ``recommend`` needs no context features, since
it scores every item for one user from the stored user and item features.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_is_fitted

from tabembed import persistence
from tabembed._validation import (
    as_frame,
    check_finite_predictions,
    check_rows,
    check_sample_weight,
    frame_for_prediction,
    require_target,
    store_parameters,
)
from tabembed.config import (
    RECOMMENDER_AUTO,
    RECOMMENDER_DEFAULTS,
    Seeds,
    TrainingConfig,
    decode_lr,
    draw_seed,
    encode_lr,
    inference_learner,
    isolated_random_state,
    row_batches,
    train,
)
from tabembed.metrics import task_metrics
from tabembed.models import DotBias, NeuralCF, loss_for_task
from tabembed.models.collab import DEFAULT_FACTORS, DEFAULT_NEURAL_DROPOUT
from tabembed.preprocessing import TabularPreprocessor

_D = RECOMMENDER_DEFAULTS

__all__ = ["EmbeddingRecommender"]


class EmbeddingPenalty:
    """``strength * model.embedding_penalty(codes)``, for the Learner's ``penalty`` hook."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, model, inputs) -> torch.Tensor:
        return self.strength * model.embedding_penalty(*inputs)


def flatten(output: torch.Tensor) -> torch.Tensor:
    """Ratings ``[n]`` from the model's ``[n, 1]`` output."""
    return output.reshape(-1)


def _table_to_json(table: pd.DataFrame) -> dict:
    """A feature table (indexed by id) as JSON lists: column names of any type survive."""
    return {"index": persistence.json_safe(table.index.tolist()),
            "columns": [[persistence.json_safe(c), persistence.json_safe(
                table[c].astype(object).where(table[c].notna(), None).tolist())]
                for c in table.columns]}


def _table_from_json(state, index_name) -> pd.DataFrame:
    if isinstance(state, str):      # the first release's pandas "table" JSON
        return pd.read_json(io.StringIO(state), orient="table").set_index(index_name)
    table = pd.DataFrame({name: values for name, values in state["columns"]},
                         index=pd.Index(state["index"], name=index_name))
    return table.infer_objects()


def _check_k(k) -> int:
    if not (isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"k must be a positive integer (how many items to return), got {k!r}")
    return int(k)


def _ratings(y, n_rows: int) -> np.ndarray:
    ratings = np.asarray(y, dtype=np.float64)
    if ratings.ndim == 2 and ratings.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                      "flattened to (n_samples,)", DataConversionWarning, stacklevel=3)
    ratings = ratings.reshape(-1)
    if len(ratings) != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {len(ratings)}")
    if not np.isfinite(ratings).all():
        raise ValueError(f"y has {int((~np.isfinite(ratings)).sum())} missing or infinite "
                         "rating(s); drop them")
    if len(ratings) and np.abs(ratings).max() > _MAX_RATING:
        # Ratings train in float32 without scaling: their squared errors must stay finite.
        raise ValueError(f"y holds rating(s) as large as {np.abs(ratings).max():.3g}; ratings "
                         f"must be within +-{_MAX_RATING:g}: rescale y (divide it by a constant)")
    return ratings


_MAX_RATING = 1e15


@persistence.persistable
class EmbeddingRecommender(RegressorMixin, BaseEstimator):
    """Collaborative filtering with entity embeddings (dot-bias or neural CF).

    Parameters
    ----------
    user_column, item_column : str
        Names of the user and item columns of ``X``.
    model : {"dot", "neural"}
        :class:`~tabembed.models.DotBias` or :class:`~tabembed.models.NeuralCF`.
    n_factors : int
    hidden, dropout : MLP of the neural model.
    y_range : (low, high), "auto" or None
        ``"auto"``: from a quarter of the rating span below the minimum to an
        eighth above the maximum ((0, 5.5) for 1-5 stars, as fastai).
    batch_size, weight_decay, embedding_l2 : int, float or "auto"
        ``embedding_l2`` is an L2 penalty on the user and item factors and
        biases a batch uses (the classic matrix-factorisation regulariser);
        ``weight_decay`` is AdamW's decoupled decay of every weight. ``"auto"``
        uses the values measured best on a validation split of MovieLens 100K
        (bench/RESULTS.md; ``tabembed.config.RECOMMENDER_AUTO``): dot-bias 512,
        0 and 0.05 (validation RMSE 0.9129, against 0.9168 for the best
        decoupled decay alone), neural CF 256, 0.1 and 0.
    epochs, lr, schedule, cycle_len, cycle_mult, averaging, ema_decay,
    swa_start, swa_lr, early_stopping, validation_fraction, patience, device,
    random_state, verbose :
        As in :class:`~tabembed.estimators.EmbeddingMLPClassifier`.

    Attributes
    ----------
    user_embeddings_, item_embeddings_ : DataFrame
        Learned factors indexed by the original ids.
    """

    def __init__(
        self,
        *,
        user_column="user",
        item_column="item",
        model="dot",
        n_factors=DEFAULT_FACTORS,
        hidden=(100, 50),
        dropout=DEFAULT_NEURAL_DROPOUT,
        y_range="auto",
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        cycle_len=_D.cycle_len,
        cycle_mult=_D.cycle_mult,
        averaging=_D.averaging,
        ema_decay=_D.ema_decay,
        swa_start=_D.swa_start,
        swa_lr=_D.swa_lr,
        weight_decay=_D.weight_decay,
        embedding_l2="auto",
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        store_parameters(self, locals())

    # ------------------------------------------------------------ fitting

    def _roles(self, frame: pd.DataFrame) -> tuple[list, list]:
        side = [c for c in frame.columns if c not in (self.user_column, self.item_column)]
        cats = [c for c in side if not pd.api.types.is_numeric_dtype(frame[c])
                or pd.api.types.is_bool_dtype(frame[c])]
        conts = [c for c in side if c not in cats]
        return cats, conts

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Learn user, item and side-feature embeddings from ratings ``y``.

        Parameters
        ----------
        X : DataFrame
            The user and item columns, and optional side-feature columns.
        y : array-like
            Ratings.
        sample_weight : array-like of shape (n_samples,), optional
            Per-rating weights of the training loss and validation scores.
        eval_set : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Ratings scored after every epoch (loss, RMSE and MAE in ``history_``),
            and watched by early stopping instead of a random ``validation_fraction``.
        """
        require_target(self, y)
        if self.model not in RECOMMENDER_AUTO:
            raise ValueError(f"model must be 'dot' or 'neural', got {self.model!r}")
        seed = draw_seed(self.random_state)
        seeds = Seeds.from_seed(seed)
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        missing = [c for c in (self.user_column, self.item_column) if c not in frame.columns]
        if missing:
            raise ValueError(f"X has {frame.shape[1]} feature(s) and no column {missing}; set "
                             f"user_column/item_column (X has {list(frame.columns)})")
        ratings = _ratings(y, len(frame))
        weights = None if sample_weight is None else check_sample_weight(sample_weight,
                                                                         len(frame))
        if weights is not None and np.all(weights == weights[0]):
            weights = None      # equal weights change nothing
        auto = RECOMMENDER_AUTO[self.model]
        config = TrainingConfig.from_params(self.get_params(), seed=seed, auto=auto)
        strength = auto["embedding_l2"] if self.embedding_l2 == "auto" else self.embedding_l2
        if not (isinstance(strength, int | float) and strength >= 0):
            raise ValueError(f"embedding_l2 must be a number >= 0 or 'auto', "
                             f"got {self.embedding_l2!r}")
        cats, conts = self._roles(frame)
        preprocessor = TabularPreprocessor(
            cat_names=[self.user_column, self.item_column, *cats], cont_names=conts,
            date_names=[], add_missing_indicators=False,
        ).fit(frame)
        codes, continuous = preprocessor.to_tensors(frame)
        features = self._features(frame, codes)
        tensors = (codes, continuous, torch.tensor(ratings, dtype=torch.float32))
        rows, valid = np.arange(len(frame)), None
        if eval_set is not None:
            valid = self._eval_data(eval_set, preprocessor)
        elif config.early_stopping:
            chosen = np.random.default_rng(seeds.split).random(len(frame)) < \
                config.validation_fraction
            rows = rows[~chosen]
            valid = row_batches(tensors, np.flatnonzero(chosen), weights)
        train_data = row_batches(tensors, rows, weights, batch_size=config.batch_size,
                                 shuffle=True)
        rating_range = (float(ratings.min()), float(ratings.max()))
        model_kwargs = self._model_kwargs(preprocessor, float(ratings[rows].mean()), rating_range)
        with isolated_random_state():
            torch.manual_seed(seeds.init)
            model = (NeuralCF if self.model == "neural" else DotBias)(**model_kwargs)
            result = train(config, model, loss_for_task("regression"), train_data, valid,
                           output_activation=flatten, metrics=task_metrics("regression", flatten),
                           penalty=EmbeddingPenalty(strength) if strength else None)
        self.preprocessor_ = preprocessor
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        (self.seen_users_, self.seen_items_, self.user_features_, self.item_features_,
         self.context_features_, self._user_table, self._item_table) = features
        self.rating_range_ = rating_range
        self.model_, self.model_kwargs_ = model, model_kwargs
        self.training_config_ = config
        self.learner_ = result.learner
        self.history_ = result.history
        self.lr_ = result.lr
        return self

    def _eval_data(self, eval_set, preprocessor):
        """Validation batches from ``(X_val, y_val[, sample_weight_val])``."""
        if isinstance(eval_set, list) and len(eval_set) == 1:
            eval_set = eval_set[0]
        if not (isinstance(eval_set, tuple | list) and len(eval_set) in (2, 3)):
            raise ValueError("eval_set must be (X_val, y_val) or (X_val, y_val, "
                             f"sample_weight_val), got {type(eval_set).__name__}")
        X_val, y_val, *weight = eval_set
        frame = as_frame(X_val)
        check_rows(frame)
        ratings = _ratings(y_val, len(frame))
        weights = check_sample_weight(weight[0], len(frame)) if weight else None
        codes, continuous = preprocessor.to_tensors(frame)
        tensors = (codes, continuous, torch.tensor(ratings, dtype=torch.float32))
        return row_batches(tensors, np.arange(len(frame)), weights)

    def _model_kwargs(self, preprocessor, mean: float, rating_range) -> dict:
        sizes = preprocessor.embedding_sizes_
        side = [sizes[c] for c in preprocessor.cat_columns_[2:]]
        options = dict(n_users=sizes[self.user_column][0], n_items=sizes[self.item_column][0],
                       n_factors=self.n_factors, y_range=self._y_range(rating_range),
                       side_embedding_sizes=side,
                       n_continuous=len(preprocessor.cont_columns_), global_bias=mean)
        if self.model == "neural":
            options.update(hidden=tuple(self.hidden), dropout=self.dropout)
        return options

    def _y_range(self, rating_range):
        if self.y_range is None:
            return None
        if isinstance(self.y_range, str):
            if self.y_range != "auto":
                raise ValueError(f"y_range must be (low, high), 'auto' or None, "
                                 f"got {self.y_range!r}")
            low, high = rating_range
            span = (high - low) or 1.0
            return low - span / 4, high + span / 8
        return tuple(self.y_range)

    def _features(self, frame: pd.DataFrame, codes: torch.Tensor) -> tuple:
        """Seen items per user, and the side features attached to users and to items."""
        users, items = codes[:, 0].numpy(), codes[:, 1].numpy()
        order = np.lexsort((items, users))
        side = [c for c in frame.columns if c not in (self.user_column, self.item_column)]
        user_features, item_features, context_features = [], [], []
        for column in side:
            per_user = frame.groupby(self.user_column, observed=True)[column].nunique(
                dropna=False).max()
            per_item = frame.groupby(self.item_column, observed=True)[column].nunique(
                dropna=False).max()
            if per_item <= 1:
                item_features.append(column)
            elif per_user <= 1:
                user_features.append(column)
            else:
                context_features.append(column)
        user_table = frame.drop_duplicates(self.user_column)[
            [self.user_column, *user_features]].set_index(self.user_column)
        item_table = frame.drop_duplicates(self.item_column)[
            [self.item_column, *item_features]].set_index(self.item_column)
        return (users[order], items[order], user_features, item_features, context_features,
                user_table, item_table)

    def save(self, path):
        """Write the fitted recommender to ``path`` (JSON + safetensors; see tabembed.load)."""
        return persistence.save(self, path)

    def _to_state(self) -> tuple[dict, dict]:
        if not hasattr(self, "learner_"):
            raise ValueError("this EmbeddingRecommender is not fitted yet; call fit before save")
        meta, tensors = persistence.network_state(self.learner_.model, self.model_kwargs_)
        tensors["seen_users"] = torch.from_numpy(np.ascontiguousarray(self.seen_users_))
        tensors["seen_items"] = torch.from_numpy(np.ascontiguousarray(self.seen_items_))
        meta.update({
            "params": persistence.json_safe(self.get_params()),
            "preprocessor": self.preprocessor_.to_dict(),
            "history": self.history_.to_dict(orient="list"),
            "fitted": {"lr": encode_lr(self.lr_), "n_features_in": int(self.n_features_in_),
                       "feature_names_in": persistence.json_safe(list(self.feature_names_in_)),
                       "seed": self.training_config_.seed,
                       "batch_size": self.training_config_.batch_size},
            "recommender": {
                "rating_range": list(self.rating_range_),
                "user_features": self.user_features_, "item_features": self.item_features_,
                "context_features": self.context_features_,
                "user_table": _table_to_json(self._user_table),
                "item_table": _table_to_json(self._item_table),
            },
        })
        return meta, tensors

    @classmethod
    def _from_state(cls, meta: dict, tensors: dict, *, device="auto"):
        recommender = cls(**persistence.restore_tuples(cls, meta["params"]))
        model, kwargs, _ = persistence.load_network(meta, tensors, [DotBias, NeuralCF])
        recommender.model_, recommender.model_kwargs_ = model, kwargs
        recommender.preprocessor_ = TabularPreprocessor.from_dict(meta["preprocessor"])
        # The file's parts must agree, or predict would index past a table.
        recommender.preprocessor_.check_model_inputs(
            [kwargs["n_users"], kwargs["n_items"], *(n for n, _ in kwargs["side_embedding_sizes"])],
            kwargs["n_continuous"])
        recommender.learner_ = inference_learner(model, loss_for_task("regression"),
                                                 output_activation=flatten, device=device)
        fitted, extra = meta["fitted"], meta["recommender"]
        recommender.history_ = pd.DataFrame(meta["history"])
        recommender.lr_ = decode_lr(fitted["lr"])
        recommender.n_features_in_ = fitted["n_features_in"]
        recommender.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
        auto = {**RECOMMENDER_AUTO[recommender.model]}
        if fitted.get("batch_size"):
            auto["batch_size"] = fitted["batch_size"]
        recommender.training_config_ = TrainingConfig.from_params(
            recommender.get_params(), seed=fitted.get("seed", 0), auto=auto)
        recommender.rating_range_ = tuple(extra["rating_range"])
        recommender.user_features_ = list(extra["user_features"])
        recommender.item_features_ = list(extra["item_features"])
        recommender.context_features_ = list(extra["context_features"])
        recommender._user_table = _table_from_json(extra["user_table"], recommender.user_column)
        recommender._item_table = _table_from_json(extra["item_table"], recommender.item_column)
        recommender.seen_users_ = persistence.check_ids("seen_users", tensors.get("seen_users"),
                                                        kwargs["n_users"])
        recommender.seen_items_ = persistence.check_ids("seen_items", tensors.get("seen_items"),
                                                        kwargs["n_items"])
        if len(recommender.seen_users_) != len(recommender.seen_items_):
            raise persistence.DamagedFileError("seen_users and seen_items differ in length")
        return recommender

    # ------------------------------------------------------------ predicting

    def predict(self, X) -> np.ndarray:
        """Predicted ratings; unknown users or items get the prior (global and known biases)."""
        check_is_fitted(self, "learner_")
        frame = frame_for_prediction(self, X)
        self._check_id_types(frame)
        codes, continuous = self.preprocessor_.to_tensors(frame)
        ratings = self.learner_.predict((codes, continuous)).numpy().astype(np.float64)
        return check_finite_predictions(
            ratings, lambda row: self.preprocessor_.describe_extreme(continuous.numpy(), row))

    def _check_id_types(self, frame: pd.DataFrame) -> None:
        for column in (self.user_column, self.item_column):
            if column not in frame.columns:
                continue
            known = self.preprocessor_.categories_[column]
            if not known or frame[column].isna().all():
                continue
            trained = type(known[0])
            sample = frame[column].dropna().iloc[0]
            numeric = (int, float, np.integer, np.floating)
            if isinstance(sample, numeric) != isinstance(known[0], numeric):
                raise TypeError(
                    f"{column!r} ids were {trained.__name__} in training but "
                    f"{type(sample).__name__} here (e.g. {sample!r}); convert them to the "
                    "training type, or every id will be treated as unknown"
                )

    def _item_rows(self, user) -> pd.DataFrame:
        items = pd.Index(self.preprocessor_.categories_[self.item_column])
        frame = self._item_table.reindex(items).reset_index(names=self.item_column)
        frame[self.user_column] = [user] * len(frame)
        if self.user_features_:
            known = user in self._user_table.index
            for column in self.user_features_:
                value = self._user_table.at[user, column] if known else np.nan
                frame[column] = [value] * len(frame)
        if self.context_features_:
            raise ValueError(
                f"columns {self.context_features_} vary within users and items (context "
                "features), so recommend() cannot fill them; score candidates with predict()"
            )
        return frame

    def recommend(self, user, k: int = 10, *, exclude_seen: bool = True) -> pd.DataFrame:
        """The ``k`` best-scored items for ``user`` (an unknown user gets the most liked items)."""
        check_is_fitted(self, "learner_")
        k = _check_k(k)
        frame = self._item_rows(user)
        scores = self.predict(frame[list(self.feature_names_in_)])
        if exclude_seen:
            code = self.preprocessor_.encode(self.user_column, [user])[0]
            start, stop = np.searchsorted(self.seen_users_, [code, code + 1]) if code else (0, 0)
            seen = self.seen_items_[start:stop] - 1    # codes are positions + 1
            scores[seen] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        best = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], dtype=int)
        best = best[np.argsort(-scores[best], kind="stable")]
        return pd.DataFrame({self.item_column: frame[self.item_column].to_numpy()[best],
                             "score": scores[best]})

    def similar_items(self, item, k: int = 10) -> pd.DataFrame:
        """The ``k`` items whose embeddings have the highest cosine similarity to ``item``'s."""
        check_is_fitted(self, "learner_")
        k = _check_k(k)
        vectors = self.item_embeddings_
        if item not in vectors.index:
            raise KeyError(f"item {item!r} was not seen in training; similar_items needs a "
                           "known item")
        matrix = vectors.to_numpy()
        norms = np.linalg.norm(matrix, axis=1)
        norms[norms == 0] = 1.0
        target = matrix[vectors.index.get_loc(item)]
        similarity = matrix @ target / (norms * (np.linalg.norm(target) or 1.0))
        similarity[vectors.index.get_loc(item)] = -np.inf
        k = min(k, len(similarity) - 1)
        best = np.argsort(-similarity, kind="stable")[:k]
        return pd.DataFrame({self.item_column: vectors.index[best],
                             "similarity": similarity[best]})

    def _embeddings(self, table: torch.nn.Embedding, column) -> pd.DataFrame:
        weights = table.weight.detach().cpu().numpy()[1:]    # row 0 is the unknown token
        index = pd.Index(self.preprocessor_.categories_[column], name=column)
        return pd.DataFrame(weights, index=index,
                            columns=[f"factor_{i}" for i in range(weights.shape[1])])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True      # missing ids are the unknown token
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    @property
    def user_embeddings_(self) -> pd.DataFrame:
        check_is_fitted(self, "learner_")
        return self._embeddings(self.model_.user_factors, self.user_column)

    @property
    def item_embeddings_(self) -> pd.DataFrame:
        check_is_fitted(self, "learner_")
        return self._embeddings(self.model_.item_factors, self.item_column)
