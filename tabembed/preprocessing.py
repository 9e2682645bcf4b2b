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

import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtri
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from tabembed._validation import arrow_table, arrow_to_pandas, check_column_names
from tabembed.column_statistics import (
    Moments,
    column_histograms,
    exact_medians,
    histogram_quantiles,
    merge_counts,
)

__all__ = ["DATE_PARTS", "TabularPreprocessor", "embedding_size"]

FORMAT_VERSION = 1

DATE_PARTS = (
    "year", "month", "week", "day", "dayofweek", "dayofyear",
    "is_month_start", "is_month_end", "is_quarter_start", "is_quarter_end",
    "is_year_start", "is_year_end",
)
_NUMERIC_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "empty"}
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


def _date_parts(series: pd.Series, name: str) -> dict[str, pd.Series]:
    dates = pd.to_datetime(series)
    accessor = dates.dt
    parts = {
        "year": accessor.year, "month": accessor.month,
        "week": accessor.isocalendar().week.astype("Int64"), "day": accessor.day,
        "dayofweek": accessor.day_of_week, "dayofyear": accessor.day_of_year,
    }
    missing = dates.isna()
    for flag in DATE_PARTS[6:]:
        # Flags are categories; a missing date must map to the unknown token.
        parts[flag] = getattr(accessor, flag).astype("boolean").mask(missing)
    return {f"{name}_{part}": parts[part] for part in DATE_PARTS}


def _elapsed(series: pd.Series) -> np.ndarray:
    """Seconds since the Unix epoch (NaN where the date is missing)."""
    dates = pd.to_datetime(series)
    if dates.dt.tz is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    seconds = dates.to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
    return np.where(dates.isna().to_numpy(), np.nan, seconds)


def _numeric(series: pd.Series, column) -> np.ndarray:
    """float64 values of a continuous column; a non-numeric value is an error naming it."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iuf":
        # NumPy-backed: no pd.NA to replace, so skip to_numpy's missing-value scan.
        # float64 comes back as a view of the caller's frame: made read-only.
        values = series.to_numpy(dtype=np.float64)
        values.flags.writeable = False
    elif pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.infer_dtype(series, skipna=True) in _NUMERIC_KINDS:
        values = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
    elif not series.notna().any():
        # Nothing but missing values (NaT, None, pd.NA): filled like any missing value.
        values = np.full(len(series), np.nan)
    else:
        present = series[series.notna()]
        coerced = pd.to_numeric(present.astype(object), errors="coerce")
        bad = present[coerced.isna()]
        example = bad.iloc[0] if len(bad) else present.iloc[0]
        raise ValueError(
            f"continuous column {column!r} holds a non-numeric value {example!r} "
            f"(dtype {series.dtype}); convert it with pd.to_numeric, or list the column in "
            "cat_names if it is categorical"
        )
    return _checked_numbers(values, column)


def _check_order(order: str) -> None:
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' (row-major) or 'F' (column-major), got {order=}")


def _checked_numbers(values: np.ndarray, column) -> np.ndarray:
    """``values`` (float64), or an error naming the column for an infinite value or one
    beyond float32's range."""
    with np.errstate(invalid="ignore"):
        if (np.abs(values) <= _FLOAT32_MAX).all():    # one test for the common case
            return values
    infinite = int(np.isinf(values).sum())
    if infinite:
        raise ValueError(
            f"continuous column {column!r} has {infinite} infinite value(s); replace them "
            "(NaN is filled with the training median) before fitting or transforming"
        )
    huge = (values > _FLOAT32_MAX) | (values < -_FLOAT32_MAX)   # NaN compares False
    if huge.any():
        # The network computes in float32: such a value would become inf, then NaN.
        example = values[huge][0]
        raise ValueError(
            f"continuous column {column!r} holds {int(huge.sum())} value(s) beyond float32's "
            f"range (e.g. {float(example)!r}, row {int(np.flatnonzero(huge)[0])}); rescale the "
            f"column (e.g. divide it by a constant or take a log) so that |value| < 3.4e38"
        )
    return values


SCALINGS = ("standard", "quantile", "robust", None)
# Robust scaling's smooth clip: x / sqrt(1 + (x / SMOOTH_CLIP) ** 2) stays within +-3.
SMOOTH_CLIP = 3.0


def smooth_clip(values: np.ndarray) -> np.ndarray:
    """Squash robustly scaled values into (-3, 3), near the identity around 0."""
    return values / np.sqrt(1.0 + (values / SMOOTH_CLIP) ** 2)


def _robust_center_scale(median: float, quantiles: np.ndarray) -> tuple[float, float]:
    """Center and scale of ``"robust"`` scaling: the median and the interquartile range;
    half the range where the quartiles tie (a mostly constant column), 1 for a constant.
    The quantiles come from a histogram of 65,536 bins, so quartiles within a few bins of
    each other count as tied."""
    levels = np.linspace(0, 1, len(quantiles))
    low, high = np.interp([0.25, 0.75], levels, quantiles)
    scale, spread = high - low, quantiles[-1] - quantiles[0]
    if not scale > max(1e-12, 1e-4 * spread):
        scale = spread / 2
    return float(median), float(scale) if scale > 1e-12 else 1.0


def _to_normal(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Map values through the training CDF to a standard normal (ties get their mean rank)."""
    levels = np.linspace(0, 1, len(quantiles))
    # Interpolating both ways and averaging gives tied reference values their mid rank.
    rank = 0.5 * (np.interp(values, quantiles, levels)
                  - np.interp(-values, -quantiles[::-1], -levels[::-1]))
    return ndtri(np.clip(rank, 1e-7, 1 - 1e-7))


def _sorted_vocabulary(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:   # mixed types: a deterministic order all the same
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _python_scalar(value):
    return value.item() if isinstance(value, np.generic) else value


_KEYED = ("categories", "embedding_sizes", "medians", "means", "stds", "quantiles",
          "column_kinds", "timezones", "few_values")

_OBJECT_KINDS = {"string": "string", "unicode": "string", "bytes": "bytes",
                 "integer": "integer", "floating": "float", "mixed-integer-float": "float",
                 "decimal": "float", "boolean": "bool", "datetime64": "datetime",
                 "datetime": "datetime", "date": "datetime"}
# ISO 8601 dates, optionally with a time and an offset: 2024-01-31, 2024-01-31T12:00:00Z.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                       r"(Z|[+-]\d{2}:?\d{2})?)?")


def _kind(series: pd.Series) -> str | None:
    """The type family of a column's values: bool, integer, float, string, datetime, or
    mixed (None when it has no values to tell). Cheap: from the dtype when it tells."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):   # the (cached) type of its categories
        inferred = dtype.categories.inferred_type
        return None if inferred == "empty" else _OBJECT_KINDS.get(inferred, "mixed")
    if isinstance(dtype, pd.StringDtype):
        return "string"
    kind = getattr(dtype, "kind", "O")
    if kind in _DTYPE_KINDS:
        return _DTYPE_KINDS[kind]
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    return None if inferred == "empty" else _OBJECT_KINDS.get(inferred, "mixed")


_DTYPE_KINDS = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "M": "datetime"}


def _compatible(trained: str | None, given: str | None) -> bool:
    # Integers and floats index the same vocabulary (1 == 1.0); nothing else does.
    return (trained is None or given is None or trained == given
            or {trained, given} == {"integer", "float"})


def _looks_like_dates(series: pd.Series) -> bool:
    """Whether a string column holds ISO dates (judged on up to 50 distinct values)."""
    try:
        sample = series.dropna().unique()[:50]
    except TypeError:   # unhashable values: reported as such by fit
        return False
    return len(sample) > 0 and all(isinstance(v, str) and _ISO_DATE.fullmatch(v)
                                   for v in sample)


def _as_datetimes(series: pd.Series, column) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series
    try:
        return pd.to_datetime(series)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"date column {column!r} holds values that are not dates ({error}); "
                         "convert it with pd.to_datetime, or list the column in cat_names "
                         "or cont_names") from error


def _timezone(series: pd.Series, column):
    dates = _as_datetimes(series, column)
    tz = getattr(dates.dt, "tz", None)
    return None if tz is None else str(tz)


def _column_names(names) -> list:
    """``[[json_key, name], ...]`` for the column names JSON would turn into other strings."""
    pairs, seen = [], {}
    for name in names:
        name = _python_scalar(name)
        if (not isinstance(name, str | int | float) or isinstance(name, bool)
                or (isinstance(name, float) and not np.isfinite(name))):
            raise TypeError(
                f"column name {name!r} is a {type(name).__name__}; saved models keep column "
                "names that are strings, integers or floats: rename the column")
        key = str(name)
        if key in seen and not (seen[key] == name and type(seen[key]) is type(name)):
            raise ValueError(f"columns {seen[key]!r} and {name!r} have the same name as text "
                             f"({key!r}), which a saved model cannot tell apart: rename one")
        if key not in seen and not isinstance(name, str):
            pairs.append([key, name])
        seen[key] = name
    return pairs


def _restore_keys(mapping: dict, names: dict) -> dict:
    return {names.get(key, key): value for key, value in mapping.items()}


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
        self._check_columns(columns, where="fit")
        first = next(passes(), None)
        if first is None or len(first) == 0:
            raise ValueError("cannot fit TabularPreprocessor on an empty frame (0 rows)")
        cats, conts, dates, integers = self._roles(first)
        self.timezones_ = {d: _timezone(first[d], d) for d in dates}
        counts = {c: {} for c in cats + integers}
        moments = {c: Moments() for c in conts + integers + [f"{d}_elapsed" for d in dates]}
        n_rows = 0
        for frame in passes():
            n_rows += len(frame)
            for column in cats:
                self._count_values(counts[column], frame[column], column)
            for column in integers:
                if column in counts:
                    merge_counts(counts[column], frame[column].value_counts())
                    if len(counts[column]) > self.max_integer_categories:
                        del counts[column]   # too many values: continuous
                moments[column].update(_numeric(frame[column], column))
            for column in conts:
                moments[column].update(_numeric(frame[column], column))
            for column in dates:
                series = self._dates(frame[column], column)
                for part, values in _date_parts(series, column).items():
                    merge_counts(counts.setdefault(part, {}), values.value_counts())
                moments[f"{column}_elapsed"].update(_elapsed(series))
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
        self.column_kinds_ = {c: _kind(first[c]) for c in cats}
        self._fit_categories(counts, cats, dates, n_rows)
        self._fit_continuous(passes, moments)
        self._finish()
        self._fit_embedding_sizes()
        return self

    def _check_columns(self, columns, where: str) -> None:
        # An Index caches is_unique: rows cut from one frame share their columns' Index.
        index = columns if isinstance(columns, pd.Index) else pd.Index(columns)
        check_column_names(index)
        if index.has_duplicates:
            duplicated = sorted(map(str, index[index.duplicated()].unique()))
            raise ValueError(f"duplicate column names at {where}: {duplicated}; rename them")

    def _roles(self, frame: pd.DataFrame):
        named = {*(self.cat_names or []), *(self.cont_names or []), *(self.date_names or [])}
        for role in ("cat_names", "cont_names", "date_names"):
            value = getattr(self, role)
            if value is not None and (isinstance(value, str) or not hasattr(value, "__iter__")):
                raise TypeError(f"{role} must be a list of column names, got {value!r}")
        missing = [c for c in named if c not in frame.columns]
        if missing:
            raise ValueError(f"columns named in the roles are not in the data: {sorted(missing)}")
        free = [c for c in frame.columns if c not in named]
        inferred = {"cat": [], "cont": [], "date": [], "int": []}
        for column in free:
            dtype = frame[column].dtype
            if pd.api.types.is_complex_dtype(dtype):
                raise ValueError(f"Complex data not supported (column {column!r})")
            kind = _kind(frame[column]) if pd.api.types.is_object_dtype(dtype) else None
            if pd.api.types.is_datetime64_any_dtype(dtype):
                inferred["date"].append(column)
            elif kind == "integer":
                # An object column of numbers (a ColumnTransformer's numpy output): numeric.
                inferred["int"].append(column)
            elif kind == "float":
                inferred["cont"].append(column)
            elif pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
                inferred["cat"].append(column)
                if self.date_names is None and _looks_like_dates(frame[column]):
                    warnings.warn(
                        f"column {column!r} holds ISO date strings; it is treated as a "
                        "categorical column (one embedding per distinct value). To expand it "
                        f"into date parts, pass date_names=[{column!r}] (or convert it with "
                        "pd.to_datetime); to keep it categorical without this warning, list "
                        "it in cat_names", UserWarning, stacklevel=3)
            elif pd.api.types.is_integer_dtype(dtype):
                inferred["int"].append(column)
            else:
                inferred["cont"].append(column)
        cats = list(self.cat_names) if self.cat_names is not None else inferred["cat"]
        conts = list(self.cont_names) if self.cont_names is not None else inferred["cont"]
        dates = list(self.date_names) if self.date_names is not None else inferred["date"]
        integers = inferred["int"] if (self.cat_names is None or self.cont_names is None) else []
        if self.cat_names is not None and self.cont_names is None:
            conts, integers = conts + integers, []
        elif self.cont_names is not None and self.cat_names is None:
            cats, integers = cats + integers, []
        return cats, conts, dates, integers

    @staticmethod
    def _count_values(total: dict, series: pd.Series, column) -> None:
        try:
            merge_counts(total, series.value_counts(dropna=True))
        except TypeError as error:
            raise ValueError(
                f"categorical column {column!r} holds unhashable values ({error}); "
                "convert lists/dicts to strings or tuples first"
            ) from error

    def _fit_categories(self, counts, cats, dates, n_rows) -> None:
        threshold = self.min_frequency or 0
        if isinstance(threshold, float) and 0 < threshold < 1:
            threshold = threshold * n_rows
        self.categories_ = {}
        for column in cats + [f"{d}_{p}" for d in dates for p in DATE_PARTS]:
            values = counts.get(column, {})
            if not values and column in cats:
                raise ValueError(
                    f"categorical column {column!r} has no non-missing value in the training "
                    "data; drop it or fill it before fitting"
                )
            kept = [_python_scalar(v) for v, n in values.items() if n >= threshold]
            self.categories_[column] = _sorted_vocabulary(kept)

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
                arrays = {c: _numeric(frame[c], c) for c in self.cont_names_}
                arrays.update({f"{d}_elapsed": _elapsed(self._dates(frame[d], d))
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
                self.means_[column], self.stds_[column] = _robust_center_scale(
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
        self._indexes = {c: pd.Index(v, dtype=object if not v else None)
                         for c, v in self.categories_.items()}
        # Dictionaries for a few rows of a string column: pd.Index.get_indexer costs
        # ~80 us a call whatever the length, most of a one-row prediction's time.
        self._string_codes = {c: {value: code for code, value in enumerate(v, start=1)}
                              for c, v in self.categories_.items()
                              if v and all(isinstance(value, str) for value in v)}
        # The same for integer vocabularies, read from NumPy integer columns only (where
        # get_indexer's matching is plain equality of ints).
        self._integer_codes = {
            c: {int(value): code for code, value in enumerate(v, start=1)}
            for c, v in self.categories_.items()
            if v and all(isinstance(value, int | np.integer) and not isinstance(value, bool)
                         for value in v)}
        self.__dict__.pop("_category_codes", None)

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
                encoded = self._encode_dictionary(table.column(column), column)
                if encoded is not None:
                    codes[column] = encoded
        for column in self.cont_names_:
            values = table.column(column)
            if values.null_count == 0 and (
                    pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                numbers[column] = _checked_numbers(values.to_numpy().astype(np.float64), column)
        rest = [c for c in self._input_names() if c not in codes and c not in numbers]
        frame = arrow_to_pandas(table.select(rest))
        return self._transform(frame, table.num_rows, order, codes, numbers)

    def _encode_dictionary(self, values, column) -> np.ndarray | None:
        """Codes of an Arrow dictionary column of strings, each chunk mapped by its
        dictionary's values as :meth:`_encode` maps a categorical's categories; None for
        any other column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        kind = values.type
        if not values.num_chunks or not pa.types.is_dictionary(kind) or not (
                pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
            return None
        if any(chunk.dictionary.null_count for chunk in values.chunks):
            return None
        parts = []
        for chunk in values.chunks:
            lookup = np.append(
                self._indexes[column].get_indexer(chunk.dictionary.to_pandas()) + 1, 0)
            indices = chunk.indices if not chunk.null_count else pc.fill_null(chunk.indices, -1)
            parts.append(lookup[indices.to_numpy().astype(np.intp)])  # -1 (missing) hits the 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _input_names(self) -> list:
        """The input columns the transform reads: categorical, continuous, dates."""
        return self.cat_names_ + self.cont_names_ + self.date_names_

    def _check_given_columns(self, columns: pd.Index) -> None:
        """Duplicates and missing columns are errors; extra ones are ignored (a warning)."""
        self._check_columns(columns, where="transform")
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
            given = _kind(series) if column in kinds else None
            # An all-missing column (NaN is a float) maps to the unknown token whatever
            # the training type: nothing to warn about.
            if not _compatible(kinds.get(column), given) and not series.isna().all():
                warnings.warn(
                    f"column {column!r} held {kinds[column]} values at fit but holds {given} "
                    f"values here (dtype {series.dtype}); they do not match the training "
                    "categories and map to the unknown token: convert the column to its "
                    "training type", UserWarning, stacklevel=3)
            codes[:, position[column]] = self._encode(series, column)
        sources = {c: X[c] for c in self.cont_names_ if c not in given_numbers}
        dates = {d: self._dates(X[d], d) for d in self.date_names_}
        elapsed = {f"{d}_elapsed": d for d in self.date_names_}   # names need not be strings
        for date, series in dates.items():
            for part, values in _date_parts(series, date).items():
                codes[:, position[part]] = self._encode(values, part)
        with np.errstate(over="ignore"):   # an overflow is reported below, by column
            for j, column in enumerate(self.cont_columns_):
                if column in given_numbers:
                    values = given_numbers[column]
                elif column in sources:
                    values = _numeric(sources[column], column)
                else:
                    values = _elapsed(dates[elapsed[column]])
                missing_rows = np.isnan(values)
                if column in self.na_names_:
                    codes[:, position[f"{column}_na"]] = missing_rows + 1
                if missing_rows.any():
                    values = np.where(missing_rows, self.medians_[column], values)  # a copy
                conts[:, j] = self._scale(values, column)
        if conts.size and not np.isfinite(conts).all():
            self._report_overflow(conts)
        if order == "F":
            return codes, conts
        return np.ascontiguousarray(codes), np.ascontiguousarray(conts)

    def _scale(self, values: np.ndarray, column) -> np.ndarray:
        """Filled numbers of a continuous output column as the network sees them (float64;
        the caller stores float32)."""
        if self.continuous_scaling == "quantile":
            values = _to_normal(values, np.asarray(self.quantiles_[column]))
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
        """A date column as datetimes in the training timezone: the same instants give the
        same date parts whatever timezone they arrive in."""
        dates = _as_datetimes(series, column)
        trained = getattr(self, "timezones_", {}).get(column)
        given = getattr(dates.dt, "tz", None)
        if trained is None and given is None:
            return dates
        if trained is None:
            raise ValueError(
                f"date column {column!r} was timezone-naive at fit but is in {given} here; "
                f"drop the timezone the same way as in training (e.g. "
                f"X[{column!r}].dt.tz_convert(None) for UTC wall times)")
        if given is None:
            raise ValueError(
                f"date column {column!r} was in timezone {trained} at fit but is "
                f"timezone-naive here; localize it: X[{column!r}].dt.tz_localize({trained!r})")
        return dates if str(given) == trained else dates.dt.tz_convert(trained)

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

    def _report_overflow(self, conts: np.ndarray) -> None:
        """A value so far outside the training data that its scaled form overflows float32."""
        row, j = np.argwhere(~np.isfinite(conts))[0]
        column = self.cont_columns_[j]
        raise ValueError(
            f"continuous column {column!r} holds a value (row {row}) so far outside the "
            f"training data (mean {self.means_[column]:.4g}, std {self.stds_[column]:.4g}) "
            "that scaled it overflows float32; check that row, or clip the column to a "
            "plausible range"
        )

    def encode(self, column, values) -> np.ndarray:
        """Codes of ``values`` in categorical output ``column`` (0 for unknown or missing)."""
        check_is_fitted(self, "categories_")
        series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
        return self._encode(series, column)

    def _encode(self, series: pd.Series, column) -> np.ndarray:
        codes = self._encode_few(series, column)
        if codes is not None:
            return codes
        index = self._indexes[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            # Map the (few) categories by value, then gather: never trust the codes.
            lookup = np.append(index.get_indexer(series.cat.categories) + 1, 0)
            # Code -1 (missing) hits the 0. The codes as intp first: NumPy indexes with int8
            # codes through a casting loop (163 us for 65,536 rows; 15 + 52 us this way).
            return lookup[series.cat.codes.to_numpy().astype(np.intp)]
        try:
            return index.get_indexer(series) + 1
        except TypeError as error:
            raise ValueError(
                f"categorical column {column!r} holds unhashable values ({error}); "
                "convert lists/dicts to strings or tuples first"
            ) from error

    def _encode_few(self, series: pd.Series, column) -> np.ndarray | None:
        """Codes by dictionary for up to 16 rows: strings or string categories (or missing
        values) in a string-vocabulary column, or a NumPy integer column in an integer
        vocabulary; None when that does not apply. Same codes as ``get_indexer``
        (tests/test_preprocessing.py checks it)."""
        if len(series) > 16:
            return None
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iu":
            numbers = self.__dict__.get("_integer_codes", {}).get(column)
            if numbers is None:
                return None
            return np.array([numbers.get(value, 0) for value in series.tolist()],
                            dtype=np.int64)
        lookup = self._string_codes.get(column)
        if lookup is None:
            return None
        if isinstance(dtype, pd.CategoricalDtype):
            # Rows cut from one frame share its dtype object: map its categories once.
            cache = self.__dict__.setdefault("_category_codes", {})
            cached = cache.get(column)
            if cached is not None and cached[0] is dtype:
                return cached[1][series.array.codes]
            categorical = series.array
            if len(categorical.categories) > 256:
                return None
            categories = categorical.categories.tolist()
            if not all(isinstance(category, str) for category in categories):
                return None
            # Map the categories by value, then gather: never trust the codes.
            by_code = np.array([*(lookup.get(c, 0) for c in categories), 0])
            cache[column] = (dtype, by_code)
            return by_code[categorical.codes]   # code -1 (missing) hits the 0
        values = series.tolist()
        if not all(isinstance(value, str) or value is None or value is pd.NA
                   or (isinstance(value, float) and value != value) for value in values):
            return None
        return np.array([lookup.get(value, 0) if isinstance(value, str) else 0
                         for value in values], dtype=np.int64)

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
        indicators = {f"{c}_na" for c in self.na_names_}
        state = {
            "format": "tabembed.TabularPreprocessor",
            "version": FORMAT_VERSION,
            # A custom embedding_rule has no JSON form; the sizes it gave are saved below.
            "params": {k: v for k, v in self.get_params().items() if k != "embedding_rule"},
            "feature_names_in": [_python_scalar(c) for c in self.feature_names_in_],
            "cat_names": self.cat_names_, "cont_names": self.cont_names_,
            "date_names": self.date_names_, "na_names": self.na_names_,
            "categories": {k: v for k, v in self.categories_.items() if k not in indicators},
            "embedding_sizes": {k: list(v) for k, v in self.embedding_sizes_.items()},
            "medians": self.medians_, "means": self.means_, "stds": self.stds_,
            "quantiles": self.quantiles_,
            "few_values": getattr(self, "few_values_", {}),
            "column_kinds": getattr(self, "column_kinds_", {}),
            "timezones": getattr(self, "timezones_", {}),
        }
        # JSON keys are strings: remember the columns whose names are not (ints, floats).
        used = [*self.feature_names_in_, *self.cat_names_, *self.cont_names_, *self.date_names_,
                *(self.embedding_sizes or {})]
        for field in _KEYED:
            used.extend(state[field])
        state["column_names"] = _column_names(used)
        for column, values in state["categories"].items():
            for value in values:
                if not isinstance(value, str | int | float | bool):
                    raise TypeError(
                        f"category {value!r} of column {column!r} is a {type(value).__name__}, "
                        "which has no JSON form; convert the column to strings first"
                    )
        return state

    @classmethod
    def from_dict(cls, state: dict) -> TabularPreprocessor:
        if state.get("format") != "tabembed.TabularPreprocessor":
            raise ValueError("not a TabularPreprocessor state (format field missing or wrong)")
        if state.get("version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"this state was written by a newer tabembed (format version "
                f"{state['version']} > {FORMAT_VERSION}); upgrade tabembed to read it"
            )
        names = {key: name for key, name in state.get("column_names", [])}
        state = {**state, **{field: _restore_keys(state[field], names) for field in _KEYED
                             if isinstance(state.get(field), dict)}}
        params = dict(state["params"])
        if isinstance(params.get("embedding_sizes"), dict):
            params["embedding_sizes"] = _restore_keys(params["embedding_sizes"], names)
        self = cls(**params)
        self.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.cat_names_ = list(state["cat_names"])
        self.cont_names_ = list(state["cont_names"])
        self.date_names_ = list(state["date_names"])
        self.categories_ = {k: list(v) for k, v in state["categories"].items()}
        self.na_names_ = list(state["na_names"])
        self.medians_ = dict(state["medians"])
        self.means_ = dict(state["means"])
        self.stds_ = dict(state["stds"])
        self.quantiles_ = dict(state.get("quantiles", {}))
        self.few_values_ = {k: list(v) for k, v in state.get("few_values", {}).items()}
        # Files of the first release lack these: no type-change warnings, naive dates.
        self.column_kinds_ = dict(state.get("column_kinds", {}))
        self.timezones_ = dict(state.get("timezones", {}))
        self._finish()
        self.embedding_sizes_ = {k: tuple(v) for k, v in state["embedding_sizes"].items()}
        self._check_state()
        return self

    def _check_state(self) -> None:
        """A restored state fits together (a damaged file must not fail later, at predict)."""
        def damaged(why):
            return ValueError(f"damaged TabularPreprocessor state: {why}")

        if self.continuous_scaling not in SCALINGS:
            raise damaged(f"continuous_scaling={self.continuous_scaling!r}")
        inputs = set(self.feature_names_in_.tolist())
        roles = self._input_names()
        if not set(roles) <= inputs or len(set(roles)) != len(roles):
            raise damaged(f"the column roles {roles} do not match the input columns "
                          f"{sorted(map(str, inputs))}")
        for column in self.cat_columns_:
            values = self.categories_[column]
            if not all(isinstance(v, str | int | float | bool) for v in values) \
                    or len(set(values)) != len(values):
                raise damaged(f"the vocabulary of {column!r} holds repeated or non-scalar values")
        if list(self.embedding_sizes_) != self.cat_columns_:
            raise damaged(f"embedding sizes are given for {list(self.embedding_sizes_)}, "
                          f"the categorical columns are {self.cat_columns_}")
        for column, size in self.embedding_sizes_.items():
            if not (len(size) == 2 and all(isinstance(n, int) and n >= 1 for n in size)
                    and size[0] == len(self.categories_[column]) + 1):
                raise damaged(f"column {column!r} has {len(self.categories_[column])} values "
                              f"but an embedding table of {size}")
        for column in self.cont_columns_:
            stats = [self.medians_.get(column), self.means_.get(column), self.stds_.get(column)]
            if not all(isinstance(v, int | float) and np.isfinite(v) for v in stats) \
                    or stats[2] <= 0:
                raise damaged(f"continuous column {column!r} lacks a finite median, mean or "
                              f"positive std: {stats}")
            few = self.few_values_.get(column, [])
            if len(few) > FEW_VALUES or not all(
                    isinstance(v, int | float) and math.isfinite(v) for v in few):
                raise damaged(f"the distinct values of {column!r} are not {FEW_VALUES} or "
                              "fewer finite numbers")
            if self.continuous_scaling == "quantile":
                quantiles = np.asarray(self.quantiles_.get(column, []), dtype=np.float64)
                if quantiles.ndim != 1 or len(quantiles) < 2 or not np.isfinite(quantiles).all() \
                        or (np.diff(quantiles) < 0).any():
                    raise damaged(f"the quantiles of {column!r} are not increasing numbers")

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

