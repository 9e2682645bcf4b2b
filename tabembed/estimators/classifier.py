"""EmbeddingMLPClassifier: binary, multiclass and multi-label classification."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.base import ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets

from tabembed import defaults, persistence
from tabembed._validation import require_target
from tabembed.estimators.fit_data import is_stream
from tabembed.estimators.mlp import MLP_CONSTRAINTS, MLPEstimator
from tabembed.estimators.parameters import (
    InstanceOf,
    Options,
    accepts_retired_parameters,
    store_parameters,
)
from tabembed.targets import TargetTransformer, distinct_labels, is_label_sets

__all__ = ["EmbeddingMLPClassifier"]

_D = defaults.MLP_DEFAULTS


@persistence.persistable
class EmbeddingMLPClassifier(ClassifierMixin, MLPEstimator):
    """Entity-embedding MLP classifier: binary, multiclass or multi-label.

    Parameters
    ----------
    %(mlp_parameters)s
    label_smoothing : float
        Targets move this far towards uniform.
    class_weight : None, "balanced" or dict
        Multiplies each row's weight in the loss by its class's weight;
        ``"balanced"`` uses ``n_samples / (n_classes * count(class))`` as
        scikit-learn does. Combines with ``fit(..., sample_weight=...)``.
    %(loop_parameters)s

    Attributes
    ----------
    classes_ : ndarray
    preprocessor_ : TabularPreprocessor
    target_transformer_ : TargetTransformer
    model_ : EntityEmbeddingMLP
    learner_ : Learner
    history_ : DataFrame
        One row per epoch: training loss, and with validation data
        (``eval_set`` or ``early_stopping``) the validation loss (the log loss),
        accuracy and AUC; learning rate; seconds.
    lr_ : float, tuple or slice
        The peak learning rate used (the LR finder's choice with ``lr="auto"``).
    lr_finder_ : LRFinderResult or None
        The LR finder's sweep (``plot()`` it), when it ran.
    training_config_ : TrainingConfig
        The validated training configuration of the last fit.
    """

    _parameter_constraints: ClassVar[dict] = {
        **MLP_CONSTRAINTS,
        "class_weight": [Options(("balanced", None)), InstanceOf((dict,), "a dict "
                                                                 "{class: weight}")],
    }

    @accepts_retired_parameters
    def __init__(
        self,
        *,
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=defaults.MLP_HIDDEN,
        dropout=defaults.MLP_DROPOUT,
        embedding_dropout=defaults.MLP_EMBEDDING_DROPOUT,
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        averaging=_D.averaging,
        weight_decay=_D.weight_decay,
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        min_frequency=None,
        continuous_scaling="auto",
        continuous_encoding="auto",
        n_members="auto",
        swap_noise=0.0,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
        class_weight=None,
    ):
        # scikit-learn reads parameters from this signature, so it lists them all.
        store_parameters(self, locals())

    def _target_transformer(self) -> TargetTransformer:
        return TargetTransformer(task="auto")

    def _class_factors(self, y_values, target):
        """``class_weight`` as one factor per row (scikit-learn's "balanced" rule)."""
        if self.class_weight is None:
            return None
        if target.task_ == "multilabel":
            raise ValueError("class_weight applies to binary and multiclass targets, not "
                             "multi-label ones; pass sample_weight instead")
        labels = np.asarray(y_values)
        classes = np.asarray(target.classes_)
        if isinstance(self.class_weight, str):
            present = np.unique(labels)
            factors = compute_class_weight("balanced", classes=present, y=labels)
            table = dict(zip(present.tolist(), factors))
        else:
            unknown = [c for c in self.class_weight if c not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight names classes {unknown} that are not in y "
                                 f"(classes: {classes.tolist()})")
            bad = {c: w for c, w in self.class_weight.items()
                   if not (isinstance(w, int | float | np.number) and not isinstance(w, bool)
                           and np.isfinite(w) and w >= 0)}
            if bad:
                raise ValueError(f"class_weight must map classes to finite numbers >= 0; got "
                                 f"{bad}")
            table = {c: float(self.class_weight.get(c, 1.0)) for c in classes.tolist()}
        factors = pd.Series(labels).map(table).fillna(1.0).to_numpy(dtype=np.float64)
        if not factors.sum() > 0:
            raise ValueError(f"class_weight {self.class_weight} gives every row of y weight 0: "
                             "at least one class present in y must weigh more than 0")
        return factors

    def fit(self, X, y, sample_weight=None, *, eval_set=None, callbacks=None):
        require_target(self, y)
        if not is_label_sets(y) and not is_stream(X):
            check_classification_targets(distinct_labels(TargetTransformer.check_values(y)))
        return super().fit(X, y, sample_weight=sample_weight, eval_set=eval_set,
                           callbacks=callbacks)

    fit.__doc__ = MLPEstimator.fit.__doc__

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One more epoch on ``(X, y)``; ``classes`` lists every label (first call)."""
        return self._partial_fit(X, y, classes=classes, sample_weight=sample_weight)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` (per-label probabilities for multi-label)."""
        probabilities = self._predict_raw(X)
        if self.task_ == "binary":
            positive = probabilities.reshape(-1)
            return np.column_stack([1 - positive, positive])
        return probabilities

    def predict(self, X) -> np.ndarray:
        return self._labels(self.predict_proba(X))

    def _labels(self, probabilities: np.ndarray) -> np.ndarray:
        if self.task_ == "multilabel":
            return (probabilities >= 0.5).astype(int)
        return self.target_transformer_.inverse_transform(top_class(probabilities))

    def _prediction_columns(self, outputs: np.ndarray) -> dict:
        """``predict_to_parquet``'s columns: the label and each class's probability."""
        probabilities = outputs.reshape(len(outputs), -1)
        if self.task_ == "binary":
            probabilities = np.column_stack([1 - probabilities[:, 0], probabilities[:, 0]])
        columns = {f"probability_{c}": probabilities[:, j]
                   for j, c in enumerate(self.classes_)}
        if self.task_ != "multilabel":
            # An Arrow take from the classes' labels: 30x faster than converting one
            # Python string per row.
            labels = pa.array(self.classes_).take(top_class(probabilities))
            columns = {"prediction": labels, **columns}
        return columns

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def top_class(probabilities: np.ndarray) -> np.ndarray:
    """Each row's most probable class, the first of equals (``argmax(axis=1)``); two
    classes by one comparison, 40x faster than ``argmax`` over rows of two."""
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        return (probabilities[:, 1] > probabilities[:, 0]).astype(np.intp)
    return probabilities.argmax(axis=1)
