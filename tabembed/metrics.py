"""Metrics of fitted models, computed over a whole validation set.

Task metrics (this section) score predictions in the target's own units:
accuracy, ROC AUC and log loss for classification, RMSE and MAE for
regression and ratings. Each takes ``(predictions, target, weight=None)`` as
numpy arrays, ``weight`` being optional per-row sample weights.
:func:`task_metrics` builds the per-epoch metrics an estimator reports while
training: callables on the network's raw outputs and encoded targets, which
decode both before scoring.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

__all__ = ["OutputMetric", "accuracy", "log_loss", "mae", "rmse", "roc_auc", "task_metrics"]


def _weights(weight, n: int) -> np.ndarray:
    return np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)


def accuracy(predicted_labels, target, weight=None) -> float:
    """Share of rows (weighted) whose predicted label equals the target."""
    right = np.asarray(predicted_labels) == np.asarray(target)
    if right.ndim == 2:       # multi-label: the share of correct labels
        right = right.mean(axis=1)
    return float(np.average(right, weights=_weights(weight, len(right))))


def log_loss(probabilities, target, weight=None, *, eps: float = 1e-12) -> float:
    """Cross-entropy of class probabilities ``[n, k]`` against integer class codes."""
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    target = np.asarray(target)
    picked = probabilities[np.arange(len(target)), target]
    return float(np.average(-np.log(picked), weights=_weights(weight, len(target))))


def roc_auc(scores, target, weight=None) -> float:
    """ROC AUC (one-vs-rest, macro, for several classes); NaN when a class is absent."""
    target = np.asarray(target)
    scores = np.asarray(scores)
    try:
        if scores.ndim == 2 and scores.shape[1] > 2:
            return float(roc_auc_score(target, scores, multi_class="ovr", sample_weight=weight))
        positive = scores[:, -1] if scores.ndim == 2 else scores
        return float(roc_auc_score(target, positive, sample_weight=weight))
    except ValueError:      # one class only in this validation set
        return float("nan")


def rmse(predictions, target, weight=None) -> float:
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    # Scaled first: errors of targets near 1e200 would overflow their squares.
    scale = float(np.abs(errors).max()) if len(errors) else 0.0
    if not np.isfinite(scale) or scale == 0.0:
        return scale
    return scale * float(np.sqrt(np.average((errors / scale) ** 2,
                                            weights=_weights(weight, len(errors)))))


def mae(predictions, target, weight=None) -> float:
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.average(np.abs(errors), weights=_weights(weight, len(errors))))


_TASK_METRICS = {
    "binary": ("accuracy", "auc"),
    "multiclass": ("accuracy", "auc"),
    "multilabel": ("accuracy",),
    "regression": ("rmse", "mae"),
}


class OutputMetric:
    """One task metric over the network's raw outputs and encoded targets (a Learner metric).

    Parameters
    ----------
    name : {"accuracy", "auc", "rmse", "mae"}
    task : {"binary", "multiclass", "multilabel", "regression"}
    activation : callable
        Raw output -> probabilities (classification) or encoded values (regression).
    decode : callable, optional
        Encoded regression values ``[n, d]`` -> the target's own units.
    """

    def __init__(self, name: str, task: str, activation: Callable, decode: Callable | None = None):
        if name not in _TASK_METRICS.get(task, ()):
            raise ValueError(f"{name=} is not a metric of {task=}; "
                             f"choose from {_TASK_METRICS.get(task)}")
        self.name, self.task, self.activation, self.decode = name, task, activation, decode

    def __call__(self, output: torch.Tensor, target: torch.Tensor, weight=None) -> float:
        scores = self.activation(output).detach().cpu().numpy()
        target = target.detach().cpu().numpy()
        weight = None if weight is None else weight.detach().cpu().numpy()
        if self.task == "regression":
            predictions, truth = self._decoded(scores), self._decoded(target)
            return (rmse if self.name == "rmse" else mae)(predictions, truth, weight)
        if self.task == "multiclass":
            if self.name == "auc":
                return roc_auc(scores, target, weight)
            return accuracy(scores.argmax(axis=1), target, weight)
        truth = target.astype(np.int64)
        if self.name == "auc":
            return roc_auc(scores, truth, weight)
        return accuracy((scores >= 0.5).astype(np.int64), truth, weight)

    def _decoded(self, values: np.ndarray) -> np.ndarray:
        values = values.reshape(len(values), -1)
        if self.decode is not None:
            values = np.asarray(self.decode(values)).reshape(len(values), -1)
        return values.squeeze(1) if values.shape[1] == 1 else values

    def __repr__(self) -> str:
        return f"OutputMetric({self.name!r}, task={self.task!r})"


def task_metrics(task: str, activation: Callable, decode: Callable | None = None
                 ) -> dict[str, OutputMetric]:
    """The per-epoch metrics an estimator reports for ``task``: accuracy and AUC for
    classification (accuracy alone for multi-label), RMSE and MAE for regression and
    ratings (in the target's own units through ``decode``). The validation loss,
    reported beside them, is the log loss for classification."""
    return {name: OutputMetric(name, task, activation, decode) for name in _TASK_METRICS[task]}
