"""What both recommenders share: their parameters, the fit's data, top-k, similar items.

:class:`Recommender` is the base of :class:`EmbeddingRecommender` (ratings)
and :class:`ImplicitRecommender` (interactions). A fit scans its data once
(:mod:`~tabembed.recommenders.interaction_data`), trains, and adopts the
fitted state at the end. Serving is the same for both: a
:class:`~tabembed.recommenders.scoring.GridScorer` scores users x items, and
each subclass says how its scores are made (:meth:`Recommender._scores`).
On large catalogues ``recommend`` and ``similar_items`` look candidates up in
an approximate nearest-neighbour index
(:mod:`~tabembed.recommenders.nearest_neighbours`) and score those exactly.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_is_fitted

from tabembed import defaults
from tabembed._validation import (
    as_frame,
    check_finite_predictions,
    check_rows,
    frame_for_prediction,
)
from tabembed.estimators.base import LOOP_CONSTRAINTS, TrainedEstimator
from tabembed.estimators.parameters import (
    COLUMN_NAMES,
    FRACTION,
    NON_NEGATIVE,
    NONE,
    POSITIVE_INT,
    WIDTHS,
    InstanceOf,
    Interval,
    Options,
)
from tabembed.models import DotBias, NeuralCF, loss_for_task
from tabembed.ranking_metrics import top_k
from tabembed.recommenders.bags import BagEncoder
from tabembed.recommenders.fold_in import fold_in_logits
from tabembed.recommenders.indexed_ranking import IndexedRanking
from tabembed.recommenders.interaction_data import Interactions, encode
from tabembed.recommenders.scoring import (
    GridScorer,
    check_k,
    grid_tables,
    ranking_weights,
    seen_matrix,
    top_k_items,
)
from tabembed.recommenders.side_features import SideFeatures
from tabembed.recommenders.similarity import ItemSimilarity
from tabembed.training import distributed
from tabembed.training.learner import pick_device

__all__ = ["RECOMMENDER_CONSTRAINTS", "RECOMMENDER_PARAMETERS_DOC", "Recommender"]

_AUTO = Options(("auto",))
RECOMMENDER_CONSTRAINTS = {
    **LOOP_CONSTRAINTS,
    "user_column": [InstanceOf((str, int, np.integer), "a column name")],
    "item_column": [InstanceOf((str, int, np.integer), "a column name")],
    "model": [Options(("dot", "neural"))],
    "n_factors": [POSITIVE_INT],
    "hidden": [WIDTHS],
    "dropout": [FRACTION],
    "weight_decay": [NON_NEGATIVE, _AUTO],
    "embedding_l2": [NON_NEGATIVE, _AUTO],
    "multi_valued": [_AUTO, COLUMN_NAMES],
    "user_features": [COLUMN_NAMES, NONE],
    "item_features": [COLUMN_NAMES, NONE],
    "ranking_shrinkage": [NON_NEGATIVE, _AUTO],
    "min_support": [Interval(Integral, 0, None), _AUTO],
}

RECOMMENDER_PARAMETERS_DOC = """\
user_column, item_column : str
    Names of the user and item columns of ``X``.
model : {"dot", "neural"}
    :class:`~tabembed.models.DotBias` or :class:`~tabembed.models.NeuralCF`.
n_factors : int
hidden, dropout : MLP of the neural model.
embedding_l2 : float or "auto"
    An L2 penalty on the user and item factors and biases a batch uses (the
    classic matrix-factorisation regulariser); ``weight_decay`` is AdamW's
    decoupled decay of every weight. ``"auto"``: :mod:`tabembed.defaults`.
multi_valued : "auto" or list of str
    Side-feature columns holding several values per row (a list, or a
    ``"|"``-separated string such as genres ``"Action|Comedy"``): each value
    gets an embedding, pooled by mean (``nn.EmbeddingBag``) into the user's or
    item's vector, so a new item with known genres gets a vector too.
    ``"auto"``: list-valued columns and string columns in which at least a
    tenth of the values hold ``"|"``; ``[]``: none.
user_features, item_features : list of str, optional
    The side columns that describe users, and those that describe items (as
    LightFM names them); other side columns are context features, which
    ``predict`` uses and ``recommend`` cannot fill. ``None`` (both): inferred,
    a column constant per item is an item feature, one constant per user a
    user feature; ``fit`` warns about the context features it finds.
ranking_shrinkage : float or "auto"
    How :meth:`recommend` and :meth:`similar_items` discount items with few
    training interactions: an item with ``n`` keeps ``n / (n + shrinkage)``
    of its bias (and of its similarity). ``"auto"``: see each class; in
    ``similar_items`` 25 (``tabembed.defaults.SIMILARITY_SHRINKAGE``).
min_support : int or "auto"
    Items with fewer training interactions are never recommended nor returned
    as similar."""


def _positions(ids: pd.Index, values) -> np.ndarray:
    return ids.get_indexer(pd.Index(np.atleast_1d(np.asarray(values, dtype=object))))


def _check_one_id_type(ids: pd.Series, column) -> None:
    """Ids of mixed types that print alike (1 and "1") would be two users: an error."""
    if ids.dtype != object or pd.api.types.infer_dtype(ids, skipna=True) not in (
            "mixed", "mixed-integer", "mixed-integer-float"):
        return
    distinct = pd.Series(pd.unique(ids.dropna()), dtype=object)
    printed = distinct.astype(str)
    clash = printed.duplicated(keep=False)
    if clash.any():
        examples = distinct[clash].head(4).tolist()
        raise ValueError(
            f"the {column!r} column mixes types whose ids print alike ({examples}): they "
            f"would be different users or items. Convert the column to one type first, e.g. "
            f"X[{column!r}] = X[{column!r}].astype(str)")


def _read_only(arrays: tuple) -> tuple:
    """Cached arrays, shared by every call: made read-only so no caller changes them."""
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _arrow_ids(ids, column):
    """A vocabulary of ids as an Arrow array (one type, for a Parquet column)."""
    import pyarrow as pa

    try:
        return pa.array(pd.Index(ids).to_numpy())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
        raise TypeError(f"the {column!r} ids mix types ({error}); Parquet needs one type per "
                        f"column: refit with X[{column!r}] = X[{column!r}].astype(str)") from error


def sparse_tables_if_large(model, device) -> None:
    """Large user and item tables train with sparse gradients and lazy Adam (a step costs
    the batch's rows, not the tables'); see ``SPARSE_TABLE_MIN_ROWS``."""
    rows = model.user_factors.num_embeddings + model.item_factors.num_embeddings
    if (rows >= defaults.SPARSE_TABLE_MIN_ROWS and distributed.get_world_size() == 1
            and pick_device(device).type == "cpu"):
        model.set_sparse_gradients(True)


def flatten(output: torch.Tensor) -> torch.Tensor:
    """Ratings (or scores) ``[n]`` from the model's ``[n, 1]`` output."""
    return output.reshape(-1)


class EmbeddingPenalty:
    """``strength * model.embedding_penalty(codes)``, for the Learner's ``penalty`` hook."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, model, inputs) -> torch.Tensor:
        return self.strength * model.embedding_penalty(*inputs)


class Recommender(ItemSimilarity, IndexedRanking, TrainedEstimator):
    """The shared part of the two recommenders (see the module docstring)."""

    _parameter_constraints: ClassVar[dict] = RECOMMENDER_CONSTRAINTS
    _model_classes: ClassVar[tuple] = (DotBias, NeuralCF)
    _docstring_parts: ClassVar[dict] = {"recommender_parameters": RECOMMENDER_PARAMETERS_DOC}

    # ------------------------------------------------------------ subclass hooks

    def _scores(self, user_codes: np.ndarray) -> np.ndarray:
        """Ranking scores ``[users, items]`` of users given by code."""
        raise NotImplementedError

    def _fold_in_scores(self, positions: np.ndarray, ratings) -> np.ndarray:
        """Ranking scores ``[items]`` of a new user who picked the items at ``positions``."""
        raise NotImplementedError

    def _ranking_auto(self) -> tuple[float, int]:
        """``(ranking_shrinkage, min_support)`` for ``"auto"`` in ``recommend``."""
        raise NotImplementedError

    def _similarity_scorer(self) -> GridScorer:
        """The scorer whose item vectors ``similar_items`` compares."""
        return self.scorer_

    # ------------------------------------------------------------ fitting

    def _frame(self, X) -> pd.DataFrame:
        """``X`` as a DataFrame with the user and item columns."""
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        missing = [c for c in (self.user_column, self.item_column) if c not in frame.columns]
        if missing:
            raise ValueError(f"X has {frame.shape[1]} feature(s) and no column {missing}; set "
                             f"user_column/item_column (X has {list(frame.columns)})")
        for column in (self.user_column, self.item_column):
            _check_one_id_type(frame[column], column)
        return frame

    @staticmethod
    def _one_column(y, n_rows: int) -> np.ndarray:
        values = np.asarray(y)
        if values.ndim == 2 and values.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                          "flattened to (n_samples,)", DataConversionWarning, stacklevel=4)
            values = values.reshape(-1)
        if len(values) != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {len(values)}")
        return values

    def _strength(self) -> float:
        """The embedding penalty's strength (``embedding_l2``, "auto" resolved)."""
        return self._auto_values()["embedding_l2"] if self.embedding_l2 == "auto" \
            else float(self.embedding_l2)

    def _roles(self) -> dict:
        return {"user_features": self.user_features, "item_features": self.item_features}

    def _model_kwargs(self, data: Interactions, mean: float, y_range) -> dict:
        preprocessor = data.preprocessor
        sizes = preprocessor.embedding_sizes_
        options = dict(n_users=sizes[self.user_column][0], n_items=sizes[self.item_column][0],
                       n_factors=self.n_factors, y_range=y_range,
                       side_embedding_sizes=[sizes[c] for c in preprocessor.cat_columns_[2:]],
                       n_continuous=len(preprocessor.cont_columns_), global_bias=mean)
        if data.bags.columns:
            options["bags"] = [(n, length, "item" if c in data.sides.item_features else "user")
                               for c, (n, length) in zip(data.bags.columns, data.bags.sizes(),
                                                         strict=True)]
        if self.model == "neural":
            options.update(hidden=tuple(self.hidden), dropout=self.dropout)
        return options

    def _new_model(self, kwargs: dict, device, bags: BagEncoder):
        model = (NeuralCF if self.model == "neural" else DotBias)(**kwargs)
        model.attach_bag_tables(bags.tables[c] for c in bags.columns)
        sparse_tables_if_large(model, device)
        return model

    @staticmethod
    def _data_state(data: Interactions) -> dict:
        """The fitted attributes a scan gives (as ``fit`` sets them, all at once)."""
        return {
            "preprocessor_": data.preprocessor, "bags_": data.bags, "sides_": data.sides,
            "seen_users_": data.seen_users, "seen_items_": data.seen_items,
            "feature_names_in_": np.asarray(data.feature_names, dtype=object),
            "n_features_in_": len(data.feature_names), "rating_range_": data.rating_range,
            "_scorer_cache": None, "_index_cache": None, "_serving_cache": None,
        }

    @property
    def scorer_(self) -> GridScorer:
        """The fitted model's users x items scorer (built at first use, then kept)."""
        check_is_fitted(self, "learner_")
        if getattr(self, "_scorer_cache", None) is None:
            tables = grid_tables(self.preprocessor_, self.bags_, self.sides_,
                                 self.feature_names_in_, self.user_column, self.item_column)
            predictor = self.learner_.predictor
            snapshots = predictor.snapshot_states() if predictor is not None else []
            self._scorer_cache = GridScorer(self.model_, tables, snapshots=snapshots,
                                            device=self.learner_.device)
        return self._scorer_cache

    # ------------------------------------------------------------ fitted views

    @property
    def bag_columns_(self) -> list:
        """The multi-valued side-feature columns (``bag_vocabulary_``: their tokens)."""
        return list(self.bags_.columns)

    @property
    def bag_vocabulary_(self) -> dict:
        return dict(self.bags_.vocabulary)

    @property
    def bag_lengths_(self) -> dict:
        return dict(self.bags_.lengths)

    @property
    def user_features_(self) -> list:
        return self.sides_.user_features

    @property
    def item_features_(self) -> list:
        return self.sides_.item_features

    @property
    def context_features_(self) -> list:
        return self.sides_.context_features

    @property
    def user_embeddings_(self) -> pd.DataFrame:
        check_is_fitted(self, "learner_")
        return self._embeddings(self.model_.user_factors, self.user_column)

    @property
    def item_embeddings_(self) -> pd.DataFrame:
        check_is_fitted(self, "learner_")
        return self._embeddings(self.model_.item_factors, self.item_column)

    def _embeddings(self, table: torch.nn.Embedding, column) -> pd.DataFrame:
        weights = table.weight.detach().cpu().numpy()[1:]    # row 0 is the unknown token
        index = pd.Index(self.preprocessor_.categories_[column], name=column)
        return pd.DataFrame(weights, index=index,
                            columns=[f"factor_{i}" for i in range(weights.shape[1])])

    # ------------------------------------------------------------ predicting

    def _predict_values(self, X) -> np.ndarray:
        """The model's output for each row of ``X`` (a rating, or an implicit score)."""
        check_is_fitted(self, "learner_")
        frame = self.bags_.canonical(frame_for_prediction(self, X))
        self._check_id_types(frame)
        codes, continuous = encode(self.preprocessor_, self.bags_, frame)
        values = self.learner_.predict((codes, continuous)).numpy().astype(np.float64)
        return check_finite_predictions(
            values, lambda row: self.preprocessor_.describe_extreme(continuous.numpy(), row))

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

    def _serving(self, name: str, make):
        """``make()``, computed once per fit: what every ``recommend`` call reads (a
        million items' ids, the seen-items matrix) and a fit fixes."""
        cache = getattr(self, "_serving_cache", None)
        if cache is None:
            cache = self._serving_cache = {}
        if name not in cache:
            cache[name] = make()
        return cache[name]

    def _item_ids(self) -> pd.Index:
        return self._serving("item_ids", lambda: pd.Index(
            self.preprocessor_.categories_[self.item_column]))

    def _item_support(self) -> np.ndarray:
        """Training interactions per item, in the order of the item vocabulary."""
        n_items = len(self.preprocessor_.categories_[self.item_column])
        return self._serving("support", lambda: np.bincount(
            self.seen_items_, minlength=n_items + 1)[1:])

    def _ranking_weights(self, similarity: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(w, eligible)`` per item for ``recommend`` (or ``similar_items``)."""
        support = self._item_support()
        auto_shrinkage, auto_minimum = self._ranking_auto()
        if similarity:
            auto_shrinkage = defaults.SIMILARITY_SHRINKAGE
        shrinkage = auto_shrinkage if self.ranking_shrinkage == "auto" else \
            self.ranking_shrinkage
        # On small data a tenth of the most-rated item's count, so lists never run empty.
        minimum = (min(auto_minimum, max(1, int(support.max(initial=0)) // 10))
                   if self.min_support == "auto" else self.min_support)
        return self._serving(("weights", float(shrinkage), int(minimum)),
                             lambda: _read_only(ranking_weights(support, shrinkage, minimum)))

    def _check_no_context(self) -> None:
        if self.context_features_:
            raise ValueError(
                f"columns {self.context_features_} vary within users and items (context "
                "features), so recommend() cannot fill them; score candidates with "
                "predict(), or name the user and item features (user_features=, "
                "item_features=) when fitting"
            )

    def _excluded(self, filter_items, also=()) -> np.ndarray:
        """Item positions never to return: below ``min_support``, ``filter_items``, ``also``."""
        _, eligible = self._ranking_weights()
        excluded = np.union1d(np.flatnonzero(~eligible), np.asarray(also, dtype=np.int64))
        if filter_items is not None:
            wanted = _positions(self._item_ids(), filter_items)
            excluded = np.union1d(excluded, wanted[wanted >= 0])
        return excluded

    def recommend(self, user, k: int = 10, *, exclude_seen: bool = True,
                  filter_items=None, index: str = "auto") -> pd.DataFrame:
        """The ``k`` best-ranked items for one user, or for each of a list of users.

        Parameters
        ----------
        user : id or list of ids
            An unknown user gets the items best for the average user.
        k : int
        exclude_seen : bool
            Leave out the items the user interacted with in training.
        filter_items : list of item ids, optional
            Items never to recommend (already in a basket, out of stock).
        index : {"auto", "exact", "ann"}
            ``"exact"``: score every item. ``"ann"``: look candidates up in an
            approximate nearest-neighbour index (``pip install tabembed[ann]``;
            built at first use, see :meth:`build_index`) and score those
            exactly; needs ``model="dot"``. ``"auto"``: ``"ann"`` from
            ``nearest_neighbours.ANN_MIN_ITEMS`` items (500,000) when faiss is
            installed, else ``"exact"``. Seen and filtered items are excluded
            exactly either way (see :mod:`tabembed.recommenders.nearest_neighbours`).

        Returns
        -------
        DataFrame
            For one user: columns ``item, score`` (``item`` named after
            ``item_column``), best first. For a list: ``user, item, score``,
            the users in the order given, each with up to ``k`` rows, best
            first. Scoring is vectorised over users, in chunks bounded in
            memory; ties go to the lower item code.
        """
        check_is_fitted(self, "learner_")
        k = check_k(k)
        self._check_no_context()
        single = np.ndim(user) == 0
        users = [user] if single else list(user)
        codes = self.preprocessor_.encode(self.user_column, users).astype(np.int64)
        items, scores = self._top_k(codes, k, exclude_seen=exclude_seen,
                                    filter_items=filter_items, index=index)
        item_ids = self._item_ids().to_numpy()
        valid = items >= 0
        if single:
            return pd.DataFrame({self.item_column: item_ids[items[0][valid[0]]],
                                 "score": scores[0][valid[0]].astype(np.float64)})
        rows = np.repeat(np.arange(len(users)), valid.sum(1))
        return pd.DataFrame({self.user_column: pd.Index(users).to_numpy()[rows],
                             self.item_column: item_ids[items[valid]],
                             "score": scores[valid].astype(np.float64)})

    def _top_k(self, codes: np.ndarray, k: int, *, exclude_seen: bool, filter_items,
               index: str) -> tuple[np.ndarray, np.ndarray]:
        """Item positions ``[n, min(k, n_items)]`` (-1: none left) and scores of users given
        by code, exactly or through the index."""
        n_items = len(self.preprocessor_.categories_[self.item_column])
        seen = None
        if exclude_seen:
            seen = self._serving("seen", lambda: seen_matrix(
                self.seen_users_, self.seen_items_,
                len(self.preprocessor_.categories_[self.user_column]), n_items))
        ranking = self._ranking_index(index, n_items)
        if ranking is None:
            return top_k_items(self._scores, codes, k, n_items, seen=seen,
                               excluded=self._excluded(filter_items))
        filtered = np.empty(0, dtype=np.int64)
        if filter_items is not None:
            filtered = _positions(self._item_ids(), filter_items)
            filtered = np.unique(filtered[filtered >= 0])
        return self._index_top_k(ranking, codes, k, n_items, seen, filtered, filter_items)

    # ------------------------------------------------------------ nearest-neighbour index

    def recommend_all(self, k: int = 10, *, exclude_seen: bool = True, filter_items=None,
                      index: str = "auto", path=None, batch_users: int = 4096):
        """:meth:`recommend` for every user seen in training (columns ``user, item, score``).

        Parameters
        ----------
        k, exclude_seen, filter_items, index
            As :meth:`recommend`.
        path : path, optional
            Write the lists to this Parquet file instead of returning them:
            ``batch_users`` users at a time, each batch a row group, so memory
            holds one batch whatever the number of users. The file is written
            atomically (a temporary file beside it, renamed at the end): on
            failure nothing is left and a file already there is as it was. A
            directory, FIFO, device or other non-regular file is refused.
        batch_users : int
            Users per batch (and row group) with ``path``.

        Returns
        -------
        DataFrame, or the Path written
        """
        check_is_fitted(self, "learner_")
        users = list(self.preprocessor_.categories_[self.user_column])
        if path is None:
            return self.recommend(users, k, exclude_seen=exclude_seen,
                                  filter_items=filter_items, index=index)
        return self._recommend_to_parquet(path, check_k(k), exclude_seen, filter_items,
                                          index, batch_users)

    def _recommend_to_parquet(self, path, k: int, exclude_seen: bool, filter_items,
                              index: str, batch_users) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from tabembed._io import atomic_file, writable_target

        if not (isinstance(batch_users, Integral) and not isinstance(batch_users, bool)
                and batch_users >= 1):
            raise ValueError(f"batch_users must be a positive integer, got {batch_users!r}")
        self._check_no_context()
        path = Path(path)
        writable_target(path)   # a directory or device is refused before any work
        user_ids = _arrow_ids(self.preprocessor_.categories_[self.user_column],
                              self.user_column)
        item_ids = _arrow_ids(self.preprocessor_.categories_[self.item_column],
                              self.item_column)
        schema = pa.schema([(str(self.user_column), user_ids.type),
                            (str(self.item_column), item_ids.type), ("score", pa.float64())])
        n_users = len(user_ids)
        with atomic_file(path) as stream, pq.ParquetWriter(stream, schema) as writer:
            for start in range(0, n_users, batch_users):
                codes = np.arange(start + 1, min(start + batch_users, n_users) + 1,
                                  dtype=np.int64)      # code = vocabulary position + 1
                items, scores = self._top_k(codes, k, exclude_seen=exclude_seen,
                                            filter_items=filter_items, index=index)
                valid = items >= 0
                rows = np.repeat(codes - 1, valid.sum(1))
                writer.write_table(pa.table(
                    [user_ids.take(rows), item_ids.take(items[valid]),
                     pa.array(scores[valid].astype(np.float64))], schema=schema))
            if n_users == 0:
                writer.write_table(schema.empty_table())
        return path

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
        k = check_k(k)
        self._check_no_context()
        item_ids = pd.Index(self.preprocessor_.categories_[self.item_column])
        positions = _positions(item_ids, items)
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
        best, values = top_k(scores[None, :], k,
                             exclude_columns=self._excluded(filter_items, positions))
        keep = best[0] >= 0
        return pd.DataFrame({self.item_column: item_ids.to_numpy()[best[0][keep]],
                             "score": values[0][keep]})

    def _fold_in(self, scorer: GridScorer, positions, ratings, *, implicit: bool,
                 strength: float, keep=None) -> np.ndarray:
        """A folded-in user's scores from ``scorer`` (each item's bias scaled by ``keep``)."""
        logits = fold_in_logits(scorer, positions, ratings=ratings, implicit=implicit,
                                strength=strength)
        with torch.no_grad():
            if keep is not None:
                kept = torch.as_tensor(keep, dtype=torch.float32, device=logits.device)
                logits = logits - (1 - kept) * scorer.model.item_bias.weight[1:, 0]
            return scorer.model.output_range(logits).cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------ saving and loading

    def _extra_state(self, meta: dict, tensors: dict) -> None:
        tensors["seen_users"] = torch.from_numpy(
            np.ascontiguousarray(self.seen_users_, dtype=np.int64))
        tensors["seen_items"] = torch.from_numpy(
            np.ascontiguousarray(self.seen_items_, dtype=np.int64))
        meta["preprocessor"] = self.preprocessor_.to_dict()
        meta["recommender"] = {"rating_range": list(self.rating_range_),
                               **self.sides_.to_dict(), "bags": self.bags_.to_dict()}

    def _restore_extra(self, meta: dict, tensors: dict, *, snapshots, device) -> None:
        from tabembed import persistence
        from tabembed.preprocessing import TabularPreprocessor

        preprocessor = TabularPreprocessor.from_dict(meta["preprocessor"])
        kwargs = self.model_kwargs_
        # The file's parts must agree, or predict would index past a table.
        preprocessor.check_model_inputs(
            [kwargs["n_users"], kwargs["n_items"],
             *(n for n, _ in kwargs["side_embedding_sizes"])], kwargs["n_continuous"])
        extra = meta["recommender"]
        seen_users = persistence.check_ids("seen_users", tensors.get("seen_users"),
                                           kwargs["n_users"])
        seen_items = persistence.check_ids("seen_items", tensors.get("seen_items"),
                                           kwargs["n_items"])
        if len(seen_users) != len(seen_items):
            raise persistence.DamagedFileError("seen_users and seen_items differ in length")
        bags = BagEncoder.from_dict(extra.get("bags", {"columns": [], "vocabulary": [],
                                                       "lengths": []}))
        sides = SideFeatures.from_dict(extra, self.user_column, self.item_column)
        sizes = [int(bag[0]) for bag in kwargs.get("bags") or []]
        if sizes != [len(bags.vocabulary[c]) + 1 for c in bags.columns]:
            # A token code past a table would index out of it at predict.
            raise persistence.DamagedFileError(
                f"the multi-valued columns {bags.columns} (vocabularies of "
                f"{[len(bags.vocabulary[c]) for c in bags.columns]} tokens) do not match the "
                f"model's bag tables ({sizes} rows, the unknown token included)")
        self.model_.attach_bag_tables(bags.tables[c] for c in bags.columns)
        self._adopt({
            "preprocessor_": preprocessor, "bags_": bags, "sides_": sides,
            "seen_users_": seen_users, "seen_items_": seen_items,
            "rating_range_": tuple(extra["rating_range"]), "_scorer_cache": None,
            "_index_cache": None, "_serving_cache": None,
            "learner_": self._inference_learner(loss_for_task("regression"),
                                                output_activation=flatten,
                                                snapshots=snapshots, device=device),
        })

    def __getstate__(self):
        # The ANN index is never pickled (nor saved): an unpickled model rebuilds it.
        state = super().__getstate__()
        if state.get("_index_cache") is not None or state.get("_serving_cache") is not None:
            state = {**state, "_index_cache": None, "_serving_cache": None}
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True      # missing ids are the unknown token
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags
