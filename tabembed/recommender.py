"""Recommenders: rating prediction, top-k recommendations and similar items.

:class:`EmbeddingRecommender` learns from ratings, :class:`ImplicitRecommender`
from interactions without ratings (clicks, plays). ``fit(X, y)`` takes a user
column, an item column and optional side-feature columns. Side features are
split automatically into user features (constant per user), item features
(constant per item) and context features (neither); multi-valued ones (lists,
``"a|b"`` strings) become bags of embeddings. ``recommend`` needs no context
features, since it scores every item from the stored user and item features,
for one user or many at once (chunked users x items products, seen items
excluded through a sparse matrix); ``recommend_for_items`` folds in a new
user; ``similar_items`` compares item vectors.

``fit`` also takes Parquet to stream (a path, folder, URI, list of files or
``pyarrow.dataset.Dataset``; ``fit("ratings/", y="rating")``): vocabularies
and side-feature tables from one bounded pass, batches through
:class:`~tabembed.streaming.ParquetBatches`, each process its shard under
torchrun.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
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
from tabembed.batches import TensorBatches
from tabembed.config import (
    EVALUATION_BATCH_SIZE,
    IMPLICIT_AUTO,
    IMPLICIT_DEFAULTS,
    RECOMMENDER_AUTO,
    RECOMMENDER_DEFAULTS,
    SPARSE_TABLE_MIN_ROWS,
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
from tabembed.estimators import is_stream
from tabembed.metrics import task_metrics
from tabembed.models import DotBias, NeuralCF, loss_for_task
from tabembed.models.collab import DEFAULT_FACTORS, DEFAULT_NEURAL_DROPOUT
from tabembed.models.layers import output_range_
from tabembed.models.ranking import RANKING_LOSSES, CandidateScores, ranking_loss
from tabembed.preprocessing import TabularPreprocessor
from tabembed.ranking_metrics import CHUNK_SCORES, evaluate, top_k
from tabembed.sampling import NegativeSampling, sampling_probabilities
from tabembed.training import distributed, optimizers
from tabembed.training.learner import pick_device

_D = RECOMMENDER_DEFAULTS
# Ranking defaults, measured on validation splits of MovieLens 100K and latest-small
# (bench/RESULTS.md, "Ranking"; ratings >= 4 relevant). Ranked by predicted rating, the
# dot-bias model reached recall@10 0.061 / 0.043 where the most popular items reached 0.120;
# shrinking item biases (n / (n + 25)) and requiring 20 ratings gave 0.072 / 0.063; the
# hybrid (an implicit ranker's score + 1.0 x the predicted rating) 0.224 / 0.153 (the ranker
# alone 0.212 / 0.132), with no gain from shrinkage or a minimum support on top.
RANKING = "hybrid"
RANKING_RATING_WEIGHT = 1.0
# (ranking_shrinkage, min_support) for "auto", per ranking.
RANKING_AUTO = {"hybrid": (0, 0), "rating": (25, 20)}
# similar_items: each candidate's cosine times n / (n + 25). Validation, similar items of each
# user's best-rated training item as their list (recall@10 on latest-small / 100K): implicit
# item vectors 0.077 / 0.115 unshrunk (13% of the items listed had < 5 interactions on
# latest-small), 0.120 / 0.145 with 25, 0.118 / 0.154 with 50; explicit vectors 0.013 / 0.030
# unshrunk (51% with < 5), 0.070 / 0.068 with 25. More shrinkage narrows the catalogue.
SIMILARITY_SHRINKAGE = 25
# Rows per forward pass when a neural model scores users x items (its MLP sees each pair).
_NEURAL_GRID_ROWS = 2**18

__all__ = ["EmbeddingRecommender", "ImplicitRecommender"]


class EmbeddingPenalty:
    """``strength * model.embedding_penalty(codes)``, for the Learner's ``penalty`` hook."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, model, inputs) -> torch.Tensor:
        return self.strength * model.embedding_penalty(*inputs)


def sparse_tables_if_large(model, device) -> None:
    """Large user and item tables train with sparse gradients and lazy Adam (a step costs
    the batch's rows, not the tables'); see ``SPARSE_TABLE_MIN_ROWS``."""
    rows = model.user_factors.num_embeddings + model.item_factors.num_embeddings
    if (rows >= SPARSE_TABLE_MIN_ROWS and distributed.get_world_size() == 1
            and pick_device(device).type == "cpu"):
        model.set_sparse_gradients(True)


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


_SEPARATOR = "|"


def _sorted_pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) code pairs sorted by user, then item (``np.lexsort``'s order):
    one sort of a combined key, ~10x faster than lexsort on 80k pairs."""
    if not len(users):
        return users, items
    width = np.int64(items.max()) + 1
    return np.divmod(np.sort(users.astype(np.int64) * width + items), width)


def _is_multi_valued(series: pd.Series) -> bool:
    """List-like values, or strings of which at least a tenth hold ``|`` ("Action|Comedy")."""
    values = series.dropna()
    if values.empty:
        return False
    if isinstance(values.iloc[0], list | tuple | set | np.ndarray):
        return True
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    texts = values.astype(str)
    return bool(texts.str.contains(_SEPARATOR, regex=False).mean() >= 0.1)


def _tokens(value) -> list[str]:
    if isinstance(value, list | tuple | set | np.ndarray):
        return [str(token) for token in value]
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return []
    return [token.strip() for token in str(value).split(_SEPARATOR) if token.strip()]


def _canonical(series: pd.Series) -> pd.Series:
    """A multi-valued column as "|"-joined strings (hashable, JSON-safe), missing kept:
    tokens stripped of spaces, empty tokens dropped."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # Each distinct string once (a genres column has ~1,000 in 100,000 rows).
        codes, distinct = pd.factorize(series.to_numpy(dtype=object))
        text = (pd.Series(distinct, dtype="string")
                .str.replace(r"\s*\|\s*", _SEPARATOR, regex=True)   # "a | b" -> "a|b"
                .str.replace(r"\|{2,}", _SEPARATOR, regex=True)      # empty tokens
                .str.strip().str.strip(_SEPARATOR))
        canonical = np.append(text.to_numpy(dtype=object), None)[codes]   # -1: missing
        return pd.Series(canonical, index=series.index, dtype=object, name=series.name)
    # Lists (or a mix) are Python objects: pandas has no vectorised join for them.
    joined = [_SEPARATOR.join(_tokens(v)) if not _missing(v) else None for v in series]
    return pd.Series(joined, index=series.index, dtype=object, name=series.name)


def _bag_tokens(canonical: pd.Series) -> pd.Series:
    """The tokens of "|"-joined strings, one per row of the result, indexed by the
    position of the row they came from (missing and empty values give none)."""
    tokens = (canonical.reset_index(drop=True).astype("string")
              .str.split(_SEPARATOR).explode())
    return tokens[tokens.notna() & (tokens != "")]


def _missing(value) -> bool:
    if isinstance(value, list | tuple | set | np.ndarray):
        return False
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


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
        (bench/RESULTS.md; ``tabembed.config.RECOMMENDER_AUTO``): dot-bias 768,
        0 and 0.05 (validation RMSE 0.9129, against 0.9168 for the best
        decoupled decay alone), neural CF 256, 0.1 and 0.
    multi_valued : "auto" or list of str
        Side-feature columns holding several values per row (a list, or a
        ``"|"``-separated string such as genres ``"Action|Comedy"``): each
        value gets an embedding, pooled by mean (``nn.EmbeddingBag``) into the
        user's or item's vector, so a new item with known genres gets a
        vector too. ``"auto"``: list-valued columns and string columns in
        which at least a tenth of the values hold ``"|"``; ``[]``: none.
    ranking : {"hybrid", "rating"} or "auto"
        What :meth:`recommend` ranks by. ``"rating"``: the predicted rating
        (with ``ranking_shrinkage`` and ``min_support``). ``"hybrid"``: ``fit``
        also trains an :class:`ImplicitRecommender` (sampled softmax) on the
        same (user, item) rows, which learns *which* items a user rates, and
        items are ranked by its score plus ``RANKING_RATING_WEIGHT`` times the
        predicted rating, so what a user would watch *and* like comes first;
        ``similar_items`` uses its item factors. The rating model, and so
        ``predict``, is the same either way. ``"auto"``: ``RANKING``.
    ranking_shrinkage : float or "auto"
        How :meth:`recommend` and :meth:`similar_items` discount items with few
        training interactions: an item with ``n`` keeps ``n / (n + shrinkage)``
        of its bias (and of its similarity). ``0`` ranks by predicted rating.
        ``"auto"``: in ``recommend`` 25 for ``ranking="rating"``, 0 for the
        hybrid (``RANKING_AUTO``); in ``similar_items`` 25
        (``SIMILARITY_SHRINKAGE``); all chosen on validation splits.
    min_support : int or "auto"
        Items with fewer training interactions are never recommended nor
        returned as similar. ``"auto"``: 20 for ``ranking="rating"`` (or a
        tenth of the most-rated item's count, if smaller), 0 for the hybrid.
    epochs, lr, schedule, cycle_len, cycle_mult, averaging, ema_decay,
    swa_start, swa_lr, early_stopping, validation_fraction, patience, device,
    random_state, verbose :
        As in :class:`~tabembed.estimators.EmbeddingMLPClassifier`.

    Attributes
    ----------
    user_embeddings_, item_embeddings_ : DataFrame
        Learned factors indexed by the original ids.
    ranker_ : ImplicitRecommender or None
        The hybrid ranking's implicit model (None with ``ranking="rating"``).
    bag_columns_ : list
        The multi-valued side-feature columns; ``bag_vocabulary_`` their values.
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
        multi_valued="auto",
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

    # ------------------------------------------------------------ fitting

    def _bag_columns(self, frame: pd.DataFrame) -> list:
        """The multi-valued side columns of ``frame`` (the ``multi_valued`` parameter)."""
        side = [c for c in frame.columns if c not in (self.user_column, self.item_column)]
        if self.multi_valued == "auto":
            return [c for c in side if _is_multi_valued(frame[c])]
        if not isinstance(self.multi_valued, list | tuple):
            raise ValueError(f"multi_valued must be 'auto' or a list of column names, "
                             f"got {self.multi_valued!r}")
        missing = [c for c in self.multi_valued if c not in side]
        if missing:
            raise ValueError(f"multi_valued names {missing}, which are not side-feature "
                             f"columns of X ({side})")
        return list(self.multi_valued)

    def _prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Fit the bags' vocabularies (in ``fit``) and return ``frame`` with each bag column
        as "|"-joined strings."""
        self.bag_columns_ = self._bag_columns(frame)
        frame = self._canonical_bags(frame)
        self.bag_vocabulary_, self.bag_lengths_ = {}, {}
        for column in self.bag_columns_:
            tokens = _bag_tokens(pd.Series(frame[column].dropna().unique(), dtype=object))
            self.bag_vocabulary_[column] = sorted(set(tokens.unique()))
            self.bag_lengths_[column] = max(1, int(tokens.index.value_counts().max())
                                            if len(tokens) else 1)
        return frame

    def _canonical_bags(self, frame: pd.DataFrame) -> pd.DataFrame:
        bags = [c for c in getattr(self, "bag_columns_", []) if c in frame.columns]
        if not bags:
            return frame
        return frame.assign(**{c: _canonical(frame[c]) for c in bags})

    def _tensors(self, frame: pd.DataFrame, preprocessor=None) -> tuple[torch.Tensor, ...]:
        """``(codes, continuous)``: the preprocessor's, then each bag's token codes."""
        preprocessor = preprocessor if preprocessor is not None else self.preprocessor_
        bags = getattr(self, "bag_columns_", [])
        codes, continuous = preprocessor.to_tensors(frame.drop(columns=bags))
        if not bags:
            return codes, continuous
        parts = [codes]
        for column in bags:
            # Each token's code (0: unknown) at its place in its row; a row's tokens
            # past the training maximum are dropped.
            # Per distinct value (genre combinations repeat), then gathered per row.
            codes, distinct = pd.factorize(frame[column].to_numpy(dtype=object))
            tokens = _bag_tokens(pd.Series(distinct, dtype=object))
            length = self.bag_lengths_[column]
            known = pd.Index(self.bag_vocabulary_[column]).get_indexer(
                tokens.to_numpy(dtype=object)) + 1
            rows = tokens.index.to_numpy()
            place = tokens.groupby(level=0).cumcount().to_numpy()
            table = np.zeros((len(distinct) + 1, length), np.int64)   # last row: missing
            kept = place < length
            table[rows[kept], place[kept]] = known[kept]
            parts.append(torch.from_numpy(table[codes]))
        return torch.cat(parts, dim=1), continuous

    def _roles(self, frame: pd.DataFrame) -> tuple[list, list]:
        side = [c for c in frame.columns if c not in (self.user_column, self.item_column)
                and c not in getattr(self, "bag_columns_", [])]
        cats = [c for c in side if not pd.api.types.is_numeric_dtype(frame[c])
                or pd.api.types.is_bool_dtype(frame[c])]
        conts = [c for c in side if c not in cats]
        return cats, conts

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Learn user, item and side-feature embeddings from ratings ``y``.

        Parameters
        ----------
        X : DataFrame, or Parquet to stream
            The user and item columns, and optional side-feature columns. Or a
            Parquet file, folder, URI, list of files or ``pyarrow.dataset.Dataset``
            holding them and the ratings, streamed in bounded memory (see
            :meth:`_fit_stream`): ``fit("ratings/", y="rating")``.
        y : array-like, or str with Parquet
            Ratings; with Parquet, the name of the rating column.
        sample_weight : array-like of shape (n_samples,), optional
            Per-rating weights of the training loss and validation scores.
        eval_set : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Ratings scored after every epoch (loss, RMSE and MAE in ``history_``),
            and watched by early stopping instead of a random ``validation_fraction``.
        """
        if is_stream(X):
            return self._fit_stream(X, y, sample_weight=sample_weight, eval_set=eval_set)
        require_target(self, y)
        if self.model not in RECOMMENDER_AUTO:
            raise ValueError(f"model must be 'dot' or 'neural', got {self.model!r}")
        self._ranking()
        seed = draw_seed(self.random_state)
        seeds = Seeds.from_seed(seed)
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        missing = [c for c in (self.user_column, self.item_column) if c not in frame.columns]
        if missing:
            raise ValueError(f"X has {frame.shape[1]} feature(s) and no column {missing}; set "
                             f"user_column/item_column (X has {list(frame.columns)})")
        ratings = _ratings(y, len(frame))
        frame = self._prepare(frame)
        weights = None if sample_weight is None else check_sample_weight(sample_weight,
                                                                         len(frame))
        if weights is not None and np.all(weights == weights[0]):
            weights = None      # equal weights change nothing
        config, strength = self._training_settings(seed)
        cats, conts = self._roles(frame)
        preprocessor = TabularPreprocessor(
            cat_names=[self.user_column, self.item_column, *cats], cont_names=conts,
            date_names=[], add_missing_indicators=False,
        ).fit(frame.drop(columns=self.bag_columns_))
        codes, continuous = self._tensors(frame, preprocessor)
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
        model_kwargs = self._model_kwargs(preprocessor, float(ratings[rows].mean()), rating_range,
                                          features[3])
        model, result = self._train_rating_model(model_kwargs, config, strength, seeds.init,
                                                 train_data, valid)
        self.preprocessor_ = preprocessor
        self._grid_cache = None
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        (self.seen_users_, self.seen_items_, self.user_features_, self.item_features_,
         self.context_features_, self._user_table, self._item_table) = features
        self._adopt(result, model, model_kwargs, config, rating_range)
        if self._ranking() == "hybrid":
            self.ranker_ = self._new_ranker(seeds.split + 1).fit(frame,
                                                                 sample_weight=sample_weight)
        return self

    def _training_settings(self, seed: int) -> tuple[TrainingConfig, float]:
        """The training configuration and the embedding penalty's strength."""
        auto = RECOMMENDER_AUTO[self.model]
        config = TrainingConfig.from_params(self.get_params(), seed=seed, auto=auto)
        strength = auto["embedding_l2"] if self.embedding_l2 == "auto" else self.embedding_l2
        if not (isinstance(strength, int | float) and strength >= 0):
            raise ValueError(f"embedding_l2 must be a number >= 0 or 'auto', "
                             f"got {self.embedding_l2!r}")
        return config, strength

    def _train_rating_model(self, model_kwargs, config, strength, init_seed, train_data, valid):
        """A fresh rating model (seeded by ``init_seed``) trained on the batches:
        ``(model, TrainingResult)``."""
        with isolated_random_state():
            torch.manual_seed(init_seed)
            model = (NeuralCF if self.model == "neural" else DotBias)(**model_kwargs)
            sparse_tables_if_large(model, config.device)
            result = train(config, model, loss_for_task("regression"), train_data, valid,
                           output_activation=flatten, metrics=task_metrics("regression", flatten),
                           penalty=EmbeddingPenalty(strength) if strength else None)
        return model, result

    def _adopt(self, result, model, model_kwargs, config, rating_range) -> None:
        """The fitted attributes of a finished training run (``ranker_`` still to come)."""
        self.rating_range_ = rating_range
        self.model_, self.model_kwargs_ = model, model_kwargs
        self.training_config_ = config
        self.learner_ = result.learner
        self.history_ = result.history
        self.lr_ = result.lr
        self.ranker_ = None

    def _new_ranker(self, seed: int) -> ImplicitRecommender:
        """The hybrid ranking's implicit model, unfitted. Its own seed, drawn after the
        rating model's: predict() does not change."""
        return ImplicitRecommender(
            user_column=self.user_column, item_column=self.item_column, device=self.device,
            multi_valued=list(self.bag_columns_), random_state=seed, verbose=self.verbose)

    # ------------------------------------------------------------ fitting from Parquet

    def _fit_stream(self, source, y, *, sample_weight, eval_set):
        """Fit from Parquet (a path, folder, URI, list of files or pyarrow Dataset) by streaming.

        ``y`` names the rating column. Nothing is read whole: one pass (a row
        group at a time) fits the vocabularies, finds the user, item and
        context features and their tables, the bags and the rating range;
        training batches stream through
        :class:`~tabembed.streaming.ParquetBatches`, each process its own row
        groups under torchrun; ``early_stopping`` holds rows out by a hash of
        their position (:class:`~tabembed.streaming.ValidationSplit`).

        Memory grows with users and items, except one structure: the
        (user, item) code pair of every row, int32, 8 bytes a rating (plus 8
        more while it is sorted once), which ``recommend(exclude_seen=True)``
        and the hybrid ranking's popularity-sampled negatives need, as the
        ``implicit`` package's CSR matrix does. ``sample_weight`` and
        ``eval_set`` need a DataFrame.
        """
        if not isinstance(y, str):
            raise TypeError(f"to fit from {type(source).__name__} data, name its rating column: "
                            f"fit(source, y='rating'); got y of type {type(y).__name__}")
        if sample_weight is not None or eval_set is not None:
            raise ValueError("sample_weight and eval_set need a DataFrame; a Parquet stream "
                             "takes the rating column's name only (use early_stopping=True "
                             "to hold rows out of the stream)")
        if self.model not in RECOMMENDER_AUTO:
            raise ValueError(f"model must be 'dot' or 'neural', got {self.model!r}")
        self._ranking()
        seed = draw_seed(self.random_state)
        seeds = Seeds.from_seed(seed)
        config, strength = self._training_settings(seed)
        split = _stream_split(config, seeds)
        scan = self._scan_stream(source, y, split)
        preprocessor = scan["preprocessor"]
        transform = self._stream_transform(scan, target=y)
        train_data, valid = _stream_sources(scan["row_groups"], transform, split, config,
                                            seeds, sharded_validation=True)
        rating_range = scan["rating_range"]
        model_kwargs = self._model_kwargs(preprocessor, scan["mean"], rating_range,
                                          scan["features"][3])
        model, result = self._train_rating_model(model_kwargs, config, strength, seeds.init,
                                                 train_data, valid)
        self._set_scan(scan)
        self._adopt(result, model, model_kwargs, config, rating_range)
        if self._ranking() == "hybrid":
            # As fit(DataFrame); the scan (vocabularies, tables, pairs) is shared.
            self.ranker_ = self._new_ranker(seeds.split + 1)._fit_stream(
                source, None, sample_weight=None, eval_set=None, scan=scan)
        return self

    def _stream_bag_columns(self, row_groups, empty: pd.DataFrame, side: list) -> list:
        """The multi-valued side columns of a Parquet dataset: list columns, and string
        columns where a tenth of the values hold ``|`` (counted over every row group)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.multi_valued != "auto":
            return self._bag_columns(empty[[self.user_column, self.item_column, *side]])
        schema = row_groups.dataset.schema
        listed = [c for c in side if pa.types.is_list(schema.field(c).type)
                  or pa.types.is_large_list(schema.field(c).type)]
        texts = [c for c in side if c not in listed
                 and not pd.api.types.is_numeric_dtype(empty[c])
                 and not pd.api.types.is_bool_dtype(empty[c])]
        values, separated = dict.fromkeys(texts, 0), dict.fromkeys(texts, 0)
        for index in range(len(row_groups) if texts else 0):
            table = row_groups.read(index, texts)
            for column in list(values):
                array = table[column]
                if pa.types.is_dictionary(array.type):
                    array = array.cast(array.type.value_type)
                try:
                    array = array.cast(pa.large_string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    del values[column]       # not text: never a bag
                    continue
                values[column] += len(array) - array.null_count
                separated[column] += int(pc.sum(pc.match_substring(array, _SEPARATOR))
                                         .as_py() or 0)
        return [c for c in side if c in listed or
                (c in values and values[c] and separated[c] / values[c] >= 0.1)]

    def _scan_stream(self, source, target, split) -> dict:
        """One streaming pass: what fit(DataFrame) learns from the whole frame.

        Every process makes it (it is deterministic), so nothing O(ratings) is
        sent between processes.
        """
        from tabembed.streaming import RowGroups, fit_preprocessor, open_dataset
        from tabembed.streaming.interactions import FirstValues, Pairs, frames

        dataset = open_dataset(source)
        names = list(dataset.schema.names)
        missing = [c for c in (self.user_column, self.item_column) if c not in names]
        if missing:
            raise ValueError(f"the Parquet data has no column {missing}; set "
                             f"user_column/item_column (its columns are {names})")
        if target is not None and target not in names:
            raise ValueError(f"the rating column {target!r} is not in the Parquet data; its "
                             f"columns are {names}")
        features = [c for c in names if c != target]
        side = [c for c in features if c not in (self.user_column, self.item_column)]
        row_groups = RowGroups(dataset)
        empty = dataset.schema.empty_table().to_pandas()[features]
        self.bag_columns_ = self._stream_bag_columns(row_groups, empty, side)
        cats, conts = self._roles(empty)
        preprocessor = fit_preprocessor(dataset, TabularPreprocessor(
            cat_names=[self.user_column, self.item_column, *cats], cont_names=conts,
            date_names=[], add_missing_indicators=False,
        ), exclude=[*([target] if target is not None else []), *self.bag_columns_])
        n_users = len(preprocessor.categories_[self.user_column])
        n_items = len(preprocessor.categories_[self.item_column])
        per_user = {c: FirstValues(n_users) for c in side}
        per_item = {c: FirstValues(n_items) for c in side}
        first_user = np.full(n_users + 1, -1, dtype=np.int64)
        first_item = np.full(n_items + 1, -1, dtype=np.int64)
        vocabulary = {c: set() for c in self.bag_columns_}
        lengths = dict.fromkeys(self.bag_columns_, 1)
        pairs = Pairs()
        low, high, total, n_train = np.inf, -np.inf, 0.0, 0
        columns = [*features, *([target] if target is not None else [])]
        for frame, positions, held in frames(row_groups, columns, split):
            frame = self._canonical_bags(frame)
            users = preprocessor.encode(self.user_column, frame[self.user_column])
            items = preprocessor.encode(self.item_column, frame[self.item_column])
            pairs.update(users, items)
            for codes, first in ((users, first_user), (items, first_item)):
                fresh = first[codes] < 0
                ids, where = np.unique(codes[fresh], return_index=True)
                first[ids] = positions[np.flatnonzero(fresh)[where]]
            for column in side:
                for values, codes in ((per_user[column], users), (per_item[column], items)):
                    if not values.varies:
                        values.update(codes, frame[column])
            for column in self.bag_columns_:
                tokens = _bag_tokens(pd.Series(frame[column].dropna().unique(), dtype=object))
                vocabulary[column].update(tokens.unique())
                if len(tokens):
                    lengths[column] = max(lengths[column],
                                          int(tokens.index.value_counts().max()))
            if target is not None:
                ratings = _stream_ratings(frame[target], target)
                if len(ratings):
                    low, high = min(low, ratings.min()), max(high, ratings.max())
                training = ratings if held is None else ratings[~held]
                total += float(training.sum())
                n_train += len(training)
        if target is not None and n_train == 0:
            raise ValueError("no training ratings in the Parquet data; change "
                             "validation_fraction")
        self.bag_vocabulary_ = {c: sorted(vocabulary[c]) for c in self.bag_columns_}
        self.bag_lengths_ = lengths
        item_features = [c for c in side if not per_item[c].varies]
        user_features = [c for c in side if per_item[c].varies and not per_user[c].varies]
        context_features = [c for c in side if per_item[c].varies and per_user[c].varies]
        for column in context_features:
            if column in self.bag_columns_:
                raise ValueError(f"the multi-valued column {column!r} varies within users and "
                                 "within items; a bag must describe the user or the item")

        def table(id_column, first, per_id, chosen):
            # In order of first appearance, as drop_duplicates keeps them.
            codes = np.flatnonzero(first >= 0)
            codes = codes[codes > 0]       # a missing id is no user or item
            codes = codes[np.argsort(first[codes], kind="stable")]
            ids = np.asarray(preprocessor.categories_[id_column], dtype=object)[codes - 1]
            index = pd.Index(ids.tolist(), name=id_column)
            return pd.DataFrame({c: per_id[c].values(codes) for c in chosen},
                                index=index).infer_objects()

        seen_users, seen_items = pairs.sorted(n_items)
        return {
            "row_groups": row_groups, "preprocessor": preprocessor, "feature_names": features,
            "features": (seen_users, seen_items, user_features, item_features,
                         context_features, table(self.user_column, first_user, per_user,
                                                 user_features),
                         table(self.item_column, first_item, per_item, item_features)),
            "bags": (list(self.bag_columns_), self.bag_vocabulary_, self.bag_lengths_),
            "rating_range": (float(low), float(high)) if target is not None else (1.0, 1.0),
            "mean": total / n_train if n_train else 0.0,
        }

    def _set_scan(self, scan: dict) -> None:
        """The fitted state a scan found (as fit(DataFrame) sets it from the frame)."""
        self.preprocessor_ = scan["preprocessor"]
        self._grid_cache = None
        self.feature_names_in_ = np.asarray(scan["feature_names"], dtype=object)
        self.n_features_in_ = len(scan["feature_names"])
        (self.seen_users_, self.seen_items_, self.user_features_, self.item_features_,
         self.context_features_, self._user_table, self._item_table) = scan["features"]
        columns, vocabulary, lengths = scan["bags"]
        self.bag_columns_, self.bag_vocabulary_, self.bag_lengths_ = (
            list(columns), dict(vocabulary), dict(lengths))

    def _stream_transform(self, scan: dict, target: str | None = None):
        """Arrow tables of the stream to ``(codes, continuous[, rating])``, vectorised."""
        from tabembed.streaming.interactions import FrameTransform

        preprocessor = scan["preprocessor"]
        columns, vocabulary, lengths = scan["bags"]
        encoder = EmbeddingRecommender(user_column=self.user_column,
                                       item_column=self.item_column)
        encoder.bag_columns_, encoder.bag_vocabulary_, encoder.bag_lengths_ = (
            list(columns), dict(vocabulary), dict(lengths))

        def encode(frame):
            codes, continuous = encoder._tensors(encoder._canonical_bags(frame), preprocessor)
            return codes.numpy(), continuous.numpy()

        return FrameTransform(scan["feature_names"], encode, target)

    def _ranking(self) -> str:
        ranking = RANKING if self.ranking == "auto" else self.ranking
        if ranking not in ("hybrid", "rating"):
            raise ValueError(f"ranking must be 'hybrid', 'rating' or 'auto', got {self.ranking!r}")
        return ranking

    def _auto(self) -> dict:
        """The values of this model's ``"auto"`` parameters."""
        return RECOMMENDER_AUTO[self.model]

    def _eval_data(self, eval_set, preprocessor):
        """Validation batches from ``(X_val, y_val[, sample_weight_val])``."""
        if isinstance(eval_set, list) and len(eval_set) == 1:
            eval_set = eval_set[0]
        if not (isinstance(eval_set, tuple | list) and len(eval_set) in (2, 3)):
            raise ValueError("eval_set must be (X_val, y_val) or (X_val, y_val, "
                             f"sample_weight_val), got {type(eval_set).__name__}")
        X_val, y_val, *weight = eval_set
        frame = self._canonical_bags(as_frame(X_val))
        check_rows(frame)
        ratings = _ratings(y_val, len(frame))
        weights = check_sample_weight(weight[0], len(frame)) if weight else None
        codes, continuous = self._tensors(frame, preprocessor)
        tensors = (codes, continuous, torch.tensor(ratings, dtype=torch.float32))
        return row_batches(tensors, np.arange(len(frame)), weights)

    def _model_kwargs(self, preprocessor, mean: float, rating_range, item_features=()) -> dict:
        sizes = preprocessor.embedding_sizes_
        side = [sizes[c] for c in preprocessor.cat_columns_[2:]]
        options = dict(n_users=sizes[self.user_column][0], n_items=sizes[self.item_column][0],
                       n_factors=self.n_factors, y_range=self._y_range(rating_range),
                       side_embedding_sizes=side,
                       n_continuous=len(preprocessor.cont_columns_), global_bias=mean)
        if self.bag_columns_:
            options["bags"] = [(len(self.bag_vocabulary_[c]) + 1, self.bag_lengths_[c],
                                "item" if c in item_features else "user")
                               for c in self.bag_columns_]
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
        users, items = _sorted_pairs(codes[:, 0].numpy(), codes[:, 1].numpy())
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
            elif column in getattr(self, "bag_columns_", []):
                raise ValueError(f"the multi-valued column {column!r} varies within users and "
                                 "within items; a bag must describe the user or the item")
            else:
                context_features.append(column)
        user_table = frame.drop_duplicates(self.user_column)[
            [self.user_column, *user_features]].set_index(self.user_column)
        item_table = frame.drop_duplicates(self.item_column)[
            [self.item_column, *item_features]].set_index(self.item_column)
        return (users, items, user_features, item_features, context_features,
                user_table, item_table)

    def save(self, path):
        """Write the fitted recommender to ``path`` (JSON + safetensors; see tabembed.load)."""
        return persistence.save(self, path)

    def _to_state(self) -> tuple[dict, dict]:
        if not hasattr(self, "learner_"):
            raise ValueError("this EmbeddingRecommender is not fitted yet; call fit before save")
        meta, tensors = persistence.network_state(self.learner_.model, self.model_kwargs_)
        tensors["seen_users"] = torch.from_numpy(
            np.ascontiguousarray(self.seen_users_, dtype=np.int64))   # int32 when streamed
        tensors["seen_items"] = torch.from_numpy(
            np.ascontiguousarray(self.seen_items_, dtype=np.int64))   # int32 when streamed
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
                "bags": {"columns": persistence.json_safe(self.bag_columns_),
                         "vocabulary": [self.bag_vocabulary_[c] for c in self.bag_columns_],
                         "lengths": [self.bag_lengths_[c] for c in self.bag_columns_]},
            },
        })
        ranker = getattr(self, "ranker_", None)
        if ranker is not None:
            meta["ranker"], ranker_tensors = ranker._to_state()
            tensors.update({f"ranker.{k}": v for k, v in ranker_tensors.items()})
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
        auto = {**recommender._auto()}
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
        bags = extra.get("bags", {"columns": [], "vocabulary": [], "lengths": []})
        recommender.bag_columns_ = list(bags["columns"])
        recommender.bag_vocabulary_ = dict(zip(bags["columns"], bags["vocabulary"], strict=True))
        recommender.bag_lengths_ = dict(zip(bags["columns"], bags["lengths"], strict=True))
        recommender.ranker_ = None
        if "ranker" in meta:
            recommender.ranker_ = ImplicitRecommender._from_state(
                meta["ranker"], {k[len("ranker."):]: v for k, v in tensors.items()
                                 if k.startswith("ranker.")}, device=device)
        return recommender

    # ------------------------------------------------------------ predicting

    def predict(self, X) -> np.ndarray:
        """Predicted ratings; unknown users or items get the prior (global and known biases)."""
        check_is_fitted(self, "learner_")
        frame = self._canonical_bags(frame_for_prediction(self, X))
        self._check_id_types(frame)
        codes, continuous = self._tensors(frame)
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

    # ------------------------------------------------------------ ranking

    def _item_support(self) -> np.ndarray:
        """Training interactions per item, in the order of the item vocabulary."""
        n_items = len(self.preprocessor_.categories_[self.item_column])
        return np.bincount(self.seen_items_, minlength=n_items + 1)[1:]

    def _ranking_weights(self, similarity: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(w, eligible)`` per item: the share ``n / (n + ranking_shrinkage)`` of its bias
        (or, for ``similarity``, of its cosine) kept when ranking, and whether it has
        ``min_support``."""
        support = self._item_support()
        auto_shrinkage, auto_minimum = (0, 0) if self._implicit_feedback else \
            RANKING_AUTO[self._ranking()]
        if similarity:
            auto_shrinkage = SIMILARITY_SHRINKAGE
        shrinkage = auto_shrinkage if self.ranking_shrinkage == "auto" else \
            self.ranking_shrinkage
        # On small data a tenth of the most-rated item's count, so lists never run empty.
        minimum = (min(auto_minimum, max(1, int(support.max(initial=0)) // 10))
                   if self.min_support == "auto" else self.min_support)
        if not (isinstance(shrinkage, int | float) and shrinkage >= 0):
            raise ValueError(f"ranking_shrinkage must be a number >= 0 or 'auto', "
                             f"got {self.ranking_shrinkage!r}")
        if not (isinstance(minimum, int | np.integer) and minimum >= 0):
            raise ValueError(f"min_support must be an integer >= 0 or 'auto', "
                             f"got {self.min_support!r}")
        weights = support / (support + shrinkage) if shrinkage else np.ones(len(support))
        return weights, support >= minimum

    def _grid_tables(self) -> tuple[torch.Tensor, ...]:
        """Encoded rows of every known user (row = user code; row 0 the unknown user) and
        every item (row = item position), each holding its own side's columns only."""
        cached = getattr(self, "_grid_cache", None)
        if cached is not None:
            return cached
        pre = self.preprocessor_
        columns = list(self.feature_names_in_)

        def encoded(id_column, table):
            ids = pd.Index(pre.categories_[id_column])
            frame = table.reindex(ids).reset_index(names=id_column)
            # Built column by column, not by inserting into ``frame``: with integer
            # names its columns can be a RangeIndex, and pandas 3.1 mislabels columns
            # inserted into one (names 0 and 2, then 1 added, came out as 0, 1, 2, 3).
            return self._tensors(pd.DataFrame(
                {column: frame[column] if column in frame.columns
                 else pd.Series(np.nan, index=frame.index) for column in columns}))

        def masks(id_column, features):
            codes, conts = self._side_masks(id_column, features)
            return codes.long(), conts.float()

        unknown = self._tensors(pd.DataFrame({c: [np.nan] for c in columns}))
        user_codes, user_cont = encoded(self.user_column, self._user_table)
        user_codes, user_cont = (torch.cat([unknown[0], user_codes]),
                                 torch.cat([unknown[1], user_cont]))
        item_codes, item_cont = encoded(self.item_column, self._item_table)
        user_mask, user_cont_mask = masks(self.user_column, self.user_features_)
        item_mask, item_cont_mask = masks(self.item_column, self.item_features_)
        cached = (user_codes * user_mask, user_cont * user_cont_mask,
                  item_codes * item_mask, item_cont * item_cont_mask)
        self._grid_cache = cached
        return cached

    def _member_states(self) -> list:
        """The weights to average over: each snapshot of an ensemble, else the model's own."""
        predictor = self.learner_.predictor
        return list(getattr(predictor, "snapshots", None) or [None])

    def _side_masks(self, id_column, features) -> tuple[torch.Tensor, torch.Tensor]:
        """Which columns of ``codes`` (bags included) and ``continuous`` belong to the side of
        ``id_column`` with side ``features``."""
        pre = self.preprocessor_
        codes = [c == id_column or c in features for c in pre.cat_columns_]
        for column in getattr(self, "bag_columns_", []):
            codes += [column in features] * self.bag_lengths_[column]
        conts = [c in features for c in pre.cont_columns_]
        return torch.tensor(codes, dtype=torch.bool), torch.tensor(conts, dtype=torch.bool)

    def _check_no_context(self) -> None:
        if self.context_features_:
            raise ValueError(
                f"columns {self.context_features_} vary within users and items (context "
                "features), so recommend() cannot fill them; score candidates with predict()"
            )

    @torch.inference_mode()
    def _grid_scores(self, user_codes: np.ndarray) -> np.ndarray:
        """Ranking scores ``[len(user_codes), n_items]`` in rating units: the predicted
        rating with each item's bias shrunk by its support (``ranking_shrinkage``)."""
        self._check_no_context()
        model = self.model_
        device = self.learner_.device
        users, users_cont, items, items_cont = (t.to(device) for t in self._grid_tables())
        rows = torch.as_tensor(user_codes, dtype=torch.long, device=users.device)
        weights, _ = self._ranking_weights()
        keep = torch.as_tensor(weights, dtype=torch.float32, device=users.device)
        step = len(rows) if isinstance(model, DotBias) else max(
            1, _NEURAL_GRID_ROWS // max(len(items), 1))
        states = self._member_states()
        final = {k: v.clone() for k, v in model.state_dict().items()} if states[0] else None
        was_training = model.training
        model.eval()
        total = None
        try:
            for state in states:
                if state is not None:
                    model.load_state_dict(self.learner_.predictor._state(state))
                # The bias share dropped by shrinkage, per item (code 0 is not an item).
                dropped = (1 - keep) * model.item_bias.weight[1:, 0]
                parts = []
                for start in range(0, len(rows), step):
                    chunk = rows[start:start + step]
                    logits = model.score_grid(users[chunk], users_cont[chunk], items, items_cont)
                    parts.append(output_range_(model.output_range, logits.sub_(dropped)))
                scores = parts[0] if len(parts) == 1 else torch.cat(parts)
                total = scores if total is None else total + scores
        finally:
            if final is not None:
                model.load_state_dict(final)
            model.train(was_training)
        if len(states) > 1:
            total /= len(states)
        scores = total.cpu().numpy()      # float32: half the memory
        ranker = getattr(self, "ranker_", None)
        if ranker is not None:      # in place: the grids are large
            scores *= RANKING_RATING_WEIGHT
            scores += ranker._grid_scores(user_codes)
        return scores

    def _seen_matrix(self) -> sp.csr_matrix:
        """Training (user code, item position) pairs as a sparse matrix (row 0: unknown)."""
        n_users = len(self.preprocessor_.categories_[self.user_column]) + 1
        n_items = len(self.preprocessor_.categories_[self.item_column])
        known = self.seen_items_ > 0      # a missing item id (code 0) is no item to skip
        matrix = sp.csr_matrix((np.ones(int(known.sum()), np.float32),
                                (self.seen_users_[known], self.seen_items_[known] - 1)),
                               shape=(n_users, n_items))
        matrix.sum_duplicates()
        return matrix

    def _top_k(self, users, k: int, exclude_seen: bool, filter_items
               ) -> tuple[np.ndarray, np.ndarray]:
        """Item positions ``[n, k]`` (-1: none left) and scores for the ``users`` ids."""
        codes = self.preprocessor_.encode(self.user_column, list(users)).astype(np.int64)
        item_ids = pd.Index(self.preprocessor_.categories_[self.item_column])
        _, eligible = self._ranking_weights()
        excluded = np.flatnonzero(~eligible)
        if filter_items is not None:
            wanted = item_ids.get_indexer(pd.Index(np.atleast_1d(np.asarray(filter_items,
                                                                            dtype=object))))
            excluded = np.union1d(excluded, wanted[wanted >= 0])
        seen = self._seen_matrix() if exclude_seen else None
        chunk = max(1, CHUNK_SCORES // max(len(item_ids), 1))
        found, values = [], []
        for start in range(0, len(codes), chunk):
            rows = codes[start:start + chunk]
            items, scores = top_k(self._grid_scores(rows), k,
                                  exclude=None if seen is None else seen[rows],
                                  exclude_columns=excluded)
            found.append(items)
            values.append(scores)
        width = min(k, len(item_ids))
        if not found:
            return np.zeros((0, width), np.int64), np.zeros((0, width))
        return np.concatenate(found), np.concatenate(values)

    def recommend(self, user, k: int = 10, *, exclude_seen: bool = True,
                  filter_items=None) -> pd.DataFrame:
        """The ``k`` best-ranked items for one user, or for each of a list of users.

        Ranking (``ranking``): by default the hybrid, an implicit ranker's
        score (which items this user would pick) plus the predicted rating
        (whether they would like them). With ``ranking="rating"``: the
        predicted rating, each item's bias shrunk toward zero by its support,
        ``bias * n / (n + ranking_shrinkage)`` for an item with ``n`` training
        ratings, and items below ``min_support`` ratings left out, so items
        with one or two high ratings do not crowd the lists;
        ``ranking_shrinkage=0, min_support=0`` ranks by the predicted rating
        alone. The measurements behind the defaults are in the comments of
        ``RANKING_AUTO`` and in bench/RESULTS.md ("Ranking").

        Parameters
        ----------
        user : id or list of ids
            An unknown user gets the items best for the average user.
        k : int
        exclude_seen : bool
            Leave out the items the user interacted with in training.
        filter_items : list of item ids, optional
            Items never to recommend (already in a basket, out of stock).

        Returns
        -------
        DataFrame
            For one user: columns ``item, score`` (``item`` named after
            ``item_column``), best first. For a list: ``user, item, score``,
            the users in the order given, each with up to ``k`` rows, best
            first. ``score`` is the ranking score (the hybrid's, or the
            adjusted predicted rating for ``ranking="rating"``). Scoring is
            vectorised over users, in chunks bounded in memory (about
            ``CHUNK_SCORES`` scores at a time); ties go to the lower item code.
        """
        check_is_fitted(self, "learner_")
        k = _check_k(k)
        single = np.ndim(user) == 0
        users = [user] if single else list(user)
        items, scores = self._top_k(users, k, exclude_seen, filter_items)
        item_ids = pd.Index(self.preprocessor_.categories_[self.item_column]).to_numpy()
        valid = items >= 0
        if single:
            return pd.DataFrame({self.item_column: item_ids[items[0][valid[0]]],
                                 "score": scores[0][valid[0]].astype(np.float64)})
        rows = np.repeat(np.arange(len(users)), valid.sum(1))
        return pd.DataFrame({self.user_column: pd.Index(users).to_numpy()[rows],
                             self.item_column: item_ids[items[valid]],
                             "score": scores[valid].astype(np.float64)})

    # Fold-in: the new user's vector and bias are fitted by Adam, the model frozen.
    _implicit_feedback = False
    _FOLD_IN_STEPS = 200
    _FOLD_IN_LR = 0.05

    def _fold_in_logits(self, positions: np.ndarray, ratings) -> torch.Tensor:
        """Scores ``[n_items]`` (before ``y_range``) of a user fitted to ``positions`` (item
        positions) and ``ratings`` (None: implicit feedback) with every other weight fixed."""
        model = self.model_
        if not isinstance(model, DotBias):
            raise ValueError("recommend_for_items (fold-in) needs model='dot': a neural "
                             "model's user vector enters its MLP, with no closed role to refit")
        self._check_no_context()
        device = self.learner_.device
        users, users_cont, items, items_cont = (t.to(device) for t in self._grid_tables())
        positions = torch.as_tensor(positions, dtype=torch.long, device=device)
        strength = self._auto()["embedding_l2"] if self.embedding_l2 == "auto" else \
            self.embedding_l2
        with torch.no_grad():       # the unknown user: zero vector and bias
            base = model.score_grid(users[:1], users_cont[:1], items, items_cont)[0]
            factors = model.item_factors.weight[1:].detach()
        if ratings is None and not self._implicit_feedback:
            return base
        vector = torch.zeros(factors.shape[1], device=device, requires_grad=True)
        bias = torch.zeros((), device=device, requires_grad=True)
        optimizer = optimizers.Adam([vector, bias], lr=self._FOLD_IN_LR)
        target = None if ratings is None else torch.tensor(np.asarray(ratings),
                                                           dtype=torch.float32, device=device)
        with torch.enable_grad():
            for _ in range(self._FOLD_IN_STEPS):
                logits = base + factors @ vector + bias
                if target is None:      # the full softmax over the catalogue
                    loss = -torch.log_softmax(logits, dim=0)[positions].mean()
                else:
                    loss = torch.mean((model.output_range(logits[positions]) - target) ** 2)
                loss = loss + strength * (vector.pow(2).sum() + bias.pow(2))
                optimizer.zero_grad()
                loss.backward()
                optimizers.step(optimizer)
        return (base + factors @ vector + bias).detach()

    def _fold_in_scores(self, positions: np.ndarray, ratings) -> np.ndarray:
        """Ranking scores of a folded-in user, as :meth:`_grid_scores` ranks known users."""
        logits = self._fold_in_logits(positions, ratings)
        weights, _ = self._ranking_weights()
        keep = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)
        with torch.no_grad():
            dropped = (1 - keep) * self.model_.item_bias.weight[1:, 0]
            scores = self.model_.output_range(logits - dropped).cpu().numpy().astype(np.float64)
        ranker = getattr(self, "ranker_", None)
        if ranker is not None:
            scores = ranker._fold_in_scores(positions, None) + RANKING_RATING_WEIGHT * scores
        return scores

    def recommend_for_items(self, items, k: int = 10, *, ratings=None,
                            filter_items=None) -> pd.DataFrame:
        """Recommendations for a new user from the items they interacted with, no retraining.

        The user's vector and bias are fitted to ``items`` with every item's
        parameters fixed ("fold-in", as ``recalculate_user=True`` in the
        ``implicit`` package): by the full softmax over the catalogue for
        implicit feedback, by the squared error of ``ratings`` for the explicit
        model (with the hybrid ranking, its ranker folds in from ``items``
        alone; without ``ratings`` the rating part is the prior). Needs
        ``model="dot"``.

        Parameters
        ----------
        items : list of item ids
            Unknown ids are ignored.
        k : int
        ratings : list of float, optional
            One per item (explicit model).
        filter_items : list of item ids, optional
            Never recommended (``items`` themselves are never recommended).

        Returns
        -------
        DataFrame with columns ``item, score``, best first.
        """
        check_is_fitted(self, "learner_")
        k = _check_k(k)
        item_ids = pd.Index(self.preprocessor_.categories_[self.item_column])
        positions = item_ids.get_indexer(pd.Index(np.atleast_1d(np.asarray(items, dtype=object))))
        known = positions >= 0
        if ratings is not None:
            ratings = np.asarray(ratings, dtype=np.float64).reshape(-1)
            if len(ratings) != len(positions):
                raise ValueError(f"{len(positions)} items but {len(ratings)} ratings; give one "
                                 "rating per item")
            ratings = ratings[known]
        positions = positions[known]
        if not len(positions):
            raise ValueError("none of the items was seen in training; a new user needs at "
                             "least one known item (recommend() serves unknown users the prior)")
        scores = self._fold_in_scores(positions, ratings)
        _, eligible = self._ranking_weights()
        excluded = np.union1d(np.flatnonzero(~eligible), positions)
        if filter_items is not None:
            wanted = item_ids.get_indexer(pd.Index(np.atleast_1d(np.asarray(filter_items,
                                                                            dtype=object))))
            excluded = np.union1d(excluded, wanted[wanted >= 0])
        best, values = top_k(scores[None, :], k, exclude_columns=excluded)
        keep = best[0] >= 0
        return pd.DataFrame({self.item_column: item_ids.to_numpy()[best[0][keep]],
                             "score": values[0][keep]})

    def recommend_all(self, k: int = 10, *, exclude_seen: bool = True,
                      filter_items=None) -> pd.DataFrame:
        """:meth:`recommend` for every user seen in training (columns ``user, item, score``)."""
        check_is_fitted(self, "learner_")
        return self.recommend(list(self.preprocessor_.categories_[self.user_column]), k,
                              exclude_seen=exclude_seen, filter_items=filter_items)

    def item_vectors(self, X=None) -> pd.DataFrame:
        """Items' full vectors: their factors plus their pooled multi-valued features.

        Without ``X``: every training item (equal to :attr:`item_embeddings_` when
        there are no multi-valued features). With ``X`` (the item column and
        item features, e.g. ``{"item": ["new"], "genres": ["Action|Sci-Fi"]}``):
        those rows, new items included, whose vectors come from their features.
        """
        check_is_fitted(self, "learner_")
        model = self.model_
        if X is None:
            codes = self._grid_tables()[2]
            index = pd.Index(self.preprocessor_.categories_[self.item_column],
                             name=self.item_column)
        else:
            frame = as_frame(X)
            index = pd.Index(frame[self.item_column], name=self.item_column)
            filled = frame.reindex(columns=list(self.feature_names_in_))
            codes = self._tensors(self._canonical_bags(filled))[0] * \
                self._side_masks(self.item_column, self.item_features_)[0].long()
        with torch.inference_mode():
            vectors = model.item_vectors(codes.to(self.learner_.device)).cpu().numpy()
        return pd.DataFrame(vectors, index=index,
                            columns=[f"factor_{i}" for i in range(vectors.shape[1])])

    def similar_items(self, item, k: int = 10, *, item_features=None) -> pd.DataFrame:
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
        """
        check_is_fitted(self, "learner_")
        k = _check_k(k)
        ranker = getattr(self, "ranker_", None)
        source = ranker if ranker is not None else self
        vectors = source.item_vectors()
        position = vectors.index.get_indexer([item])[0]
        if position >= 0:
            target = vectors.to_numpy()[position]
        elif item_features is not None:
            features = (item_features if isinstance(item_features, dict)
                        else as_frame(item_features).iloc[0].to_dict())   # a one-row table
            row = {self.item_column: [item], **{c: [v] for c, v in features.items()}}
            target = source.item_vectors(pd.DataFrame(row)).to_numpy()[0]
        else:
            raise KeyError(f"item {item!r} was not seen in training; similar_items needs a "
                           "known item, or the new item's item_features")
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


_I = IMPLICIT_DEFAULTS


@persistence.persistable
class ImplicitRecommender(EmbeddingRecommender):
    """Collaborative filtering from implicit feedback: (user, item) interactions, no ratings.

    Each row of ``X`` is one interaction (a click, a play, a rating above a
    threshold). The model (dot-bias or neural CF, as in
    :class:`EmbeddingRecommender`, with side features) learns to score each
    interaction above items the user did not pick, drawn at random
    (:class:`~tabembed.sampling.NegativeSampling`), through the same training
    loop, schedules and averaging. ``recommend``, ``recommend_all``,
    ``similar_items``, the embeddings and ``save``/``tabembed.load`` work as for
    the explicit recommender; ``predict`` returns the score of each pair (a
    logit: higher means more likely; not a rating) and ``score`` is NDCG@10.

    Parameters
    ----------
    loss : {"softmax", "bpr"} or "auto"
        ``"softmax"``: the sampled softmax, each positive against
        ``n_negatives`` items drawn once per batch and shared by its rows;
        ``"bpr"``: Bayesian personalised ranking, ``n_negatives`` draws per
        row. ``"auto"``: the softmax for ``model="dot"`` (the stronger, see
        bench/RESULTS.md "Ranking"), BPR for ``model="neural"``, whose MLP
        must score every negative of every row (validation recall@10 on
        ml-100k: BPR 0.183 in 24 s; softmax 0.105 after 2 epochs in 211 s with
        256 negatives, 0.025 with 16).
    negatives : {"uniform", "popularity"} or "auto"
        How negatives are drawn: every item alike, or in proportion to
        ``count ** 0.75``. With the softmax, popularity draws are corrected
        by subtracting ``log q`` from the scores (Yi et al., 2019). ``"auto"``:
        popularity for the softmax, uniform for BPR (``IMPLICIT_AUTO``).
    n_negatives : int or "auto"
        ``"auto"``: ``tabembed.config.IMPLICIT_AUTO`` for the loss.
    embedding_l2 : float or "auto"
        L2 penalty on the factors and biases of the batch's users, positives
        and negatives; ``"auto"`` as ``IMPLICIT_AUTO``.
    ranking_shrinkage, min_support : float, int or "auto"
        As in :class:`EmbeddingRecommender`. ``"auto"``: no shrinkage in
        ``recommend`` (a ranking loss already scores rarely seen items low)
        and none required support; ``similar_items`` shrinks by 25.
    Other parameters are those of :class:`EmbeddingRecommender`; the
    defaults differ (``tabembed.config.IMPLICIT_DEFAULTS``).
    """

    def __init__(
        self,
        *,
        user_column="user",
        item_column="item",
        model="dot",
        loss="auto",
        negatives="auto",
        n_negatives="auto",
        n_factors=DEFAULT_FACTORS,
        hidden=(100, 50),
        dropout=DEFAULT_NEURAL_DROPOUT,
        epochs=_I.epochs,
        batch_size=_I.batch_size,
        lr=_I.lr,
        schedule=_I.schedule,
        cycle_len=_I.cycle_len,
        cycle_mult=_I.cycle_mult,
        averaging=_I.averaging,
        ema_decay=_I.ema_decay,
        swa_start=_I.swa_start,
        swa_lr=_I.swa_lr,
        weight_decay=_I.weight_decay,
        embedding_l2="auto",
        multi_valued="auto",
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

    _implicit_feedback = True

    def _auto(self) -> dict:
        return {"batch_size": _I.batch_size, "weight_decay": _I.weight_decay,
                **IMPLICIT_AUTO.get(self._loss(), IMPLICIT_AUTO["softmax"])}

    def _loss(self) -> str:
        """The loss: ``"auto"`` is the softmax for dot-bias, BPR for neural CF."""
        if self.loss == "auto":
            return "bpr" if self.model == "neural" else "softmax"
        return self.loss

    def _interactions(self, X, y, sample_weight):
        """The rows of ``X`` that are interactions (``y > 0`` when ``y`` is given)."""
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        missing = [c for c in (self.user_column, self.item_column) if c not in frame.columns]
        if missing:
            raise ValueError(f"X has {frame.shape[1]} feature(s) and no column {missing}; set "
                             f"user_column/item_column (X has {list(frame.columns)})")
        weights = None if sample_weight is None else check_sample_weight(sample_weight,
                                                                         len(frame))
        if y is not None:
            keep = _ratings(y, len(frame)) > 0
            frame = frame[keep]
            weights = None if weights is None else weights[keep]
            check_rows(frame, minimum=2)
        if weights is not None and np.all(weights == weights[0]):
            weights = None
        return frame, weights

    def fit(self, X, y=None, sample_weight=None, *, eval_set=None):
        """Learn embeddings that rank each user's interactions above other items.

        Parameters
        ----------
        X : DataFrame, or Parquet to stream
            One row per interaction: the user and item columns, and optional
            side-feature columns (user, item and multi-valued features as in
            :class:`EmbeddingRecommender`). Or a Parquet file, folder, URI,
            list of files or ``pyarrow.dataset.Dataset`` of such rows, every
            row an interaction, streamed in bounded memory as
            :meth:`EmbeddingRecommender.fit` streams ratings: ``fit("clicks/")``.
        y : array-like, optional
            When given, only rows with ``y > 0`` are interactions (0/1 click
            labels; threshold ratings yourself, e.g. ``X[ratings >= 4]``).
        sample_weight : array-like, optional
            Per-interaction weights of the loss (a confidence, a play count).
        eval_set : DataFrame or (X_val, y_val), optional
            Held-out interactions whose sampled loss is reported each epoch
            (and watched by early stopping).
        """
        if is_stream(X):
            return self._fit_stream(X, y, sample_weight=sample_weight, eval_set=eval_set)
        loss, config, seeds, strength, sampling = self._options()
        frame, weights = self._interactions(X, y, sample_weight)
        frame = self._prepare(frame)
        cats, conts = self._roles(frame)
        preprocessor = TabularPreprocessor(
            cat_names=[self.user_column, self.item_column, *cats], cont_names=conts,
            date_names=[], add_missing_indicators=False,
        ).fit(frame.drop(columns=self.bag_columns_))
        self.preprocessor_ = preprocessor
        codes, continuous = self._tensors(frame)
        features = self._features(frame, codes)
        self._grid_cache = None
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        (self.seen_users_, self.seen_items_, self.user_features_, self.item_features_,
         self.context_features_, self._user_table, self._item_table) = features
        sampling = self._sampling(sampling, codes[:, 1].numpy())
        rows, valid = np.arange(len(frame)), None
        if eval_set is not None:
            valid_frame, _ = self._interactions(*_eval_pair(eval_set), None)
            valid_codes, valid_continuous = self._tensors(self._canonical_bags(valid_frame))
            valid = NegativeSampling(
                TensorBatches((valid_codes, valid_continuous), batch_size=config.batch_size,
                              has_target=False), random_state=seeds.split, fixed=True,
                **sampling)
        elif config.early_stopping:
            chosen = np.random.default_rng(seeds.split).random(len(frame)) < \
                config.validation_fraction
            rows = rows[~chosen]
            valid = NegativeSampling(
                TensorBatches((codes[chosen], continuous[chosen]), batch_size=config.batch_size,
                              has_target=False), random_state=seeds.split, fixed=True,
                **sampling)
        tensors = [codes[rows], continuous[rows]]
        if weights is not None:
            tensors.append(torch.as_tensor(weights[rows], dtype=torch.float32))
        positives = TensorBatches(tensors, batch_size=config.batch_size, shuffle=True,
                                  has_target=False, has_weight=weights is not None,
                                  random_state=0)
        train_data = NegativeSampling(positives, random_state=seeds.shuffle, **sampling)
        return self._train_ranking(loss, config, seeds, strength, train_data, valid,
                                   sampling["probabilities"])

    def _fit_stream(self, source, y, *, sample_weight, eval_set, scan=None):
        """Fit from Parquet by streaming: every row of ``source`` is an interaction.

        As :meth:`EmbeddingRecommender._fit_stream`: one pass for the
        vocabularies, tables and the (user, item) pairs (int32, 8 bytes an
        interaction: seen items and popularity negatives), then positives
        streamed by :class:`~tabembed.streaming.ParquetBatches` (each process
        its row groups under torchrun) with negatives drawn per batch, each
        process from its own seeded generator.
        """
        if y is not None:
            raise ValueError(
                f"fit(source, y={y!r}): from a Parquet stream every row is an interaction, and "
                "rows cannot be dropped from a stream's batches; write the interactions alone "
                "to Parquet first (e.g. pyarrow.dataset.write_dataset(dataset.filter("
                "pyarrow.compute.field(y) > 0), ...)) and fit(that) without y")
        if sample_weight is not None or eval_set is not None:
            raise ValueError("sample_weight and eval_set need a DataFrame; a Parquet stream "
                             "takes no options (use early_stopping=True to hold rows out of "
                             "the stream)")
        loss, config, seeds, strength, sampling = self._options()
        split = _stream_split(config, seeds)
        if scan is None:
            scan = self._scan_stream(source, None, split)
        self._set_scan(scan)
        sampling = self._sampling(sampling, self.seen_items_)
        transform = self._stream_transform(scan)
        positives, valid = _stream_sources(scan["row_groups"], transform, split, config, seeds,
                                           sharded_validation=False,
                                           valid_batch_size=config.batch_size)
        if valid is not None:
            valid = NegativeSampling(valid, random_state=seeds.split, fixed=True, **sampling)
        train_data = NegativeSampling(positives, random_state=seeds.shuffle, **sampling)
        return self._train_ranking(loss, config, seeds, strength, train_data, valid,
                                   sampling["probabilities"])

    def _options(self) -> tuple:
        """``(loss, config, seeds, embedding_l2, sampling options)`` from the parameters."""
        if self.model not in RECOMMENDER_AUTO:
            raise ValueError(f"model must be 'dot' or 'neural', got {self.model!r}")
        if self._loss() not in RANKING_LOSSES:
            raise ValueError(f"loss must be one of {RANKING_LOSSES} or 'auto', "
                             f"got {self.loss!r}")
        loss = self._loss()
        seed = draw_seed(self.random_state)
        auto = self._auto()
        config = TrainingConfig.from_params(self.get_params(), seed=seed, auto=auto)
        strength = auto["embedding_l2"] if self.embedding_l2 == "auto" else self.embedding_l2
        if not (isinstance(strength, int | float) and strength >= 0):
            raise ValueError(f"embedding_l2 must be a number >= 0 or 'auto', "
                             f"got {self.embedding_l2!r}")
        n_negatives = auto["n_negatives"] if self.n_negatives == "auto" else self.n_negatives
        if not (isinstance(n_negatives, int | np.integer) and n_negatives >= 1):
            raise ValueError(f"n_negatives must be a positive integer or 'auto', "
                             f"got {self.n_negatives!r}")
        negatives = auto["negatives"] if self.negatives == "auto" else self.negatives
        return (loss, config, Seeds.from_seed(seed), strength,
                {"n_negatives": int(n_negatives), "negatives": negatives})

    def _sampling(self, options: dict, item_codes: np.ndarray) -> dict:
        """NegativeSampling's options; popularity from every interaction's item code."""
        n_items = len(self.preprocessor_.categories_[self.item_column])
        probabilities = sampling_probabilities(item_codes, n_items, kind=options["negatives"])
        return dict(n_items=n_items, n_negatives=options["n_negatives"],
                    probabilities=probabilities, shared=self._loss() == "softmax")

    def _train_ranking(self, loss, config, seeds, strength, train_data, valid, probabilities):
        """Train the ranking model on ``train_data`` and set the fitted state."""
        self.rating_range_ = (1.0, 1.0)
        log_q = None
        if probabilities is not None and loss == "softmax":
            log_q = torch.from_numpy(np.log(np.concatenate([[1.0], probabilities])))
        item_codes, item_continuous, item_columns, item_numeric = self._item_side()
        model_kwargs = self._model_kwargs(self.preprocessor_, 0.0, self.rating_range_,
                                          self.item_features_)
        with isolated_random_state():
            torch.manual_seed(seeds.init)
            model = (NeuralCF if self.model == "neural" else DotBias)(**model_kwargs)
            sparse_tables_if_large(model, config.device)
            scorer = CandidateScores(model, item_codes, item_continuous, item_columns,
                                     item_numeric, log_q)
            result = train(config, scorer, ranking_loss(loss), train_data, valid,
                           penalty=EmbeddingPenalty(strength) if strength else None)
        snapshots = _model_snapshots(result.learner)
        self.model_, self.model_kwargs_ = model, model_kwargs
        self.training_config_ = config
        self.learner_ = inference_learner(model, loss_for_task("regression"),
                                          output_activation=flatten, device=config.device,
                                          snapshots=snapshots)
        self.history_ = result.history
        self.lr_ = result.lr
        return self

    def _item_side(self) -> tuple[torch.Tensor, ...]:
        """Item codes ``c`` -> their side's columns (row 0 zeros), and the side's masks."""
        items, items_cont = self._grid_tables()[2:]
        item_mask, numeric = self._side_masks(self.item_column, self.item_features_)
        pad = torch.zeros(1, items.shape[1], dtype=items.dtype)
        pad_cont = torch.zeros(1, items_cont.shape[1], dtype=items_cont.dtype)
        return (torch.cat([pad, items]), torch.cat([pad_cont, items_cont]), item_mask, numeric)

    def score(self, X, y=None, sample_weight=None) -> float:
        """NDCG@10 of :meth:`recommend` for the users of ``X`` against their rows of ``X``
        (those with ``y > 0`` when ``y`` is given); training items excluded."""
        frame, _ = self._interactions(X, y, None)
        users = pd.unique(frame[self.user_column])
        lists = self.recommend(list(users), k=10)
        return evaluate(lists, frame, k=10, user_column=self.user_column,
                        item_column=self.item_column, metrics=("ndcg",))["ndcg@10"]

    def _y_range(self, rating_range):
        return None


def _eval_pair(eval_set) -> tuple:
    """``(X_val, y_val or None)`` from a frame or a tuple."""
    if isinstance(eval_set, list) and len(eval_set) == 1:
        eval_set = eval_set[0]
    if isinstance(eval_set, tuple | list):
        if len(eval_set) not in (1, 2):
            raise ValueError("eval_set must be X_val or (X_val, y_val)")
        return (eval_set[0], eval_set[1] if len(eval_set) == 2 else None)
    return eval_set, None


def _model_snapshots(learner) -> list[dict]:
    """An ensemble's snapshots of the wrapped model, as state dicts of the model alone."""
    predictor = learner.predictor
    if predictor is None or not getattr(predictor, "snapshots", None):
        return []
    prefix = "model."
    return [{k[len(prefix):]: v for k, v in predictor._state(s).items() if k.startswith(prefix)}
            for s in predictor.snapshots]


# Rows a streamed fit transforms and shuffles at once (ParquetBatches' buffer).
STREAM_BUFFER_ROWS = 1 << 18


def _stream_split(config: TrainingConfig, seeds: Seeds):
    """The rows a streamed fit holds out (``early_stopping``): a hash of their position."""
    from tabembed.streaming import ValidationSplit

    if not config.early_stopping:
        return None
    return ValidationSplit(config.validation_fraction, seed=seeds.split)


def _stream_sources(row_groups, transform, split, config: TrainingConfig, seeds: Seeds, *,
                    sharded_validation: bool, valid_batch_size: int = EVALUATION_BATCH_SIZE):
    """The shuffled training stream (this process's shard under torchrun) and the
    validation stream (sharded, or whole on every process for sampled losses)."""
    from tabembed.streaming import ParquetBatches, Part

    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    # batch_size counts the rows of one step over all processes, as in memory.
    per_process = max(1, -(-config.batch_size // world_size))
    part = Part(row_groups, split, "train")
    train_data = ParquetBatches(part, transform, batch_size=per_process, shuffle=True,
                                buffer_rows=STREAM_BUFFER_ROWS, random_state=seeds.shuffle,
                                rank=rank, world_size=world_size)
    if split is None:
        return train_data, None
    shard = dict(rank=rank, world_size=world_size) if sharded_validation else {}
    valid = ParquetBatches(part.other(), transform, batch_size=valid_batch_size,
                           buffer_rows=STREAM_BUFFER_ROWS, **shard)
    return train_data, valid


def _stream_ratings(series: pd.Series, name: str) -> np.ndarray:
    """One row group's ratings, checked as fit(DataFrame) checks ``y``."""
    if series.isna().any():
        raise ValueError(f"the rating column {name!r} has {int(series.isna().sum())} missing "
                         "value(s) in a row group; drop those rows first")
    try:
        ratings = series.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the rating column {name!r} must be numeric, got {series.dtype}"
                         ) from error
    if not np.isfinite(ratings).all():
        raise ValueError(f"the rating column {name!r} has infinite values; drop them")
    if len(ratings) and np.abs(ratings).max() > _MAX_RATING:
        raise ValueError(f"the rating column {name!r} holds rating(s) as large as "
                         f"{np.abs(ratings).max():.3g}; ratings must be within "
                         f"+-{_MAX_RATING:g}: rescale them")
    return ratings
