"""What the scikit-learn estimators share: turning their parameters into a Learner run.

The estimators stay thin: they build a preprocessor, a model and tensors;
this module turns ``lr``, ``schedule``, ``averaging``, early stopping and
the other training parameters into a Learner, its callbacks and one ``fit``.
"""

from __future__ import annotations

import numpy as np
import torch

from tabembed.training.averaging import EMA, SWA, FastGeometricEnsemble, SnapshotEnsemble
from tabembed.training.callbacks import EarlyStopping
from tabembed.training.learner import Learner
from tabembed.training.schedules import SGDR, get_schedule

AVERAGING = (None, "ema", "swa", "snapshot", "fge")
SCHEDULES = ("one_cycle", "sgdr", "constant", "cyclical", "slanted_triangular")
LR_SUGGESTIONS = ("valley", "steepest", "minimum")


def check_training_parameters(estimator) -> None:
    """Validate the shared training parameters (at ``fit``, never in ``__init__``)."""
    if estimator.averaging not in AVERAGING:
        raise ValueError(f"averaging must be one of {AVERAGING}, got {estimator.averaging!r}")
    if isinstance(estimator.schedule, str) and estimator.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be a Schedule or one of {SCHEDULES}, "
                         f"got {estimator.schedule!r}")
    if not (isinstance(estimator.epochs, int | np.integer) and estimator.epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {estimator.epochs!r}")
    batch_size = resolve(estimator, "batch_size")
    if not (isinstance(batch_size, int | np.integer) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {estimator.batch_size!r}")
    lr = estimator.lr
    if not (lr == "auto" or lr in LR_SUGGESTIONS or isinstance(lr, float | int | list | slice)):
        raise ValueError(f"lr must be 'auto', a number, a list or a slice, got {lr!r}")
    if estimator.averaging == "snapshot" and estimator.schedule not in ("sgdr", "cyclical") \
            and not hasattr(estimator.schedule, "low_points"):
        raise ValueError("averaging='snapshot' needs a cyclical schedule: schedule='sgdr'")
    if estimator.early_stopping and not 0 < estimator.validation_fraction < 1:
        raise ValueError("early_stopping needs 0 < validation_fraction < 1, got "
                         f"{estimator.validation_fraction!r}")


def resolve(estimator, name: str):
    """A parameter's value, where ``"auto"`` asks the estimator for its measured default."""
    value = getattr(estimator, name)
    if isinstance(value, str) and value == "auto":
        return estimator.auto_defaults()[name]
    return value


def make_schedule(estimator):
    if estimator.schedule == "sgdr":
        return SGDR(cycle_len=estimator.cycle_len, cycle_mult=estimator.cycle_mult)
    return get_schedule(estimator.schedule)


def make_callbacks(estimator) -> list:
    callbacks = []
    averaging = estimator.averaging
    if averaging == "ema":
        callbacks.append(EMA(decay=estimator.ema_decay))
    elif averaging == "swa":
        cyclical = estimator.schedule in ("sgdr", "cyclical")
        callbacks.append(SWA(start=estimator.swa_start, swa_lr=None if cyclical
                             else estimator.swa_lr))
    elif averaging == "snapshot":
        callbacks.append(SnapshotEnsemble())
    elif averaging == "fge":
        callbacks.append(FastGeometricEnsemble(cycle_epochs=2, n_cycles=max(1, min(
            4, estimator.epochs // 4))))
    if estimator.early_stopping:
        callbacks.append(EarlyStopping(patience=estimator.patience))
    return callbacks


def seed_everything(random_state) -> int | None:
    """Seed torch for model construction; returns the integer seed (or None)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        random_state = int(random_state.randint(0, 2**31 - 1))
    seed = int(random_state)
    torch.manual_seed(seed)
    return seed


def train(estimator, model, loss, train_tensors, valid_tensors, *, output_activation,
          metrics=None, learner=None, penalty=None) -> Learner:
    """Fit ``model`` as the estimator's parameters say; returns the Learner.

    With an existing ``learner`` (``warm_start``/``partial_fit``) training
    continues from its weights and optimizer state.
    """
    seed = seed_everything(estimator.random_state)
    if learner is None:
        learner = Learner(
            model, loss, train_tensors, valid_tensors,
            weight_decay=resolve(estimator, "weight_decay"),
            batch_size=resolve(estimator, "batch_size"),
            device=estimator.device, random_state=seed, verbose=estimator.verbose,
            output_activation=output_activation, metrics=metrics,
            callbacks=make_callbacks(estimator), penalty=penalty,
        )
    else:
        learner.train_data.tensors = tuple(t.to(learner.device) for t in train_tensors)
    lr = estimator.lr
    if lr == "auto" or lr in LR_SUGGESTIONS:
        found = learner.lr_find()
        learner.lr_finder_result = found
        name = "minimum" if lr == "auto" else lr
        lr = found.suggestions.get(name, 1e-3)
    learner.fit(estimator.epochs, lr, schedule=make_schedule(estimator))
    learner.fitted_lr = lr
    return learner
