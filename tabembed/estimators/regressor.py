"""EmbeddingMLPRegressor: one or several continuous targets."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import RegressorMixin

from tabembed import defaults, persistence
from tabembed._validation import check_finite_predictions
from tabembed.estimators.mlp import MLP_CONSTRAINTS, MLPEstimator
from tabembed.estimators.parameters import (
    RANGE,
    Options,
    accepts_retired_parameters,
    store_parameters,
)
from tabembed.targets import TargetTransformer

__all__ = ["EmbeddingMLPRegressor"]

_D = defaults.MLP_DEFAULTS


@persistence.persistable
class EmbeddingMLPRegressor(RegressorMixin, MLPEstimator):
    """Entity-embedding MLP regressor.

    Parameters
    ----------
    %(mlp_parameters)s
    y_range : (low, high), "auto" or None
        Squash predictions into a range with a scaled sigmoid; ``"auto"``
        uses the training targets' range widened by 10% on each side.
    target_scale : {"standard", "log", None}
        Standardise (default) or ``log1p`` the target while training.
    %(loop_parameters)s

    Attributes
    ----------
    preprocessor_, target_transformer_, model_, learner_, history_, lr_, lr_finder_, \
training_config_ :
        As in :class:`EmbeddingMLPClassifier` (``history_``'s metrics are RMSE and MAE).
    """

    _parameter_constraints: ClassVar[dict] = {
        **MLP_CONSTRAINTS,
        "y_range": [Options(("auto", None)), RANGE],
        "target_scale": [Options(("standard", "log", None))],
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
        y_range=None,
        target_scale="standard",
    ):
        # scikit-learn reads parameters from this signature, so it lists them all.
        store_parameters(self, locals())

    def _target_transformer(self) -> TargetTransformer:
        return TargetTransformer(task="regression", scale=self.target_scale)

    def _y_range(self, target, bounds):
        if self.y_range is None:
            return None
        if isinstance(self.y_range, str):
            low, high = bounds
            margin = 0.1 * (high - low)
            low, high = low - margin, high + margin
        else:
            low, high = self.y_range
        encoded = target.transform(np.array([low, high], dtype=float))
        return float(encoded[0]), float(encoded[1])

    def partial_fit(self, X, y, sample_weight=None):
        """One more epoch on ``(X, y)``; the first call fits the encoders on this batch."""
        return self._partial_fit(X, y, sample_weight=sample_weight)

    def predict(self, X) -> np.ndarray:
        return self._decoded(self._predict_raw(X))

    def _decoded(self, values: np.ndarray) -> np.ndarray:
        return check_finite_predictions(
            self.target_transformer_.inverse_transform(values.reshape(-1)))

    def _prediction_columns(self, outputs: np.ndarray) -> dict:
        """``predict_to_parquet``'s columns: ``prediction``."""
        return {"prediction": self._decoded(outputs)}
