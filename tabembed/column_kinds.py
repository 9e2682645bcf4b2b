"""What a column holds: its role (categorical, continuous, date), its type family,
its numbers (checked) and its dates (in the training timezone).

The rules behind the preprocessor's errors live here: a string in a continuous
column, an infinite value or one beyond float32's range, a date column that
changed timezone. Each error names the column, the value and the fix.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from tabembed.column_statistics import merge_counts

__all__ = [
    "DATE_PARTS",
    "as_datetimes",
    "checked_numbers",
    "compatible_kinds",
    "count_values",
    "date_parts",
    "dates_in_timezone",
    "elapsed_seconds",
    "infer_roles",
    "numeric_values",
    "timezone_name",
    "value_kind",
]

DATE_PARTS = (
    "year", "month", "week", "day", "dayofweek", "dayofyear",
    "is_month_start", "is_month_end", "is_quarter_start", "is_quarter_end",
    "is_year_start", "is_year_end",
)
_NUMERIC_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "empty"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OBJECT_KINDS = {"string": "string", "unicode": "string", "bytes": "bytes",
                 "integer": "integer", "floating": "float", "mixed-integer-float": "float",
                 "decimal": "float", "boolean": "bool", "datetime64": "datetime",
                 "datetime": "datetime", "date": "datetime"}
_DTYPE_KINDS = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "M": "datetime"}
# ISO 8601 dates, optionally with a time and an offset: 2024-01-31, 2024-01-31T12:00:00Z.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                       r"(Z|[+-]\d{2}:?\d{2})?)?")


# ------------------------------------------------------------------ roles and kinds


def infer_roles(frame: pd.DataFrame, cat_names, cont_names, date_names):
    """``(cats, conts, dates, integers)``: the columns of each role, the roles not given
    inferred from the dtypes of ``frame`` (see TabularPreprocessor). ``integers`` are
    integer columns whose role waits on their number of distinct values."""
    named = {*(cat_names or []), *(cont_names or []), *(date_names or [])}
    for role, value in (("cat_names", cat_names), ("cont_names", cont_names),
                        ("date_names", date_names)):
        if value is not None and (isinstance(value, str) or not hasattr(value, "__iter__")):
            raise TypeError(f"{role} must be a list of column names, got {value!r}")
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise ValueError(f"columns named in the roles are not in the data: {sorted(missing)}")
    inferred = {"cat": [], "cont": [], "date": [], "int": []}
    for column in (c for c in frame.columns if c not in named):
        dtype = frame[column].dtype
        if pd.api.types.is_complex_dtype(dtype):
            raise ValueError(f"Complex data not supported (column {column!r})")
        kind = value_kind(frame[column]) if pd.api.types.is_object_dtype(dtype) else None
        if pd.api.types.is_datetime64_any_dtype(dtype):
            inferred["date"].append(column)
        elif kind == "integer":
            # An object column of numbers (a ColumnTransformer's numpy output): numeric.
            inferred["int"].append(column)
        elif kind == "float":
            inferred["cont"].append(column)
        elif pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            inferred["cat"].append(column)
            if date_names is None and _looks_like_dates(frame[column]):
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
    cats = list(cat_names) if cat_names is not None else inferred["cat"]
    conts = list(cont_names) if cont_names is not None else inferred["cont"]
    dates = list(date_names) if date_names is not None else inferred["date"]
    integers = inferred["int"] if (cat_names is None or cont_names is None) else []
    if cat_names is not None and cont_names is None:
        conts, integers = conts + integers, []
    elif cont_names is not None and cat_names is None:
        cats, integers = cats + integers, []
    return cats, conts, dates, integers


def value_kind(series: pd.Series) -> str | None:
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


def compatible_kinds(trained: str | None, given: str | None) -> bool:
    """Whether values of kind ``given`` index a vocabulary of kind ``trained``."""
    # Integers and floats index the same vocabulary (1 == 1.0); nothing else does.
    return (trained is None or given is None or trained == given
            or {trained, given} == {"integer", "float"})


def count_values(total: dict, series: pd.Series, column) -> None:
    """Add the counts of a categorical column's values to ``total``."""
    try:
        merge_counts(total, series.value_counts(dropna=True))
    except TypeError as error:
        raise ValueError(
            f"categorical column {column!r} holds unhashable values ({error}); "
            "convert lists/dicts to strings or tuples first"
        ) from error


# ------------------------------------------------------------------ numbers


def numeric_values(series: pd.Series, column) -> np.ndarray:
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
    return checked_numbers(values, column)


def checked_numbers(values: np.ndarray, column) -> np.ndarray:
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


# ------------------------------------------------------------------ dates


def date_parts(series: pd.Series, name: str) -> dict[str, pd.Series]:
    """The categorical parts of a date column, ``{f"{name}_{part}": values}``."""
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


def elapsed_seconds(series: pd.Series) -> np.ndarray:
    """Seconds since the Unix epoch (NaN where the date is missing)."""
    dates = pd.to_datetime(series)
    if dates.dt.tz is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    seconds = dates.to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
    return np.where(dates.isna().to_numpy(), np.nan, seconds)


def _looks_like_dates(series: pd.Series) -> bool:
    """Whether a string column holds ISO dates (judged on up to 50 distinct values)."""
    try:
        sample = series.dropna().unique()[:50]
    except TypeError:   # unhashable values: reported as such by fit
        return False
    return len(sample) > 0 and all(isinstance(v, str) and _ISO_DATE.fullmatch(v)
                                   for v in sample)


def as_datetimes(series: pd.Series, column) -> pd.Series:
    """A date column as datetimes; values that are not dates are an error naming it."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series
    try:
        return pd.to_datetime(series)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"date column {column!r} holds values that are not dates ({error}); "
                         "convert it with pd.to_datetime, or list the column in cat_names "
                         "or cont_names") from error


def timezone_name(series: pd.Series, column) -> str | None:
    """The timezone of a date column (None when naive)."""
    dates = as_datetimes(series, column)
    tz = getattr(dates.dt, "tz", None)
    return None if tz is None else str(tz)


def dates_in_timezone(series: pd.Series, column, trained: str | None) -> pd.Series:
    """A date column as datetimes in the training timezone ``trained``: the same instants
    give the same date parts whatever timezone they arrive in."""
    dates = as_datetimes(series, column)
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
