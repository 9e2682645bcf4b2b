"""What every tabembed estimator shares: the training loop's parameters and the fit's frame.

:class:`TrainedEstimator` is the base of the MLP estimators and the
recommenders. It holds

- the loop's parameters, documented once (:data:`LOOP_PARAMETERS_DOC`, put into
  each class docstring) and constrained once (:data:`LOOP_CONSTRAINTS`),
  checked when ``fit`` starts (:meth:`TrainedEstimator._begin_fit`);
- the fit's order: join a torchrun process group if launched so, check the
  parameters, draw one seed, build everything, train, and only then replace the
  fitted state (:meth:`TrainedEstimator._adopt`), so a fit that raises leaves
  the previous model working;
- the fitted state's file form (``to_state``/``from_state``): parameters,
  history, learning rate, seed and batch size, the network and its ensemble
  snapshots, plus what each class adds (``_extra_state``/``_restore_extra``).
"""

from __future__ import annotations

import contextlib
import warnings
from numbers import Real
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from tabembed import persistence
from tabembed.estimators.parameters import (
    BOOLEAN,
    DEVICE,
    NON_NEGATIVE,
    OPEN_FRACTION,
    POSITIVE_INT,
    RANDOM_STATE,
    RETIRED,
    VERBOSE,
    InstanceOf,
    Interval,
    Options,
    check_parameters,
    decode_parameters,
    encode_parameters,
    fold_retired_parameters,
)
from tabembed.training import checkpoint, distributed
from tabembed.training.callbacks import check_callbacks
from tabembed.training.config import (
    AVERAGING,
    AVERAGING_CLASSES,
    LR_SUGGESTIONS,
    SCHEDULES,
    TrainingConfig,
)
from tabembed.training.run import TrainingResult, decode_lr, encode_lr, inference_learner
from tabembed.training.schedules import Schedule
from tabembed.training.seeding import draw_seed

__all__ = ["LOOP_CONSTRAINTS", "LOOP_PARAMETERS_DOC", "TrainedEstimator", "fit_events",
           "rollback_on_failure"]

LOOP_PARAMETERS_DOC = """\
epochs : int
    Passes over the training data.
batch_size : int or "auto"
    Rows per step; ``"auto"`` is the estimator's measured default
    (:mod:`tabembed.defaults`).
lr : "auto", "valley", "steepest", "minimum", float, list or slice
    The peak learning rate. ``"auto"`` runs the LR finder and uses its
    "minimum" suggestion (the rate at the loss minimum / 10); the other names
    pick another suggestion; a list gives one rate per layer group, a
    ``slice(low, high)`` spreads rates geometrically over the groups.
schedule : {"one_cycle", "sgdr", "constant", "cyclical", "slanted_triangular"} or Schedule
    How the rate moves over training, e.g. ``SGDR(cycle_len=1, cycle_mult=2)``
    (:mod:`tabembed.training.schedules`; ``"sgdr"`` is that one).
averaging : {None, "ema", "swa", "snapshot", "fge"} or EMA, SWA, SnapshotEnsemble, \
FastGeometricEnsemble
    Weight averaging or a single-run ensemble (:mod:`tabembed.training.averaging`),
    e.g. ``EMA(decay=0.999)`` (what ``"ema"`` means), ``SWA(start=0.75, swa_lr=0.5)``.
    Snapshot ensembles need a cyclical schedule; with one, SWA averages at its
    low points.
weight_decay : float
    AdamW's decoupled weight decay (not on biases and norms).
early_stopping : bool
    Hold out ``validation_fraction`` of the rows and stop when their loss has
    not improved for ``patience`` epochs, keeping the best weights.
validation_fraction : float
patience : int
device : str
    ``"auto"``: CUDA, then MPS, then CPU.
random_state : int, numpy RandomState or Generator, optional
    Same seed, same model (on CPU). None draws fresh entropy.
verbose : int
    0: silent. 1: a progress bar, the learning rate chosen, a table with one
    row per epoch, and why training stopped early. 2: also the LR finder's
    suggestions and the training configuration."""

LOOP_CONSTRAINTS = {
    "epochs": [POSITIVE_INT],
    "batch_size": [POSITIVE_INT, Options(("auto",))],
    "lr": [Options(("auto", *LR_SUGGESTIONS)),
           Interval(Real, 0, None, closed="neither", description="a positive number"),
           InstanceOf((list, tuple, slice), "a list of numbers (one rate per layer group) or "
                                            "a slice(low, high)")],
    "schedule": [Options(SCHEDULES), InstanceOf((Schedule,), "a Schedule")],
    "averaging": [Options(AVERAGING), InstanceOf(AVERAGING_CLASSES, "an EMA, SWA, "
                                                 "SnapshotEnsemble or FastGeometricEnsemble")],
    "weight_decay": [NON_NEGATIVE],
    "early_stopping": [BOOLEAN],
    "validation_fraction": [OPEN_FRACTION],
    "patience": [POSITIVE_INT],
    "device": [DEVICE],
    "random_state": [RANDOM_STATE],
    "verbose": [VERBOSE, BOOLEAN],
}

# A fitted attribute that a fit removes (feature_names_in_ after fitting an array).
ABSENT = object()


class TrainedEstimator(BaseEstimator):
    """Base of the estimators that train a network through the shared loop.

    Subclasses set ``_parameter_constraints`` and ``_model_classes`` (the
    networks their files may hold), and implement ``_extra_state`` and
    ``_restore_extra`` for what their fitted state adds.
    """

    _parameter_constraints: ClassVar[dict] = LOOP_CONSTRAINTS
    _model_classes: ClassVar[tuple] = ()
    # Parameter documentation written once, put in class docstrings at "%(name)s".
    _docstring_parts: ClassVar[dict] = {"loop_parameters": LOOP_PARAMETERS_DOC}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A class's parts and those of every class above it.
        parts = {}
        for klass in reversed(cls.__mro__):
            parts.update(vars(klass).get("_docstring_parts", {}))
        for name, text in parts.items():
            if cls.__doc__ and f"%({name})s" in cls.__doc__:
                cls.__doc__ = cls.__doc__.replace(f"%({name})s", text.replace("\n", "\n    "))

    def set_params(self, **params):
        """Set parameters (scikit-learn's contract); retired names are folded into the
        objects that replaced them, with a ``FutureWarning``."""
        own = self.get_params(deep=False)
        retired = {k: params.pop(k) for k in list(params) if k in RETIRED and k not in own}
        super().set_params(**params)
        for name, value in fold_retired_parameters(self, retired).items():
            setattr(self, name, value)
        return self

    # ------------------------------------------------------------ fitting

    def _begin_fit(self) -> int:
        """Join torchrun's process group (when launched by it), check every parameter, and
        draw the fit's one seed."""
        distributed.join_launched_group()
        check_parameters(self, self._parameter_constraints)
        return draw_seed(self.random_state)

    def _training_config(self, seed: int, auto: dict | None = None) -> TrainingConfig:
        return TrainingConfig.from_parameters(self.get_params(deep=False), seed=seed,
                                              auto=auto)

    def _adopt(self, fitted: dict) -> None:
        """Replace the fitted state all at once; :data:`ABSENT` removes an attribute."""
        for name, value in fitted.items():
            if value is ABSENT:
                if hasattr(self, name):
                    delattr(self, name)
            else:
                setattr(self, name, value)

    @staticmethod
    def _result_state(config: TrainingConfig, result: TrainingResult) -> dict:
        """The fitted attributes every trained estimator has, from one training run."""
        return {"training_config_": config, "learner_": result.learner,
                "history_": result.history, "lr_": result.lr, "lr_finder_": result.lr_finder}

    # ------------------------------------------------------------ saving and loading

    def save(self, path):
        """Write the fitted estimator to ``path`` (JSON + safetensors; see tabembed.load)."""
        return persistence.save(self, path)

    def to_state(self) -> tuple[dict, dict]:
        if not hasattr(self, "learner_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit before "
                             "save")
        predictor = self.learner_.predictor
        snapshots = predictor.snapshot_states() if predictor is not None else []
        meta, tensors = persistence.network_state(self.learner_.model, self.model_kwargs_,
                                                  snapshots)
        names = getattr(self, "feature_names_in_", None)
        meta.update({
            "params": persistence.json_safe(encode_parameters(self.get_params(deep=False))),
            "history": self.history_.to_dict(orient="list"),
            "fitted": {
                "lr": encode_lr(self.lr_), "n_features_in": int(self.n_features_in_),
                "n_train_rows": (None if self.n_train_rows_ is None
                                 else int(self.n_train_rows_)),
                "feature_names_in": (persistence.json_safe(list(names))
                                     if names is not None else None),
                "seed": self.training_config_.seed,
                "batch_size": self.training_config_.batch_size,
            },
        })
        self._extra_state(meta, tensors)
        return meta, tensors

    @classmethod
    def from_state(cls, meta: dict, tensors: dict, *, device="auto"):
        params = decode_parameters(persistence.restore_tuples(cls, meta["params"]))
        retired = {k: params.pop(k) for k in list(params) if k in RETIRED}
        estimator = cls(**params)
        with warnings.catch_warnings():
            # Files of the second release name the retired parameters: no warning on load.
            warnings.simplefilter("ignore", FutureWarning)
            estimator.set_params(**retired)
        model, kwargs, snapshots = persistence.load_network(meta, tensors, cls._model_classes)
        fitted = meta["fitted"]
        estimator._adopt({
            "model_": model, "model_kwargs_": kwargs,
            "history_": pd.DataFrame(meta["history"]), "lr_": decode_lr(fitted["lr"]),
            "lr_finder_": None, "n_features_in_": fitted["n_features_in"],
            # Files of the first release lack the row count, seed and batch size.
            "n_train_rows_": fitted.get("n_train_rows"),
            "feature_names_in_": (np.asarray(fitted["feature_names_in"], dtype=object)
                                  if fitted.get("feature_names_in") is not None else ABSENT),
        })
        estimator._restore_extra(meta, tensors, snapshots=snapshots, device=device)
        batch_size = fitted.get("batch_size") or estimator._default_batch_size()
        estimator.training_config_ = estimator._training_config(
            fitted.get("seed", 0), {**estimator._auto_values(), "batch_size": batch_size})
        return estimator

    def _inference_learner(self, loss, *, output_activation=None, snapshots=(), device="auto"):
        """The loaded network behind a Learner that predicts (with its snapshots)."""
        return inference_learner(self.model_, loss, output_activation=output_activation,
                                 device=device, snapshots=snapshots)

    def _extra_state(self, meta: dict, tensors: dict) -> None:
        """Add this class's fitted state to ``meta`` (JSON) and ``tensors``."""

    def _restore_extra(self, meta: dict, tensors: dict, *, snapshots, device) -> None:
        """Set this class's fitted state from a file (``model_`` is already set)."""
        raise NotImplementedError

    def _auto_values(self) -> dict:
        """The values of this estimator's ``"auto"`` loop parameters (batch size aside)."""
        return {}

    def _default_batch_size(self) -> int:
        """The batch size of a file that does not record it (the first release's)."""
        return self._auto_values().get("batch_size", 1)


class FitCallbacks(list):
    """The callbacks of a fit whose estimator events are already fired (by an estimator
    that fits another inside, as EntityEmbeddingTransformer does)."""


@contextlib.contextmanager
def fit_events(estimator, callbacks):
    """Check ``fit``'s ``callbacks`` and fire their estimator events around the fit.

    ``on_estimator_fit_begin(estimator)`` before anything is checked or built;
    ``on_estimator_fit_end(estimator, error)`` after the fitted state is adopted
    (``error`` None) or when the fit raised (the exception, re-raised afterwards).
    Yields the checked list, to pass on to ``train``.
    """
    if isinstance(callbacks, FitCallbacks):       # an outer fit fires the events
        yield callbacks
        return
    callbacks = FitCallbacks(check_callbacks(callbacks))
    for callback in callbacks:
        if hasattr(callback, "on_estimator_fit_begin"):
            callback.on_estimator_fit_begin(estimator)
    try:
        yield callbacks
    except BaseException as error:
        for callback in callbacks:
            if hasattr(callback, "on_estimator_fit_end"):
                callback.on_estimator_fit_end(estimator, error)
        raise
    for callback in callbacks:
        if hasattr(callback, "on_estimator_fit_end"):
            callback.on_estimator_fit_end(estimator, None)


@contextlib.contextmanager
def rollback_on_failure(learner):
    """Continue training ``learner``; if anything raises, put its fitted state back."""
    saved = checkpoint.capture(learner)
    predictor, train_data, active = learner.predictor, learner.train_data, learner.active_callbacks
    try:
        yield
    except BaseException:
        checkpoint.restore(learner, saved)
        learner.active_callbacks = active
        checkpoint.restore_callbacks(learner, saved)
        learner.predictor, learner.train_data = predictor, train_data
        learner.steps_per_epoch = len(train_data)
        raise
