"""TabularPreprocessor: pandas (or Parquet) in, category codes and scaled numbers out.

Rules, each chosen to avoid a silent corruption we have seen elsewhere:

- Index 0 of every categorical column is the *unknown token*, shared by
  missing values, values never seen in training and values rarer than
  ``min_frequency``. Vocabularies are learned from the training data only.
- A column with a pandas categorical dtype is mapped by *value*, never by its
  codes, so a frame whose categories differ from training still maps right.
- Continuous columns are filled with the training median. Columns that had
  missing values in training also get a ``<col>_na`` categorical indicator; a
  missing value at inference in a column that had none is filled all the same.
  Values are then standardised with the training mean and population std.
- Strings in a continuous column and infinite values are errors, never NaN.
- Everything is vectorised per column: no Python loop over rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from tabembed import preprocessor_state
from tabembed._validation import arrow_table, arrow_to_pandas, check_column_names
from tabembed.column_kinds import (
    DATE_PARTS,
    checked_numbers,
    compatible_kinds,
    count_values,
    date_parts,
    dates_in_timezone,
    elapsed_seconds,
    infer_roles,
    numeric_values,
    timezone_name,
    value_kind,
)
from tabembed.column_statistics import (
    Moments,
    column_histograms,
    exact_medians,
    histogram_quantiles,
    merge_counts,
)
from tabembed.scaling import SCALINGS, robust_center_scale, smooth_clip, to_normal
from tabembed.vocabulary import Vocabulary, python_scalar, sorted_vocabulary

__all__ = ["TabularPreprocessor", "embedding_size"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Continuous columns with at most this many distinct training values keep them
# (``few_values_``): a fitted network's prediction looks their encodings up in tables
# instead of computing them (tabembed.models.prediction_network). Ages, counts, ratings qualify.
FEW_VALUES = 1024
# ... and at most this many values over all columns (the folded tables hold at most ~80k
# rows at a first layer of 200; this bounds the model file of a wide table too).
FEW_VALUES_TOTAL = 65_536


def embedding_size(cardinality: int, max_size: int = 50) -> int:
    """Embedding width for a column with ``cardinality`` codes, the unknown token included.

    ``min(max_size, (cardinality + 1) // 2)``: 7 weekdays + unknown = 8 codes -> 4.
    """
    if cardinality < 1:
        raise ValueError(f"cardinality must be at least 1 (the unknown token), got {cardinality=}")
    return min(max_size, (cardinality + 1) // 2)


def _check_order(order: str) -> None:
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' (row-major) or 'F' (column-major), got {order=}")


def _batches(X, columns: list | None = None):
    """A callable starting a fresh pass of DataFrames over ``X``, and ``X``'s column names."""
    if isinstance(X, pd.DataFrame):
        return (lambda: iter([X])), list(X.columns)
    import pyarrow.dataset as ds

    if isinstance(X, str | Path):
        X = ds.dataset(X, format="parquet")
    if not isinstance(X, ds.Dataset):
        frame = _in_memory_frame(X)
        return (lambda: iter([frame])), list(frame.columns)

    def passes():
        for batch in X.to_batches(columns=columns, batch_size=1 << 17):
            yield arrow_to_pandas(batch)

    return passes, list(X.schema.names)


def _in_memory_frame(X) -> pd.DataFrame:
    """A DataFrame from a pandas, polars or Arrow table (names and types kept)."""
    if isinstance(X, pd.DataFrame):
        return X
    table = arrow_table(X)
    if table is None:
        raise TypeError(
            "X must be a DataFrame (pandas or polars), a pyarrow.Table, a "
            f"pyarrow.dataset.Dataset or a path to Parquet files, got {type(X).__name__}")
    return arrow_to_pandas(table)


def _check_unique_columns(columns, where: str) -> None:
    # An Index caches is_unique: rows cut from one frame share their columns' Index.
    index = columns if isinstance(columns, pd.Index) else pd.Index(columns)
    check_column_names(index)
    if index.has_duplicates:
        duplicated = sorted(map(str, index[index.duplicated()].unique()))
        raise ValueError(f"duplicate column names at {where}: {duplicated}; rename them")


def _overflow_error(preprocessor, row: int, column) -> ValueError:
    """A value so far outside the training data that its scaled form overflows float32."""
    return ValueError(
        f"continuous column {column!r} holds a value (row {row}) so far outside the "
        f"training data (mean {preprocessor.means_[column]:.4g}, std "
        f"{preprocessor.stds_[column]:.4g}) that scaled it overflows float32; check that "
        "row, or clip the column to a plausible range"
    )


class TabularPreprocessor(TransformerMixin, BaseEstimator):
    """Turn a DataFrame into category codes (with an unknown token) and standardised numbers.

    Parameters
    ----------
    cat_names, cont_names, date_names : list of str, optional
        Column roles. A role left as ``None`` is inferred from the columns no
        other role names: object, string, category and bool columns are
        categorical; integer columns with at most ``max_integer_categories``
        distinct values are categorical, others continuous; floats are
        continuous; datetime columns are dates. Pass ``[]`` for "none".
    max_integer_categories : int, default 20
        Threshold for integer columns, as fastai's ``cont_cat_split``.
    min_frequency : int or float, optional
        Values seen fewer times (a count, or a fraction of training rows when
        a float below 1) fold into the unknown token.
    embedding_sizes : dict, optional
        Per-column embedding width overrides, ``{column: width}``.
    embedding_rule : callable, optional
        ``rule(cardinality) -> width`` replacing :func:`embedding_size`.
    add_missing_indicators : bool, default True
        Add ``<col>_na`` categories for continuous columns with missing values.
    continuous_scaling : {"standard", "quantile", "robust", None}, default "standard"
        ``"standard"``: zero mean and unit variance. ``"quantile"``: map each
        value through the training distribution to a standard normal (robust
        to skew and outliers, as scikit-learn's ``QuantileTransformer`` with
        ``output_distribution="normal"``; quantiles within one histogram bin,
        ``range / 65536``, of exact). ``"robust"``: subtract the median, divide
        by the interquartile range (half the range where that is 0), then clip
        smoothly to (-3, 3) with ``x / sqrt(1 + (x / 3) ** 2)`` (RealMLP's
        scaling: outliers stay ordered but cannot dominate a PLR or linear
        layer). ``None``: leave values as they are.
    n_quantiles : int, default 1000
        Reference points of the quantile mapping.

    Attributes
    ----------
    cat_names_, cont_names_, date_names_ : list
        The input columns of each role.
    cat_columns_, cont_columns_ : list
        Output columns: categories (input, date parts, missing indicators)
        and continuous values (input, elapsed time of each date).
    categories_ : dict
        Vocabulary of each categorical output column; code ``i + 1`` is
        ``categories_[col][i]`` and code 0 is the unknown token.
    embedding_sizes_ : dict
        ``{column: (cardinality, width)}``, the cardinality counting the unknown token.
    medians_, means_, stds_ : dict
        Training statistics of the continuous output columns.
    few_values_ : dict
        ``{column: sorted distinct values}`` of the continuous output columns with
        at most ``FEW_VALUES`` (1024) distinct training values (``FEW_VALUES_TOTAL``
        over all columns, in column order); see :meth:`continuous_values`.
    """

    def __init__(
        self,
        cat_names=None,
        cont_names=None,
        date_names=None,
        *,
        max_integer_categories: int = 20,
        min_frequency=None,
        embedding_sizes=None,
        embedding_rule: Callable[[int], int] | None = None,
        add_missing_indicators: bool = True,
        continuous_scaling: str | None = "standard",
        n_quantiles: int = 1000,
    ):
        self.cat_names = cat_names
        self.cont_names = cont_names
        self.date_names = date_names
        self.max_integer_categories = max_integer_categories
        self.min_frequency = min_frequency
        self.embedding_sizes = embedding_sizes
        self.embedding_rule = embedding_rule
        self.add_missing_indicators = add_missing_indicators
        self.continuous_scaling = continuous_scaling
        self.n_quantiles = n_quantiles

    # ------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Learn roles, vocabularies and statistics from a DataFrame or a Parquet dataset."""
        if isinstance(X, np.ndarray):
            X = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
        passes, columns = _batches(X)
        _check_unique_columns(columns, where="fit")
        first = next(passes(), None)
        if first is None or len(first) == 0:
            raise ValueError("cannot fit TabularPreprocessor on an empty frame (0 rows)")
        cats, conts, dates, integers = infer_roles(first, self.cat_names, self.cont_names,
                                                   self.date_names)
        self.timezones_ = {d: timezone_name(first[d], d) for d in dates}
        counts = {c: {} for c in cats + integers}
        moments = {c: Moments() for c in conts + integers + [f"{d}_elapsed" for d in dates]}
        n_rows = 0
        for frame in passes():
            n_rows += len(frame)
            for column in cats:
                count_values(counts[column], frame[column], column)
            for column in integers:
                if column in counts:
                    merge_counts(counts[column], frame[column].value_counts())
                    if len(counts[column]) > self.max_integer_categories:
                        del counts[column]   # too many values: continuous
                moments[column].update(numeric_values(frame[column], column))
            for column in conts:
                moments[column].update(numeric_values(frame[column], column))
            for column in dates:
                series = self._dates(frame[column], column)
                for part, values in date_parts(series, column).items():
                    merge_counts(counts.setdefault(part, {}), values.value_counts())
                moments[f"{column}_elapsed"].update(elapsed_seconds(series))
        for column in integers:
            if column in counts:
                cats.append(column)
                del moments[column]
            else:
                conts.append(column)
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)
        self.cat_names_, self.cont_names_, self.date_names_ = cats, conts, dates
        # What each categorical input held, to notice a type change at transform.
        self.column_kinds_ = {c: value_kind(first[c]) for c in cats}
        self._fit_categories(counts, cats, dates, n_rows)
        self._fit_continuous(passes, moments)
        self._finish()
        self._fit_embedding_sizes()
        return self

    def _fit_categories(self, counts, cats, dates, n_rows) -> None:
        threshold = self.min_frequency or 0
        if isinstance(threshold, float) and 0 < threshold < 1:
            threshold = threshold * n_rows
        self.categories_ = {}
        for column in cats + [f"{d}_{p}" for d in dates for p in DATE_PARTS]:
            values = counts.get(column, {})
            if not values and column in cats:
                # As LightGBM, fit all the same: every value maps to the unknown token.
                warnings.warn(
                    f"categorical column {column!r} has no non-missing value in the training "
                    "data, so it carries no information (every value maps to the unknown "
                    "token); drop it, or fill it before fitting", UserWarning, stacklevel=3)
            kept = [python_scalar(v) for v, n in values.items() if n >= threshold]
            self.categories_[column] = sorted_vocabulary(kept)

    def _fit_continuous(self, passes, moments) -> None:
        if self.continuous_scaling not in SCALINGS:
            raise ValueError("continuous_scaling must be 'standard', 'quantile', 'robust' or "
                             f"None, got {self.continuous_scaling!r}")
        dates = {f"{d}_elapsed": d for d in self.date_names_}
        for column, moment in moments.items():
            if moment.count == 0:
                what = (f"date column {dates[column]!r}" if column in dates
                        else f"continuous column {column!r}")
                raise ValueError(
                    f"{what} has no non-missing value in the training data; drop it or fill "
                    "it before fitting"
                )

        def numeric_passes():
            for frame in passes():
                arrays = {c: numeric_values(frame[c], c) for c in self.cont_names_}
                arrays.update({f"{d}_elapsed": elapsed_seconds(self._dates(frame[d], d))
                               for d in self.date_names_})
                yield arrays

        distinct = {column: set() for column in moments}    # None: too many values

        def counting_passes():
            for arrays in numeric_passes():
                for column, values in arrays.items():
                    if distinct[column] is not None:
                        distinct[column].update(pd.unique(values[np.isfinite(values)]).tolist())
                        if len(distinct[column]) > FEW_VALUES:
                            distinct[column] = None
                yield arrays

        histograms = column_histograms(counting_passes, moments)
        self.few_values_, total = {}, 0
        for column, values in distinct.items():
            if values is not None and total + len(values) <= FEW_VALUES_TOTAL:
                self.few_values_[column] = sorted(values)
                total += len(values)
        self.medians_ = exact_medians(numeric_passes, moments, histograms)
        self.means_, self.stds_, self.quantiles_ = {}, {}, {}
        self.na_names_ = []
        standard = self.continuous_scaling == "standard"
        levels = np.linspace(0, 1, self.n_quantiles)
        for column, moment in moments.items():
            mean, std = moment.filled(self.medians_[column])
            # A constant column would divide by zero: leave it unscaled.
            self.means_[column] = mean if standard else 0.0
            self.stds_[column] = std if standard and std > 1e-12 else 1.0
            # Kept for every column: quantile scaling and bin edges (bin_edges) read them.
            self.quantiles_[column] = histogram_quantiles(histograms[column], moment,
                                                          levels).tolist()
            if self.continuous_scaling == "robust":
                self.means_[column], self.stds_[column] = robust_center_scale(
                    self.medians_[column], np.asarray(self.quantiles_[column]))
            if moment.missing and self.add_missing_indicators:
                self.na_names_.append(column)

    def _finish(self) -> None:
        """Derive the output column lists and lookup indexes from the fitted state."""
        self.__dict__.pop("_known_columns", None)    # caches of the previous fit
        self.__dict__.pop("_warned_extra", None)
        self.cont_columns_ = self.cont_names_ + [f"{d}_elapsed" for d in self.date_names_]
        self.na_names_ = [c for c in self.cont_columns_ if c in self.na_names_]
        for column in self.na_names_:
            self.categories_[f"{column}_na"] = [False, True]
        self.cat_columns_ = list(self.categories_)
        self._vocabularies = {c: Vocabulary(v) for c, v in self.categories_.items()}

    def _fit_embedding_sizes(self) -> None:
        rule = self.embedding_rule or embedding_size
        overrides = dict(self.embedding_sizes or {})
        unknown = sorted(set(overrides) - set(self.cat_columns_), key=str)
        if unknown:
            raise ValueError(
                f"embedding_sizes names columns that are not categorical outputs: {unknown}; "
                f"categorical outputs are {self.cat_columns_}"
            )
        self.embedding_sizes_ = {}
        for column in self.cat_columns_:
            cardinality = len(self.categories_[column]) + 1
            width = overrides.get(column, rule(cardinality))
            self.embedding_sizes_[column] = (cardinality, int(width))

    # ------------------------------------------------------------ transforming

    def transform_arrays(self, X: pd.DataFrame, *, order: str = "C"
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``int64 [n, n_cat]`` and continuous values ``float32 [n, n_cont]``.

        ``order="F"`` returns them column-major, as they are filled: no copy into
        row-major, for callers that read strided arrays (prediction: tabembed's
        networks take either layout and give the same outputs).
        """
        check_is_fitted(self, "categories_")
        _check_order(order)
        if isinstance(X, np.ndarray):
            X = pd.DataFrame(X, columns=list(self.feature_names_in_))
        X = _in_memory_frame(X)
        self._check_given_columns(X.columns)
        return self._transform(X, len(X), order)

    def transform_table(self, table, *, order: str = "C") -> tuple[np.ndarray, np.ndarray]:
        """:meth:`transform_arrays` of a ``pyarrow.Table``: the same arrays as for its
        DataFrame (``tabembed._validation.arrow_to_pandas``), with less of pandas.

        Dictionary-encoded string columns are coded from their dictionaries, and integer
        and floating-point columns without nulls are read as NumPy arrays; the other
        columns go through pandas as in :meth:`transform_arrays`. Why: pandas' Python per
        column holds the GIL, which the reader thread of a Parquet prediction shares with
        the predicting thread.
        """
        import pyarrow as pa

        check_is_fitted(self, "categories_")
        _check_order(order)
        if not isinstance(table, pa.Table):
            raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}")
        self._check_given_columns(pd.Index(table.column_names))
        kinds = getattr(self, "column_kinds_", {})
        codes, numbers = {}, {}
        for column in self.cat_names_:
            # Another training type needs the pandas path's warning.
            if kinds.get(column) in (None, "string"):
                encoded = self._vocabularies[column].dictionary_codes(table.column(column))
                if encoded is not None:
                    codes[column] = encoded
        for column in self.cont_names_:
            values = table.column(column)
            if values.null_count == 0 and (
                    pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                numbers[column] = checked_numbers(values.to_numpy().astype(np.float64), column)
        rest = [c for c in self._input_names() if c not in codes and c not in numbers]
        frame = arrow_to_pandas(table.select(rest))
        return self._transform(frame, table.num_rows, order, codes, numbers)

    def _input_names(self) -> list:
        """The input columns the transform reads: categorical, continuous, dates."""
        return self.cat_names_ + self.cont_names_ + self.date_names_

    def _check_given_columns(self, columns: pd.Index) -> None:
        """Duplicates and missing columns are errors; extra ones are ignored (a warning)."""
        _check_unique_columns(columns, where="transform")
        needed = self._input_names()
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ValueError(
                f"columns missing from the frame: {missing}; the preprocessor was fitted "
                f"with {needed}"
            )
        self._check_extra_columns(columns)

    def _transform(self, X: pd.DataFrame, n: int, order: str, given_codes=None,
                   given_numbers=None) -> tuple[np.ndarray, np.ndarray]:
        """The arrays of :meth:`transform_arrays` for ``n`` rows: the columns of
        ``given_codes`` (codes) and ``given_numbers`` (float64 values, checked) as given,
        the others read from ``X``."""
        given_codes, given_numbers = given_codes or {}, given_numbers or {}
        # Filled a column at a time, so column-major (contiguous writes: 0.136 -> 0.094 us a
        # row on Adult); row-major at the end unless asked, as training gathers rows.
        codes = np.zeros((n, len(self.cat_columns_)), dtype=np.int64, order="F")
        conts = np.empty((n, len(self.cont_columns_)), dtype=np.float32, order="F")
        position = {c: i for i, c in enumerate(self.cat_columns_)}
        kinds = getattr(self, "column_kinds_", {})
        for column in self.cat_names_:
            if column in given_codes:
                codes[:, position[column]] = given_codes[column]
                continue
            series = X[column]
            given = value_kind(series) if column in kinds else None
            # An all-missing column (NaN is a float) maps to the unknown token whatever
            # the training type: nothing to warn about.
            if not compatible_kinds(kinds.get(column), given) and not series.isna().all():
                warnings.warn(
                    f"column {column!r} held {kinds[column]} values at fit but holds {given} "
                    f"values here (dtype {series.dtype}); they do not match the training "
                    "categories and map to the unknown token: convert the column to its "
                    "training type", UserWarning, stacklevel=3)
            codes[:, position[column]] = self._vocabularies[column].codes(series, column)
        sources = {c: X[c] for c in self.cont_names_ if c not in given_numbers}
        dates = {d: self._dates(X[d], d) for d in self.date_names_}
        elapsed = {f"{d}_elapsed": d for d in self.date_names_}   # names need not be strings
        for date, series in dates.items():
            for part, values in date_parts(series, date).items():
                codes[:, position[part]] = self._vocabularies[part].codes(values, part)
        with np.errstate(over="ignore"):   # an overflow is reported below, by column
            for j, column in enumerate(self.cont_columns_):
                if column in given_numbers:
                    values = given_numbers[column]
                elif column in sources:
                    values = numeric_values(sources[column], column)
                else:
                    values = elapsed_seconds(dates[elapsed[column]])
                missing_rows = np.isnan(values)
                if column in self.na_names_:
                    codes[:, position[f"{column}_na"]] = missing_rows + 1
                if missing_rows.any():
                    values = np.where(missing_rows, self.medians_[column], values)  # a copy
                conts[:, j] = self._scale(values, column)
        if conts.size and not np.isfinite(conts).all():
            row, j = np.argwhere(~np.isfinite(conts))[0]
            raise _overflow_error(self, int(row), self.cont_columns_[j])
        if order == "F":
            return codes, conts
        return np.ascontiguousarray(codes), np.ascontiguousarray(conts)

    def _scale(self, values: np.ndarray, column) -> np.ndarray:
        """Filled numbers of a continuous output column as the network sees them (float64;
        the caller stores float32)."""
        if self.continuous_scaling == "quantile":
            values = to_normal(values, np.asarray(self.quantiles_[column]))
        scaled = (values - self.means_[column]) / self.stds_[column]
        if self.continuous_scaling == "robust":
            return smooth_clip(scaled)
        return scaled

    def continuous_values(self) -> list[np.ndarray | None]:
        """Per continuous output column, in order: the sorted distinct float32 values that
        :meth:`transform_arrays` gives for its training values, or None where the column
        had more than ``FEW_VALUES`` distinct values (or the state predates them).

        Exactly the numbers a network sees, so a fitted network can precompute its
        encoding of each (a prediction-time table, :mod:`tabembed.models.prediction_network`).
        """
        check_is_fitted(self, "categories_")
        few = getattr(self, "few_values_", {})
        points = []
        for column in self.cont_columns_:
            if column not in few:
                points.append(None)
                continue
            values = np.asarray(few[column], dtype=np.float64)
            with np.errstate(over="ignore"):
                scaled = self._scale(values, column).astype(np.float32)
            points.append(np.unique(scaled[np.isfinite(scaled)]))
        return points

    def _check_extra_columns(self, columns) -> None:
        """Columns not seen at fit are ignored; say so once per fitted preprocessor."""
        known = self.__dict__.get("_known_columns")
        if known is None:
            known = self.__dict__["_known_columns"] = frozenset(self.feature_names_in_.tolist())
        extra = [c for c in columns if c not in known]
        warned = self.__dict__.setdefault("_warned_extra", set())
        new = [c for c in extra if c not in warned]
        if new:
            warned.update(new)
            warnings.warn(
                f"X has column(s) {new} that were not seen at fit; they are ignored (the model "
                f"uses {list(self.feature_names_in_)})", UserWarning, stacklevel=4)

    def _dates(self, series: pd.Series, column) -> pd.Series:
        return dates_in_timezone(series, column, getattr(self, "timezones_", {}).get(column))

    def describe_extreme(self, conts: np.ndarray, row: int) -> str | None:
        """The continuous input of ``row`` furthest from the training data, in words
        (for errors about a non-finite output); ``None`` without continuous inputs."""
        if conts.shape[1] == 0:
            return None
        j = int(np.argmax(np.abs(conts[row])))
        column, scaled = self.cont_columns_[j], float(conts[row, j])
        if self.continuous_scaling == "standard":
            value = scaled * self.stds_[column] + self.means_[column]
            return (f"continuous column {column!r} is {value:.4g} there, {abs(scaled):.3g} "
                    "standard deviations from the training mean: check or clip that value")
        return f"continuous column {column!r} is {scaled:.4g} there (as scaled): check it"

    def encode(self, column, values) -> np.ndarray:
        """Codes of ``values`` in categorical output ``column`` (0 for unknown or missing)."""
        check_is_fitted(self, "categories_")
        series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
        return self._vocabularies[column].codes(series, column)

    def to_tensors(self, X: pd.DataFrame, *, order: str = "C"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's inputs: ``(codes int64 [n, n_cat], continuous float32 [n, n_cont])``,
        row-major or, with ``order="F"``, column-major (see :meth:`transform_arrays`)."""
        codes, conts = self.transform_arrays(X, order=order)
        return torch.from_numpy(codes), torch.from_numpy(conts)

    def transform(self, X):
        """Codes and continuous values side by side, as one float64 array."""
        codes, conts = self.transform_arrays(X)
        return np.hstack([codes.astype(np.float64), conts.astype(np.float64)])

    def bin_edges(self, n_bins: int) -> list[list[float]]:
        """Quantile bin edges of each continuous output column, in the *transformed* scale.

        At most ``n_bins + 1`` increasing edges per column (tied quantiles merge), for
        piecewise-linear encoding of the values ``transform_arrays`` returns.
        """
        check_is_fitted(self, "categories_")
        if self.continuous_scaling == "quantile":
            raise ValueError("bin_edges needs continuous_scaling='standard' or None")
        edges = []
        for column in self.cont_columns_:
            quantiles = np.asarray(self.quantiles_[column])
            levels = np.linspace(0, 1, len(quantiles))
            raw = np.interp(np.linspace(0, 1, n_bins + 1), levels, quantiles)
            scaled = self._scale(raw, column)
            # Narrow bins inside tied values are kept on purpose: they act as "exactly
            # this value" indicators (capital_gain == 0), which measured better on
            # Adult than merging them. Only edges equal in float32 are merged.
            scaled = np.unique(scaled.astype(np.float32))
            if len(scaled) < 2:
                scaled = np.array([scaled[0], scaled[0] + 1.0], dtype=np.float32)
            edges.append(scaled.astype(np.float64).tolist())
        return edges

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "categories_")
        return np.asarray([str(c) for c in self.cat_columns_ + self.cont_columns_], dtype=object)

    def decode(self, column, codes) -> np.ndarray:
        """Original values of a categorical output column's codes (``None`` for unknown)."""
        vocabulary = np.asarray([None, *self.categories_[column]], dtype=object)
        return vocabulary[np.asarray(codes)]

    # ------------------------------------------------------------ state

    def to_dict(self) -> dict:
        """JSON-safe fitted state; :meth:`from_dict` restores it without pickle."""
        check_is_fitted(self, "categories_")
        return preprocessor_state.state_of(self)

    @classmethod
    def from_dict(cls, state: dict) -> TabularPreprocessor:
        """The preprocessor :meth:`to_dict` described, checked as a whole."""
        params, fitted = preprocessor_state.read_state(state)
        self = cls(**params)
        self.__dict__.update(fitted)
        self._finish()
        preprocessor_state.check_state(self, FEW_VALUES)
        return self

    def check_model_inputs(self, cardinalities, n_continuous: int) -> None:
        """Raise ``ValueError`` unless a network's embedding tables and continuous inputs are
        those of this preprocessor's output (a loaded file's parts must agree)."""
        expected = [self.embedding_sizes_[c][0] for c in self.cat_columns_]
        if list(cardinalities) != expected or n_continuous != len(self.cont_columns_):
            raise ValueError(
                f"the network's embedding tables have {list(cardinalities)} rows and "
                f"{n_continuous} continuous inputs, but the preprocessor's vocabularies need "
                f"{expected} and {len(self.cont_columns_)}")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.input_tags.allow_nan = True
        return tags

