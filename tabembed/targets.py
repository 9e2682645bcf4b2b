"""TargetTransformer: encode targets for training and decode predictions back.

Binary and multiclass labels become integer codes in the order of
``classes_`` (sorted, as scikit-learn's ``LabelEncoder``); multi-label targets
(an indicator matrix, or one collection of labels per row) become a float
indicator matrix; regression targets are optionally standardised or
log-transformed (``log1p``) and decoded back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

# Scaled regression targets beyond this: their float32 squared errors overflow.
MAX_SCALED_TARGET = 1e18

__all__ = ["TASKS", "TargetTransformer"]

TASKS = ("binary", "multiclass", "multilabel", "regression")
_SCALES = (None, "standard", "log")
_MAX_TARGET = 1e300


def is_label_sets(y) -> bool:
    """Whether ``y`` holds one collection of labels per row (multi-label)."""
    if isinstance(y, pd.DataFrame) or (isinstance(y, np.ndarray) and y.ndim == 2):
        return False
    if not hasattr(y, "__len__") or not hasattr(y, "__iter__"):
        return False
    first = next(iter(y), None) if len(y) else None
    return isinstance(first, list | tuple | set | frozenset)


def distinct_labels(values: np.ndarray) -> np.ndarray:
    """The distinct values of 1-D labels, in order of first appearance; other arrays as
    they are. scikit-learn's ``type_of_target`` and ``np.unique`` answer the same on them
    as on all the rows, in a fraction of the time (Adult's 32k string labels: 15 -> 1 ms
    each, three calls a fit)."""
    return _factorized(values)[1]


def _factorized(values: np.ndarray):
    """``(positions or None, distinct values)``: ``distinct[positions]`` is ``values``; no
    factorization (None, ``values``) unless they are 1-D and hashable."""
    if values.ndim != 1:
        return None, values
    try:
        positions, distinct = pd.factorize(values)
    except TypeError:          # unhashable labels
        return None, values
    return positions, np.asarray(distinct, dtype=values.dtype)


class TargetTransformer(TransformerMixin, BaseEstimator):
    """Encode a target for a model and decode its outputs.

    Parameters
    ----------
    task : {"auto", "binary", "multiclass", "multilabel", "regression"}
        ``"auto"`` uses scikit-learn's ``type_of_target``. Integer targets
        with few values look multiclass: say ``"regression"`` for ratings.
    scale : {None, "standard", "log"}
        Regression only: standardise with the training mean and std, or
        ``log1p`` (targets must be greater than -1).

    Attributes
    ----------
    task_ : str
    classes_ : ndarray
        Class labels (classification), or label names (multi-label).
    mean_, std_ : float
        Regression statistics used by ``scale="standard"``.
    """

    def __init__(self, task: str = "auto", scale: str | None = None):
        self.task = task
        self.scale = scale

    def fit(self, y):
        if self.task not in ("auto", *TASKS):
            raise ValueError(f"task must be 'auto' or one of {TASKS}, got {self.task!r}")
        if self.scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {self.scale!r}")
        if len(y) == 0:
            raise ValueError("cannot fit a target with 0 rows")
        if is_label_sets(y):
            self.task_ = "multilabel"
            self._binarizer = MultiLabelBinarizer().fit(y)
            self.classes_ = self._binarizer.classes_
            return self
        values = self.check_values(y)
        task = self.task
        if task == "auto":
            kind = type_of_target(distinct_labels(values))
            if kind == "multiclass-multioutput":
                raise ValueError(
                    f"y has {values.shape[1]} columns of class labels; a 2-D y must be a 0/1 "
                    "indicator matrix (multi-label). For several label columns, fit one "
                    "classifier per column: sklearn.multioutput.MultiOutputClassifier("
                    "EmbeddingMLPClassifier())")
            task = {"binary": "binary", "multiclass": "multiclass",
                    "multilabel-indicator": "multilabel"}.get(kind, "regression")
        if task == "multilabel":
            self.classes_ = (np.asarray(y.columns, dtype=object) if isinstance(y, pd.DataFrame)
                             else np.arange(values.shape[1]))
        elif task in ("binary", "multiclass"):
            self.classes_ = np.unique(distinct_labels(values))
            if len(self.classes_) < 2:
                raise ValueError(
                    f"the target has a single class {self.classes_.tolist()}; a classifier "
                    "needs at least two"
                )
            if task == "binary" and len(self.classes_) > 2:
                raise ValueError(f"task='binary' but the target has {len(self.classes_)} classes")
        else:
            self._fit_regression(values)
        if self.scale is not None and task != "regression":
            raise ValueError(f"scale={self.scale!r} applies to regression, not {task}")
        self.task_ = task
        return self

    @staticmethod
    def check_values(y) -> np.ndarray:
        """``y`` as an array; missing or infinite values are an error."""
        values = np.asarray(y)
        if pd.isna(values).any():
            count = int(pd.isna(values).sum())
            raise ValueError(f"the target has {count} missing value(s) (NaN, None or pd.NA); "
                             "drop those rows first")
        if values.dtype.kind in "fc":
            infinite = int(np.isinf(values).sum())
        elif values.dtype.kind == "O":
            # Numbers among objects (a target read as object): look for inf among them,
            # once per distinct value (class labels repeat: 32k rows, 2 values on Adult).
            try:
                positions, distinct = pd.factorize(values.ravel())
            except TypeError:      # unhashable values: every row
                distinct, positions = values.ravel(), np.arange(values.size)
            numbers = pd.to_numeric(pd.Series(distinct, dtype=object), errors="coerce")
            flags = np.isinf(numbers.to_numpy(dtype=np.float64, na_value=0.0))
            infinite = int(flags[positions].sum())
        else:
            infinite = 0
        if infinite:
            raise ValueError(f"Input y contains infinity ({infinite} value(s)); drop or clip "
                             "those rows first")
        return values

    def _fit_regression(self, values: np.ndarray) -> None:
        if values.ndim == 2 and values.shape[1] > 1:
            raise ValueError(
                f"y has {values.shape[1]} columns; the regressor predicts one target. Fit one "
                "regressor per column: sklearn.multioutput.MultiOutputRegressor("
                "EmbeddingMLPRegressor())")
        try:
            values = values.astype(np.float64)
        except ValueError as error:
            raise ValueError(f"a regression target must be numeric: {error}") from error
        if self.scale == "log" and (values <= -1).any():
            raise ValueError("scale='log' needs targets greater than -1 (it applies log1p)")
        # Scaled by the largest magnitude first, so that targets up to float64's range
        # (1e200 and beyond) do not overflow the squares of the variance.
        scale = float(np.abs(values).max()) or 1.0
        if not np.isfinite(scale):
            raise ValueError("a regression target must be finite numbers")
        if scale > _MAX_TARGET:
            # Predictions are decoded as value * std + mean: leave room to extrapolate.
            raise ValueError(f"the regression target reaches {scale:.3g}; targets beyond "
                             f"+-{_MAX_TARGET:g} would overflow when predictions are decoded: "
                             "rescale y (divide it by a constant)")
        self.mean_ = float((values / scale).mean() * scale)
        self.std_ = float((values / scale).std() * scale) or 1.0
        if self.scale == "standard" and self.std_ / scale < 1e-12:
            self.std_ = scale       # (near-)constant targets: unit-scale them, never divide by 0

    def transform(self, y) -> np.ndarray:
        """Codes (int64) for classes, a float32 matrix for multi-label, float32 for regression."""
        check_is_fitted(self, "task_")
        if self.task_ == "multilabel":
            if hasattr(self, "_binarizer"):
                return self._binarizer.transform(y).astype(np.float32)
            return self.check_values(y).astype(np.float32)
        values = self.check_values(y)
        if self.task_ == "regression":
            values = values.astype(np.float64)
            if self.scale == "standard":
                values = (values - self.mean_) / self.std_
            elif self.scale == "log":
                values = np.log1p(values)
            # Squared errors of float32 overflow beyond ~1.8e19 (a refit on new targets
            # scaled by an earlier fit's statistics: partial_fit, warm_start).
            far = np.abs(values) > MAX_SCALED_TARGET
            if far.any():
                raise ValueError(
                    f"the regression target holds {int(far.sum())} value(s) (e.g. "
                    f"{np.asarray(y, dtype=np.float64).ravel()[np.flatnonzero(far)[0]]:.4g}) "
                    "so far from the scaling fitted on the first fit's targets that their "
                    "squared errors overflow float32; refit from scratch (without warm_start "
                    "or partial_fit) or rescale y")
            return values.astype(np.float32)
        # Each distinct label is looked up once (32k string labels: a sort of 2 instead of
        # a search per row).
        positions, labels = _factorized(values)
        try:
            codes = np.searchsorted(self.classes_, labels)
            codes = np.clip(codes, 0, len(self.classes_) - 1)
            unseen = self.classes_[codes] != labels
        except TypeError:     # labels of another type than the classes ('1' among 0 and 1)
            codes = pd.Index(self.classes_).get_indexer(labels)
            unseen = codes < 0
        if unseen.any():
            raise ValueError(
                f"labels not seen in training: {pd.unique(labels[unseen])[:5].tolist()}; "
                f"known classes are {self.classes_.tolist()}"
            )
        codes = codes.astype(np.int64)
        return codes if positions is None else codes[positions]

    def inverse_transform(self, encoded) -> np.ndarray:
        """Class labels from codes, label indicators from a matrix, targets from scaled values."""
        check_is_fitted(self, "task_")
        encoded = np.asarray(encoded)
        if self.task_ == "regression":
            values = encoded.astype(np.float64)
            if self.scale == "standard":
                return values * self.std_ + self.mean_
            if self.scale == "log":
                return np.expm1(values)
            return values
        if self.task_ == "multilabel":
            return encoded.astype(int)
        return self.classes_[encoded]

    @property
    def n_outputs_(self) -> int:
        """Width of the model's output layer for this target."""
        check_is_fitted(self, "task_")
        if self.task_ in ("regression", "binary"):
            return 1
        return len(self.classes_)

    def to_dict(self) -> dict:
        check_is_fitted(self, "task_")
        state = {"params": self.get_params(), "task": self.task_}
        if hasattr(self, "classes_"):
            state["classes"] = [c.item() if isinstance(c, np.generic) else c
                                for c in self.classes_]
            state["label_sets"] = hasattr(self, "_binarizer")
        if self.task_ == "regression":
            state["mean"], state["std"] = self.mean_, self.std_
        return state

    @classmethod
    def from_dict(cls, state: dict) -> TargetTransformer:
        self = cls(**state["params"])
        self.task_ = state["task"]
        if "classes" in state:
            self.classes_ = np.asarray(state["classes"])
            if state.get("label_sets"):
                self._binarizer = MultiLabelBinarizer(classes=list(self.classes_)).fit([])
        if self.task_ == "regression":
            self.mean_, self.std_ = state["mean"], state["std"]
        self._check_state()
        return self

    def _check_state(self) -> None:
        """A restored state fits together (a damaged file must not fail later, at predict)."""
        if self.task_ not in TASKS or self.scale not in _SCALES:
            raise ValueError(f"damaged TargetTransformer state: task {self.task_!r}, "
                             f"scale {self.scale!r}")
        if self.task_ == "regression":
            if not all(isinstance(v, int | float) and np.isfinite(v)
                       for v in (self.mean_, self.std_)) or self.std_ <= 0:
                raise ValueError(f"damaged TargetTransformer state: mean {self.mean_!r}, "
                                 f"std {self.std_!r}")
            return
        classes = getattr(self, "classes_", None)
        minimum = 1 if self.task_ == "multilabel" else 2
        if classes is None or classes.ndim != 1 or len(classes) < minimum \
                or len(np.unique(classes)) != len(classes):
            raise ValueError(f"damaged TargetTransformer state: classes {classes!r} for a "
                             f"{self.task_} target")
