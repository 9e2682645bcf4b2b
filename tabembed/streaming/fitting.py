"""What fitting needs, computed by streaming: preprocessor, target encoding, batch size.

Each function makes bounded-memory passes over a Parquet dataset, one row
group at a time, and returns the same fitted objects the estimators build
from a DataFrame.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from tabembed.column_statistics import Moments
from tabembed.streaming.dataset import RowGroups, open_dataset
from tabembed.targets import TASKS, TargetTransformer

__all__ = ["column_bounds", "fit_preprocessor", "fit_target"]

MAX_CLASSES = 10_000


def fit_preprocessor(data, preprocessor, *, exclude=()):
    """Fit ``preprocessor`` by streaming ``data``, leaving out the ``exclude`` columns.

    ``exclude`` names the target (and any other column that is not a
    feature); the preprocessor never sees them. The preprocessor's passes read
    one row group at a time (:meth:`RowGroups.sequential`). Returns the
    preprocessor.
    """
    dataset = open_dataset(data)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    missing = [c for c in exclude if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"columns to exclude are not in the dataset: {missing}; its columns "
                         f"are {dataset.schema.names}")
    if len(exclude) == len(dataset.schema.names):
        raise ValueError(f"no feature column left after excluding {exclude}")
    row_groups = RowGroups(dataset)
    roles = [getattr(preprocessor, r, None) for r in ("cat_names", "cont_names", "date_names")]
    if all(isinstance(role, list | tuple) for role in roles):
        features = [c for role in roles for c in role]
    else:   # features inferred from every column: one only in later files would be missed
        unlisted = {c: path for c, path in row_groups.unlisted_columns().items()
                    if c not in exclude}
        if unlisted:
            column, path = next(iter(unlisted.items()))
            raise ValueError(
                f"the column {column!r} of {path} is not in the dataset's schema (its first "
                f"file's, {dataset.files[0]}): it would never be read (columns only in some "
                f"files: {sorted(unlisted)}). Every file of a dataset must hold the same "
                "columns: add the column to every file, or name the features with "
                "cat_names/cont_names/date_names")
        features = [c for c in dataset.schema.names if c not in exclude]
    row_groups.require(features, "the preprocessor's fit")
    return preprocessor.fit(row_groups.sequential(exclude=exclude))


def _values(column: pa.Array, name: str) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        raise ValueError(f"the target column {name!r} holds lists (multi-label); streaming "
                         "multi-label targets is not supported yet: train from a DataFrame")
    if column.null_count:
        raise ValueError(f"the target column {name!r} has missing values ({column.null_count} "
                         "in one row group); drop those rows first")
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"the target column {name!r} has NaN or infinite values; drop or clip "
                         "those rows first")
    return values


def fit_target(data, column: str, *, task: str = "auto", scale: str | None = None,
               max_classes: int = MAX_CLASSES) -> TargetTransformer:
    """A fitted :class:`~tabembed.targets.TargetTransformer` from one pass over ``column``.

    The result equals ``TargetTransformer(task, scale).fit(whole_column)``:
    the same task (``"auto"`` follows scikit-learn's ``type_of_target``:
    non-integer floats are regression, anything else classes), the same sorted
    ``classes_``, and for regression the same mean and population std
    (merged exactly across batches). Memory holds the distinct labels only;
    more than ``max_classes`` distinct labels is an error for classification.
    """
    if task not in ("auto", *TASKS):
        raise ValueError(f"task must be 'auto' or one of {TASKS}, got {task!r}")
    if task == "multilabel":
        raise ValueError("streaming multi-label targets is not supported yet: train from a "
                         "DataFrame")
    if scale not in (None, "standard", "log"):
        raise ValueError(f"scale must be None, 'standard' or 'log', got {scale!r}")
    row_groups = RowGroups(open_dataset(data))
    if column not in row_groups.dataset.schema.names:
        raise ValueError(f"the target column {column!r} is not in the dataset; its columns are "
                         f"{row_groups.dataset.schema.names}")
    row_groups.require([column], "the target")
    classify, regress = task != "regression", task in ("auto", "regression")
    labels, moments, n_rows = None, Moments(), 0
    for index in range(len(row_groups)):
        values = _values(row_groups.read(index, [column])[column].combine_chunks(), column)
        n_rows += len(values)
        numeric = values.dtype.kind in "biuf"
        if regress:
            if numeric:
                moments.update(values.astype(np.float64))
            elif task == "regression":
                raise ValueError(f"a regression target must be numeric; column {column!r} "
                                 f"holds {values.dtype} values such as {values[0]!r}")
            else:
                regress = False
        if classify and task == "auto" and values.dtype.kind == "f" \
                and (values != np.floor(values)).any():
            classify, labels = False, None   # non-integer floats: continuous, as type_of_target
        if classify:
            batch_labels = np.unique(values)
            labels = batch_labels if labels is None else np.union1d(labels, batch_labels)
            if len(labels) > max_classes:
                raise ValueError(
                    f"the target column {column!r} has more than {max_classes} distinct labels; "
                    "pass task='regression' for a numeric target (ratings, counts), or raise "
                    "max_classes"
                )
    if n_rows == 0:
        raise ValueError("cannot fit a target with 0 rows")
    if task == "auto":
        task = ("binary" if len(labels) <= 2 else "multiclass") if classify else "regression"
    transformer = TargetTransformer(task=task, scale=scale)
    transformer.task_ = task
    if task == "regression":
        if scale == "log" and moments.minimum <= -1:
            raise ValueError("scale='log' needs targets greater than -1 (it applies log1p)")
        transformer.mean_ = float(moments.mean)
        transformer.std_ = float(math.sqrt(moments.squares / moments.count)) or 1.0
        return transformer
    if scale is not None:
        raise ValueError(f"scale={scale!r} applies to regression, not {task}")
    if len(labels) < 2:
        raise ValueError(f"the target has a single class {labels.tolist()}; a classifier needs "
                         "at least two")
    if task == "binary" and len(labels) > 2:
        raise ValueError(f"task='binary' but the target has {len(labels)} classes")
    transformer.classes_ = labels
    return transformer


def column_bounds(data, column: str) -> tuple[float, float]:
    """The smallest and largest value of a numeric column, one record batch at a time."""
    import pyarrow.compute as pc

    low, high = np.inf, -np.inf
    for batch in open_dataset(data).to_batches(columns=[column]):
        extremes = pc.min_max(batch.column(0))
        low = min(low, extremes["min"].as_py())
        high = max(high, extremes["max"].as_py())
    return float(low), float(high)
