"""One training run's configuration: validated, every name and "auto" resolved.

An estimator turns its loop parameters into one frozen :class:`TrainingConfig`
(:meth:`TrainingConfig.from_parameters`) and hands it to
:func:`tabembed.training.run.train`. Names such as ``schedule="sgdr"`` or
``averaging="ema"`` become objects here, so everything below works with
objects only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tabembed import defaults
from tabembed.training.averaging import EMA, SWA, FastGeometricEnsemble, SnapshotEnsemble
from tabembed.training.callbacks import Callback, EarlyStopping
from tabembed.training.learner import split_learning_rates
from tabembed.training.schedules import SGDR, Schedule, get_schedule
from tabembed.training.seeding import Seeds

__all__ = ["AVERAGING", "LR_SUGGESTIONS", "SCHEDULES", "TrainingConfig", "averaging_callback",
           "learning_rate", "schedule_object"]

AVERAGING = (None, "ema", "swa", "snapshot", "fge")
AVERAGING_CLASSES = (EMA, SWA, SnapshotEnsemble, FastGeometricEnsemble)
SCHEDULES = ("one_cycle", "sgdr", "constant", "cyclical", "slanted_triangular")
LR_SUGGESTIONS = ("valley", "steepest", "minimum")

# The loop parameters every estimator takes, by name (TrainingConfig.from_parameters reads them).
LOOP_PARAMETERS = ("epochs", "batch_size", "lr", "schedule", "averaging", "weight_decay",
                   "early_stopping", "validation_fraction", "patience", "device", "verbose")


def schedule_object(schedule) -> Schedule:
    """A :class:`Schedule` from an instance or one of :data:`SCHEDULES`."""
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be a Schedule or one of {SCHEDULES}, got {schedule!r}")
    if schedule == "sgdr":
        return SGDR(cycle_len=defaults.SGDR_CYCLE_LEN, cycle_mult=defaults.SGDR_CYCLE_MULT)
    return get_schedule(schedule)


def averaging_callback(averaging, *, epochs: int) -> Callback | None:
    """The weight-averaging callback (unused: a template copied at each fit) of
    ``averaging``, an instance of :data:`AVERAGING_CLASSES`, one of :data:`AVERAGING`
    or None."""
    if averaging is None or isinstance(averaging, AVERAGING_CLASSES):
        return averaging
    if averaging == "ema":
        return EMA(decay=defaults.EMA_DECAY)
    if averaging == "swa":
        return SWA(start=defaults.SWA_START, swa_lr=defaults.SWA_LR)
    if averaging == "snapshot":
        return SnapshotEnsemble()
    if averaging == "fge":
        return FastGeometricEnsemble(cycle_epochs=2, n_cycles=max(1, min(4, epochs // 4)))
    raise ValueError(f"averaging must be one of {AVERAGING} or an instance of "
                     f"{[c.__name__ for c in AVERAGING_CLASSES]}, got {averaging!r}")


def learning_rate(lr) -> tuple[float | tuple | slice | None, str | None]:
    """``(fixed rate(s), None)``, or ``(None, the LR finder's suggestion to use)``."""
    if isinstance(lr, str):
        if lr == "auto":
            return None, "minimum"
        if lr in LR_SUGGESTIONS:
            return None, lr
        raise ValueError(
            f"lr must be 'auto' (the LR finder's 'minimum' suggestion), one of the finder's "
            f"suggestions {LR_SUGGESTIONS}, a positive number, a list of numbers (one per "
            f"layer group) or a slice(low, high), got {lr!r}")
    if isinstance(lr, slice):
        split_learning_rates(lr, 3)     # checks its bounds
        return lr, None
    if isinstance(lr, list | tuple):
        split_learning_rates(list(lr), len(lr))
        return tuple(float(r) for r in lr), None
    split_learning_rates(lr, 1)
    return float(lr), None


@dataclass(frozen=True)
class TrainingConfig:
    """Everything one training run needs, validated, with every "auto" resolved.

    Parameters
    ----------
    epochs : int
    lr : float, tuple of float or slice, optional
        The peak rate(s); ``None`` when the LR finder chooses it.
    lr_finder : {"minimum", "valley", "steepest"}, optional
        Run the LR finder and use this suggestion.
    schedule : Schedule
    averaging : EMA, SWA, SnapshotEnsemble, FastGeometricEnsemble or None
        A template: each fit trains with a fresh copy (:meth:`callbacks`).
    batch_size : int
    weight_decay : float
    early_stopping : bool
    validation_fraction : float
    patience : int
    device : str
    seed : int
        The fit's one seed; :attr:`seeds` derives the streams from it.
    verbose : int
    """

    epochs: int
    lr: float | tuple | slice | None
    lr_finder: str | None
    schedule: Schedule
    averaging: Callback | None
    batch_size: int
    weight_decay: float
    early_stopping: bool
    validation_fraction: float
    patience: int
    device: str
    seed: int
    verbose: int

    @classmethod
    def from_parameters(cls, params: Mapping, *, seed: int, auto: Mapping | None = None
                        ) -> TrainingConfig:
        """The configuration of estimator parameters (:data:`LOOP_PARAMETERS` by name).

        ``auto`` maps a parameter name to its value when given as ``"auto"``
        (the batch size depends on the training rows, a recommender's decay on
        its model). Raises ``ValueError`` naming the parameter and the fix.
        """
        auto = dict(auto or {})

        def resolved(name):
            value = params[name]
            if isinstance(value, str) and value == "auto":
                if name not in auto:
                    raise ValueError(f"{name}='auto' is not available here; give a value")
                return auto[name]
            return value

        epochs = int(params["epochs"])
        lr, lr_finder = learning_rate(params["lr"])
        schedule = schedule_object(params["schedule"])
        averaging = averaging_callback(params["averaging"], epochs=epochs)
        if isinstance(averaging, SnapshotEnsemble) and not schedule.low_points(1, 1000):
            raise ValueError(
                "averaging='snapshot' collects a model at the end of each cycle, so it needs a "
                f"cyclical schedule (schedule='sgdr' or SGDR(...)), got {params['schedule']!r}")
        batch_size = resolved("batch_size")
        if not (isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
                and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', "
                             f"got {params['batch_size']!r}")
        early_stopping = bool(params["early_stopping"])
        fraction = params["validation_fraction"]
        if early_stopping and not 0 < fraction < 1:
            raise ValueError(f"early_stopping needs 0 < validation_fraction < 1, got {fraction!r}")
        return cls(
            epochs=epochs, lr=lr, lr_finder=lr_finder, schedule=schedule, averaging=averaging,
            batch_size=int(batch_size), weight_decay=float(resolved("weight_decay")),
            early_stopping=early_stopping, validation_fraction=float(fraction),
            patience=int(params["patience"]), device=params["device"], seed=int(seed),
            verbose=int(params["verbose"]),
        )

    @property
    def seeds(self) -> Seeds:
        return Seeds.from_seed(self.seed)

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def callbacks(self) -> list[Callback]:
        """Fresh averaging and early-stopping callbacks for one fit."""
        callbacks = []
        if self.averaging is not None:
            averaging = copy.deepcopy(self.averaging)
            if isinstance(averaging, SWA) and self.schedule.low_points(1, 1000):
                averaging.swa_lr = None     # a cyclical schedule: average at its low points
            callbacks.append(averaging)
        if self.early_stopping:
            callbacks.append(EarlyStopping(patience=self.patience))
        return callbacks
