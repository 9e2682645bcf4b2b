"""EmbeddingRecommender: rating prediction, top-k recommendations and similar items.

``fit(X, y)`` takes a user column, an item column and optional side-feature
columns, with ratings in ``y``. Side features are split automatically into
user features (constant per user), item features (constant per item) and
context features (neither); ``recommend`` needs no context features, since
it scores every item for one user from the stored user and item features.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_is_fitted

from tabembed import training_options
from tabembed.estimators import as_frame, check_rows, frame_for_prediction, require_target
from tabembed.models import DotBias, NeuralCF, loss_for_task
from tabembed.models.collab import DEFAULT_FACTORS, DEFAULT_NEURAL_DROPOUT
from tabembed.preprocessing import TabularPreprocessor

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
        (bench/RESULTS.md): dot-bias 512, 0 and 0.05 (validation RMSE 0.9129,
        against 0.9168 for the best decoupled decay alone), neural CF 256, 0.1 and 0.
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
        epochs=5,
        batch_size="auto",
        lr=5e-3,
        schedule="one_cycle",
        cycle_len=1,
        cycle_mult=2,
        averaging=None,
        ema_decay=0.999,
        swa_start=0.75,
        swa_lr=0.5,
        weight_decay="auto",
        embedding_l2="auto",
        early_stopping=False,
        validation_fraction=0.1,
        patience=3,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.user_column = user_column
        self.item_column = item_column
        self.model = model
        self.n_factors = n_factors
        self.hidden = hidden
        self.dropout = dropout
        self.y_range = y_range
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.schedule = schedule
        self.cycle_len = cycle_len
        self.cycle_mult = cycle_mult
        self.averaging = averaging
        self.ema_decay = ema_decay
        self.swa_start = swa_start
        self.swa_lr = swa_lr
        self.weight_decay = weight_decay
        self.embedding_l2 = embedding_l2
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ fitting

    def auto_defaults(self) -> dict:
        """What ``"auto"`` means for ``batch_size``, ``weight_decay`` and ``embedding_l2``."""
        if self.model == "neural":
            return {"batch_size": 256, "weight_decay": 0.1, "embedding_l2": 0.0}
        return {"batch_size": 512, "weight_decay": 0.0, "embedding_l2": 0.05}

    def _roles(self, frame: pd.DataFrame) -> tuple[list, list]:
        side = [c for c in frame.columns if c not in (self.user_column, self.item_column)]
        cats = [c for c in side if not pd.api.types.is_numeric_dtype(frame[c])
                or pd.api.types.is_bool_dtype(frame[c])]
        conts = [c for c in side if c not in cats]
        return cats, conts

    def fit(self, X, y):
        """Learn user, item and side-feature embeddings from ratings ``y``."""
        training_options.check_training_parameters(self)
        require_target(self, y)
        if self.model not in ("dot", "neural"):
            raise ValueError(f"model must be 'dot' or 'neural', got {self.model!r}")
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        missing = [c for c in (self.user_column, self.item_column) if c not in frame.columns]
        if missing:
            raise ValueError(f"X has {frame.shape[1]} feature(s) and no column {missing}; set "
                             f"user_column/item_column (X has {list(frame.columns)})")
        ratings = np.asarray(y, dtype=np.float64)
        if ratings.ndim == 2 and ratings.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                          "flattened to (n_samples,)", DataConversionWarning, stacklevel=2)
        ratings = ratings.reshape(-1)
        if len(ratings) != len(frame):
            raise ValueError(f"X has {len(frame)} rows but y has {len(ratings)}")
        if not np.isfinite(ratings).all():
            raise ValueError(f"y has {int((~np.isfinite(ratings)).sum())} missing or infinite "
                             "rating(s); drop them")
        cats, conts = self._roles(frame)
        self.preprocessor_ = TabularPreprocessor(
            cat_names=[self.user_column, self.item_column, *cats], cont_names=conts,
            date_names=[], add_missing_indicators=False,
        ).fit(frame)
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        codes, continuous = self.preprocessor_.to_tensors(frame)
        self._store_features(frame, codes)
        target = torch.tensor(ratings, dtype=torch.float32)
        rows = np.arange(len(frame))
        valid = None
        if self.early_stopping:
            generator = np.random.default_rng(self.random_state)
            chosen = generator.random(len(frame)) < self.validation_fraction
            rows, valid_rows = rows[~chosen], rows[chosen]
            valid = (codes[valid_rows], continuous[valid_rows], target[valid_rows])
        train = (codes[rows], continuous[rows], target[rows])
        self.rating_range_ = (float(ratings.min()), float(ratings.max()))
        training_options.seed_everything(self.random_state)
        self.model_ = self._build_model(float(ratings[rows].mean()))
        strength = training_options.resolve(self, "embedding_l2")
        self.learner_ = training_options.train(
            self, self.model_, loss_for_task("regression"), train, valid,
            output_activation=flatten,
            penalty=EmbeddingPenalty(strength) if strength else None,
        )
        self.history_ = self.learner_.history.to_frame()
        return self

    def _build_model(self, mean: float):
        sizes = self.preprocessor_.embedding_sizes_
        n_users = sizes[self.user_column][0]
        n_items = sizes[self.item_column][0]
        side = [sizes[c] for c in self.preprocessor_.cat_columns_[2:]]
        options = dict(n_users=n_users, n_items=n_items, n_factors=self.n_factors,
                       y_range=self._y_range(), side_embedding_sizes=side,
                       n_continuous=len(self.preprocessor_.cont_columns_), global_bias=mean)
        if self.model == "neural":
            options.update(hidden=tuple(self.hidden), dropout=self.dropout)
        self.model_kwargs_ = options
        return (NeuralCF if self.model == "neural" else DotBias)(**options)

    def _y_range(self):
        if self.y_range is None:
            return None
        if isinstance(self.y_range, str):
            if self.y_range != "auto":
                raise ValueError(f"y_range must be (low, high), 'auto' or None, "
                                 f"got {self.y_range!r}")
            low, high = self.rating_range_
            span = (high - low) or 1.0
            return low - span / 4, high + span / 8
        return tuple(self.y_range)

    def _store_features(self, frame: pd.DataFrame, codes: torch.Tensor) -> None:
        """Seen items per user, and the side features attached to users and to items."""
        users, items = codes[:, 0].numpy(), codes[:, 1].numpy()
        order = np.lexsort((items, users))
        self.seen_users_, self.seen_items_ = users[order], items[order]
        side = [c for c in frame.columns if c not in (self.user_column, self.item_column)]
        self.user_features_, self.item_features_, self.context_features_ = [], [], []
        for column in side:
            per_user = frame.groupby(self.user_column, observed=True)[column].nunique(
                dropna=False).max()
            per_item = frame.groupby(self.item_column, observed=True)[column].nunique(
                dropna=False).max()
            if per_item <= 1:
                self.item_features_.append(column)
            elif per_user <= 1:
                self.user_features_.append(column)
            else:
                self.context_features_.append(column)
        self._user_table = frame.drop_duplicates(self.user_column)[
            [self.user_column, *self.user_features_]].set_index(self.user_column)
        self._item_table = frame.drop_duplicates(self.item_column)[
            [self.item_column, *self.item_features_]].set_index(self.item_column)

    def save(self, path):
        """Write the fitted recommender to ``path`` (JSON + safetensors; see tabembed.load)."""
        from tabembed.persistence import save

        return save(self, path)

    # ------------------------------------------------------------ predicting

    def predict(self, X) -> np.ndarray:
        """Predicted ratings; unknown users or items get the prior (global and known biases)."""
        check_is_fitted(self, "learner_")
        frame = frame_for_prediction(self, X)
        self._check_id_types(frame)
        codes, continuous = self.preprocessor_.to_tensors(frame)
        return self.learner_.predict((codes, continuous)).numpy().astype(np.float64)

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
