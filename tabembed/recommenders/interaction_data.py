"""What a recommender fit learns from its interactions, from a DataFrame or from Parquet.

:func:`scan_frame` and :func:`scan_parquet` differ only where the data source
differs (how the preprocessor is fitted, where the chunks come from); both
feed the same chunk-by-chunk scan (:class:`_Scan`), which finds the bags'
vocabularies, the side features' roles and tables, every (user, item) pair
and the ratings' range and mean. Its result, :class:`Interactions`, is shared
by every model trained on the same data (the hybrid ranking's two models), and
gives each model its rows (:meth:`Interactions.rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tabembed.estimators.fit_data import MemoryRows, StreamRows
from tabembed.preprocessing import TabularPreprocessor
from tabembed.recommenders.bags import BagEncoder, detect_bag_columns
from tabembed.recommenders.side_features import RoleScan, SideFeatures, column_kinds
from tabembed.streaming.interactions import Pairs

__all__ = ["Interactions", "check_ratings", "encode", "frame_holdout", "scan_frame",
           "scan_parquet"]

# Ratings train in float32 without scaling: their squared errors must stay finite.
MAX_RATING = 1e15


def check_ratings(values, what: str) -> np.ndarray:
    """Ratings as float64: numeric, finite and within :data:`MAX_RATING`."""
    try:
        ratings = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numeric ratings: {error}") from error
    if np.isnan(ratings).any():
        raise ValueError(f"{what} has {int(np.isnan(ratings).sum())} missing rating(s); drop "
                         "those rows first")
    if not np.isfinite(ratings).all():
        raise ValueError(f"{what} has {int((~np.isfinite(ratings)).sum())} infinite "
                         "rating(s); drop them")
    if len(ratings) and np.abs(ratings).max() > MAX_RATING:
        raise ValueError(f"{what} holds rating(s) as large as {np.abs(ratings).max():.3g}; "
                         f"ratings must be within +-{MAX_RATING:g}: rescale them (divide by "
                         "a constant)")
    return ratings


def encode(preprocessor: TabularPreprocessor, bags: BagEncoder, frame: pd.DataFrame
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, continuous)`` of a canonical frame: the preprocessor's codes, then each
    bag's id in its table."""
    missing = [c for c in bags.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"multi-valued columns missing from the frame: {missing}; the model "
                         f"was fitted with {list(bags.columns)} (give an empty value, None, "
                         "for rows without any)")
    codes, continuous = preprocessor.to_tensors(frame.drop(columns=bags.columns))
    if not bags.columns:
        return codes, continuous
    return torch.cat([codes, *bags.encode(frame)], dim=1), continuous


def frame_holdout(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Which of a DataFrame's rows validate (``early_stopping``): a seeded random share."""
    return np.random.default_rng(seed).random(n_rows) < fraction


@dataclass
class Interactions:
    """The encoders and tables one pass found, and where the rows are.

    In memory: ``codes``, ``continuous``, ``ratings`` (None for implicit
    feedback) and ``weights``. Streamed: ``row_groups`` and the ``target``
    column's name.
    """

    preprocessor: TabularPreprocessor
    bags: BagEncoder
    sides: SideFeatures
    seen_users: np.ndarray
    seen_items: np.ndarray
    feature_names: list
    rating_range: tuple[float, float]
    rating_mean: float
    codes: torch.Tensor | None = None
    continuous: torch.Tensor | None = None
    ratings: np.ndarray | None = None
    weights: np.ndarray | None = None
    row_groups: object | None = None
    target: str | None = None

    @property
    def streamed(self) -> bool:
        return self.row_groups is not None

    @property
    def n_rows(self) -> int:
        return self.row_groups.n_rows if self.streamed else len(self.codes)

    def holdout(self, fraction: float, seed: int):
        """The validation rows of ``early_stopping``: a mask in memory, a hash split of the
        rows' positions for a stream."""
        if self.streamed:
            from tabembed.streaming import ValidationSplit

            return ValidationSplit(fraction, seed=seed)
        return frame_holdout(len(self.codes), fraction, seed)

    def rows(self, held=None, *, with_ratings: bool, valid=None,
             shard_validation: bool = True) -> MemoryRows | StreamRows:
        """One model's rows: ``held`` (from :meth:`holdout`) validate, or ``valid`` (ready
        batches, ``eval_set``); ``with_ratings=False`` gives inputs only."""
        if self.streamed:
            from tabembed.streaming.interactions import FrameTransform

            def transform_frame(frame):
                codes, continuous = encode(self.preprocessor, self.bags,
                                           self.bags.canonical(frame))
                return codes.numpy(), continuous.numpy()

            transform = FrameTransform(self.feature_names, transform_frame,
                                       self.target if with_ratings else None)
            return StreamRows(self.row_groups, transform, held, shard_validation)
        tensors = (self.codes, self.continuous)
        if with_ratings:
            tensors = (*tensors, torch.tensor(self.ratings, dtype=torch.float32))
        rows = np.arange(len(self.codes))
        if held is None:
            return MemoryRows(tensors, rows, weights=self.weights, valid=valid,
                              has_target=with_ratings)
        return MemoryRows(tensors, rows[~held], np.flatnonzero(held), weights=self.weights,
                          has_target=with_ratings)


class _Scan:
    """One pass over chunks ``(frame, positions, held)``: bags, roles, pairs, ratings."""

    def __init__(self, preprocessor, bags: BagEncoder, side: list, user_column, item_column):
        self.preprocessor, self.bags = preprocessor, bags
        self.user_column, self.item_column = user_column, item_column
        n_users = len(preprocessor.categories_[user_column])
        self.n_items = len(preprocessor.categories_[item_column])
        self.roles = RoleScan(side, n_users, self.n_items)
        self.pairs = Pairs()
        self.low, self.high, self.total, self.n_train = np.inf, -np.inf, 0.0, 0

    def update(self, frame, positions, held, ratings=None) -> None:
        self.bags.update(frame)
        users = self.preprocessor.encode(self.user_column, frame[self.user_column])
        items = self.preprocessor.encode(self.item_column, frame[self.item_column])
        self.pairs.update(users, items)
        self.roles.update(frame, users, items, positions)
        if ratings is not None:
            if len(ratings):
                self.low, self.high = min(self.low, ratings.min()), max(self.high, ratings.max())
            training = ratings if held is None else ratings[~held]
            self.total += float(training.sum())
            self.n_train += len(training)

    def finish(self, *, feature_names, with_ratings: bool, user_features, item_features,
               **source) -> Interactions:
        if with_ratings and self.n_train == 0:
            raise ValueError("no training ratings: every row is held out for validation; "
                             "lower validation_fraction")
        self.bags.finish()
        sides = self.roles.features(self.preprocessor, self.user_column, self.item_column,
                                    bags=self.bags.columns, user_features=user_features,
                                    item_features=item_features)
        seen_users, seen_items = self.pairs.sorted(self.n_items)
        rating_range = (float(self.low), float(self.high)) if with_ratings else (1.0, 1.0)
        mean = self.total / self.n_train if self.n_train else 0.0
        return Interactions(self.preprocessor, self.bags, sides, seen_users, seen_items,
                            list(feature_names), rating_range, mean, **source)


def _side_columns(columns, user_column, item_column) -> list:
    return [c for c in columns if c not in (user_column, item_column)]


def _preprocessor(frame: pd.DataFrame, side: list, bags: BagEncoder, user_column,
                  item_column) -> TabularPreprocessor:
    """The unfitted preprocessor: ids and non-bag side columns, no missing indicators."""
    cats, conts = column_kinds(frame, [c for c in side if c not in bags.columns])
    return TabularPreprocessor(cat_names=[user_column, item_column, *cats], cont_names=conts,
                               date_names=[], add_missing_indicators=False)


def _check_ids_present(preprocessor, user_column, item_column) -> None:
    """A user or item column with no id at all trains nothing: an error naming it."""
    for role, column in (("user", user_column), ("item", item_column)):
        if not preprocessor.categories_[column]:
            raise ValueError(f"the {role} column {column!r} has no non-missing id in the "
                             "training data; fill it (every interaction needs a "
                             f"{role}) before fitting")


def _bag_encoder(multi_valued, side: list, chunks) -> BagEncoder:
    """The bag columns: ``multi_valued="auto"`` detects them over ``chunks()``."""
    if multi_valued == "auto":
        return BagEncoder(detect_bag_columns(chunks(), side) if side else [])
    missing = [c for c in multi_valued if c not in side]
    if missing:
        raise ValueError(f"multi_valued names {missing}, which are not side-feature "
                         f"columns of X ({side})")
    return BagEncoder(list(multi_valued))


def scan_frame(frame: pd.DataFrame, *, user_column, item_column, multi_valued="auto",
               ratings=None, weights=None, held=None, user_features=None,
               item_features=None) -> Interactions:
    """The interactions of a DataFrame (``ratings`` given for explicit feedback); ``held``
    marks rows left out of the ratings' mean (the validation rows)."""
    side = _side_columns(frame.columns, user_column, item_column)
    bags = _bag_encoder(multi_valued, side, lambda: [frame])
    frame = bags.canonical(frame)
    preprocessor = _preprocessor(frame, side, bags, user_column, item_column).fit(
        frame.drop(columns=bags.columns))
    _check_ids_present(preprocessor, user_column, item_column)
    scan = _Scan(preprocessor, bags, side, user_column, item_column)
    scan.update(frame, np.arange(len(frame), dtype=np.int64), held, ratings)
    # The tensors need the bags' vocabularies, known once the scan is finished.
    interactions = scan.finish(feature_names=frame.columns, with_ratings=ratings is not None,
                               user_features=user_features, item_features=item_features,
                               ratings=ratings, weights=weights)
    interactions.codes, interactions.continuous = encode(preprocessor, bags, frame)
    return interactions


def scan_parquet(source, *, user_column, item_column, target=None, multi_valued="auto",
                 split=None, user_features=None, item_features=None) -> Interactions:
    """The interactions of a Parquet dataset, in one bounded pass (a row group at a time)
    after the preprocessor's streamed fit; ``target`` names the rating column.

    Every process makes the pass (it is deterministic), so nothing O(rows) is sent between
    processes. Memory grows with users and items, and with the rows by 8 bytes each (the
    (user, item) pairs, int32).
    """
    from tabembed.streaming import RowGroups, fit_preprocessor, open_dataset
    from tabembed.streaming.interactions import frames

    dataset = open_dataset(source)
    names = list(dataset.schema.names)
    missing = [c for c in (user_column, item_column) if c not in names]
    if missing:
        raise ValueError(f"the Parquet data has no column {missing}; set "
                         f"user_column/item_column (its columns are {names})")
    if target is not None and target not in names:
        raise ValueError(f"the rating column {target!r} is not in the Parquet data; its "
                         f"columns are {names}")
    features = [c for c in names if c != target]
    side = _side_columns(features, user_column, item_column)
    row_groups = RowGroups(dataset)
    if row_groups.n_rows < 2:     # as a DataFrame's fit (one row breaks batch norm)
        raise ValueError(f"the Parquet data has {row_groups.n_rows} row(s) while a minimum of "
                         "2 is required to fit a recommender")
    unlisted = row_groups.unlisted_columns()
    if unlisted:      # side features are read by the first file's schema: never read
        column, path = next(iter(unlisted.items()))
        raise ValueError(
            f"the column {column!r} of {path} is not in the dataset's schema (its first "
            f"file's, {dataset.files[0]}): it would never be read (columns only in some "
            f"files: {sorted(unlisted)}). Every file of a dataset must hold the same columns: "
            "add the column to every file, or drop it from these")
    # A file lacking the ratings would read as missing ratings, with no file named.
    row_groups.require([*features, *([target] if target is not None else [])],
                       "the recommender's fit")
    empty = dataset.schema.empty_table().to_pandas()[features]
    texts = [c for c in side if not pd.api.types.is_numeric_dtype(empty[c])
             and not pd.api.types.is_bool_dtype(empty[c])]

    def text_chunks():
        for index in range(len(row_groups) if texts else 0):
            yield row_groups.read(index, texts).to_pandas()

    bags = _bag_encoder(multi_valued, texts if multi_valued == "auto" else side,
                        text_chunks)
    preprocessor = fit_preprocessor(
        dataset, _preprocessor(empty, side, bags, user_column, item_column),
        exclude=[*([target] if target is not None else []), *bags.columns])
    _check_ids_present(preprocessor, user_column, item_column)
    scan = _Scan(preprocessor, bags, side, user_column, item_column)
    columns = [*features, *([target] if target is not None else [])]
    for frame, positions, held in frames(row_groups, columns, split):
        ratings = None if target is None else check_ratings(
            frame[target], f"the rating column {target!r} (in a row group)")
        scan.update(bags.canonical(frame), positions, held, ratings)
    return scan.finish(feature_names=features, with_ratings=target is not None,
                       user_features=user_features, item_features=item_features,
                       row_groups=row_groups, target=target)
