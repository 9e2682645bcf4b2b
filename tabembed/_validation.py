"""Input validation at the estimators' boundary (as ``sklearn.utils.validation``).

Every estimator turns its ``X`` into a DataFrame here, checks row counts and
the target's presence here, and so gives the same messages for the same
mistakes. Tables of other libraries (polars, pyarrow, anything that exports the
Arrow PyCapsule stream interface) come in through Arrow: one conversion for all
of them (:func:`arrow_table`, :func:`arrow_to_pandas`), with their column names
and types kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "arrow_table",
    "arrow_to_pandas",
    "as_frame",
    "check_column_names",
    "check_finite_predictions",
    "check_rows",
    "check_sample_weight",
    "frame_for_prediction",
    "has_feature_names",
    "require_target",
]


def as_frame(X, feature_names=None) -> pd.DataFrame:
    """A DataFrame from X (arrays get ``x0, x1, ...`` or the fitted names); never a copy we own.

    A polars DataFrame, a ``pyarrow.Table`` or any table exporting the Arrow
    PyCapsule interface keeps its column names and types (:func:`arrow_to_pandas`).
    A ``pyarrow.dataset.Dataset`` is refused with a pointer to the streaming
    entry point, since reading it whole is exactly what it exists to avoid.
    """
    if isinstance(X, pd.DataFrame):
        check_column_names(X.columns)
        return X
    if isinstance(X, pd.Series):
        return X.to_frame()
    table = arrow_table(X)
    if table is not None:
        return arrow_to_pandas(table)
    if hasattr(X, "tocsr") or hasattr(X, "sparse"):
        raise TypeError("sparse input is not supported: tabembed needs dense data; convert "
                        "with X.toarray() or pass a DataFrame")
    if X is None:
        raise ValueError("Expected a 2D array or a DataFrame, got None")
    if hasattr(X, "collect") and not hasattr(X, "__array__"):
        raise TypeError(f"X is a lazy {type(X).__name__}: call X.collect() and pass the "
                        "DataFrame it gives")
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(
            f"Expected a 2D array or a DataFrame, got an array of shape {array.shape}. "
            "Reshape your data with X.reshape(-1, 1) for a single feature or "
            "X.reshape(1, -1) for a single sample"
        )
    if np.iscomplexobj(array):
        raise ValueError("Complex data not supported")
    names = (list(feature_names) if feature_names is not None
             and len(feature_names) == array.shape[1]
             else [f"x{i}" for i in range(array.shape[1])])
    return pd.DataFrame(array, columns=names)


def arrow_table(X):
    """``X`` as a ``pyarrow.Table`` when it is a table of another kind than pandas; None
    when it is not a table (an array, a list).

    pyarrow's tables and record batches as they are; anything else that exports the
    Arrow PyCapsule interface (``__arrow_c_stream__``: polars, DuckDB, ...) through
    ``pyarrow.table``, without a copy where the producer allows it. A
    ``pyarrow.dataset.Dataset`` is refused: it is read in record batches, never whole.
    """
    if isinstance(X, pd.DataFrame | pd.Series):
        return None
    if type(X).__module__.startswith("pyarrow"):
        return _pyarrow_table(X)
    if not (hasattr(type(X), "__arrow_c_stream__") or hasattr(type(X), "__arrow_c_array__")):
        return None
    import pyarrow as pa

    try:
        return pa.table(X)
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise TypeError(
            f"{type(X).__name__} exports Arrow data that is not a table ({error}); pass a "
            "DataFrame (a single column as a one-column DataFrame). Reading polars' string "
            "columns needs pyarrow >= 16 (pip install 'tabembed[polars]')") from error


def _pyarrow_table(X):
    import pyarrow as pa

    if isinstance(X, pa.RecordBatch):
        return pa.Table.from_batches([X])
    if isinstance(X, pa.Table):
        return X
    import pyarrow.dataset as ds

    if isinstance(X, ds.Dataset):
        raise TypeError(
            "a pyarrow.dataset.Dataset is read in record batches, never whole: estimators "
            "fit from it with fit(dataset, y='target column') and predict with "
            "predict_to_parquet(dataset, destination); TabularPreprocessor.fit streams it "
            "too. To use it in memory, read the part you need with "
            "dataset.to_table().to_pandas()"
        )
    raise TypeError(f"unsupported pyarrow input {type(X).__name__}; pass a pyarrow.Table or a "
                    "pandas DataFrame")


def check_column_names(columns: pd.Index) -> None:
    """One plain name per column: a MultiIndex or tuple names are a ``ValueError`` with the
    fix (they made a 2-D array of names, and fit failed with "unhashable type: 'list'")."""
    if isinstance(columns, pd.MultiIndex):
        example = columns[0]
    else:
        if columns.inferred_type != "mixed":   # cached by the Index: no scan per predict
            return
        example = next((c for c in columns if isinstance(c, tuple)), None)
        if example is None:
            return
    raise ValueError(
        f"X has {'MultiIndex' if isinstance(columns, pd.MultiIndex) else 'tuple'} column names "
        f"(e.g. {example!r}); tabembed needs one string or number per column: flatten them "
        "first, e.g. X.columns = ['_'.join(map(str, c)) for c in X.columns]")


def arrow_to_pandas(table) -> pd.DataFrame:
    """A ``pyarrow.Table`` or ``RecordBatch`` as the DataFrame tabembed reads.

    Names as they are; dictionary columns (polars ``Categorical``/``Enum``) become
    ``category``, strings ``str``, and dates ``datetime64`` (pyarrow's default
    would give ``datetime.date`` objects, which read as categories): the same
    frame as polars' ``to_pandas``. Every Arrow-to-pandas step of tabembed goes
    through here, so a model fitted from memory and one fitted from Parquet see
    the same types.
    """
    return table.to_pandas(date_as_object=False)


def has_feature_names(X) -> bool:
    """Whether ``X`` names its columns (a DataFrame, an Arrow or polars table), unlike an
    array."""
    return (isinstance(X, pd.DataFrame) or type(X).__module__.startswith("pyarrow")
            or hasattr(type(X), "__arrow_c_stream__"))


def frame_for_prediction(estimator, X) -> pd.DataFrame:
    """X as the frame the fitted estimator expects; arrays must have the fitted width."""
    frame = as_frame(X, getattr(estimator, "feature_names_in_", None))
    if not has_feature_names(X) and frame.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {frame.shape[1]} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input")
    check_rows(frame)
    return frame


def require_target(estimator, y) -> None:
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target "
                         "y is None")


def check_rows(frame: pd.DataFrame, minimum: int = 1) -> None:
    if len(frame) < minimum:
        raise ValueError(
            f"Found array with {len(frame)} sample(s) (shape={frame.shape}) while a minimum "
            f"of {minimum} is required."
        )
    if frame.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={frame.shape}) while a "
                         "minimum of 1 is required.")


def check_finite_predictions(values: np.ndarray, describe=None) -> np.ndarray:
    """A fitted model never returns NaN or inf silently: name the rows instead.

    ``describe(row)``, when given, names the input that is furthest out in that row
    (:meth:`TabularPreprocessor.describe_extreme`).
    """
    finite = np.isfinite(values)
    if not finite.all():
        rows = np.flatnonzero(~finite.reshape(len(values), -1).all(axis=1))
        culprit = describe(int(rows[0])) if describe is not None else None
        raise ValueError(
            f"the network's output is not finite for {len(rows)} row(s) (first: row "
            f"{rows[0]}); their inputs are far outside the training data's range"
            + (f": {culprit}" if culprit else ": check them"))
    return values


def check_sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """Sample weights as float64 ``[n_rows]``: finite, non-negative, not all zero."""
    if isinstance(sample_weight, int | float | np.number) and not isinstance(sample_weight, bool):
        sample_weight = np.full(n_rows, float(sample_weight))
    weights = np.asarray(sample_weight)
    if weights.ndim != 1 or len(weights) != n_rows:
        raise ValueError(f"sample_weight.shape == {weights.shape}, expected ({n_rows},): one "
                         "weight per row")
    try:
        weights = weights.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"sample_weight must be numbers: {error}") from error
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight must be finite and non-negative; "
                         f"got {weights[~np.isfinite(weights) | (weights < 0)][:3].tolist()}")
    if not weights.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row must have weight")
    return weights
