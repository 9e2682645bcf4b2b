"""Training configuration: every default in one place, validated once, "auto" resolved.

An estimator's ``fit`` turns its parameters into one frozen
:class:`TrainingConfig` (:meth:`TrainingConfig.from_params`) and hands it to
:func:`train`, which runs the :class:`~tabembed.training.learner.Learner` and
returns a :class:`TrainingResult`. Nothing here reads an estimator's
attributes, and nothing below this module knows about estimators.

The defaults were measured on validation splits (bench/RESULTS.md, the
"Defaults" sections; the reasons are in bench/NOTES.md).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tabembed.batches import TensorBatches
from tabembed.training import distributed
from tabembed.training.averaging import EMA, SWA, FastGeometricEnsemble, SnapshotEnsemble
from tabembed.training.callbacks import EarlyStopping
from tabembed.training.learner import (
    EVALUATION_BATCH_SIZE,
    Learner,
    TrainingDivergedError,
    split_learning_rates,
)
from tabembed.training.lr_finder import LRFinderResult
from tabembed.training.schedules import SGDR, Schedule, get_schedule

__all__ = [
    "AVERAGING",
    "IMPLICIT_AUTO",
    "IMPLICIT_DEFAULTS",
    "LR_SUGGESTIONS",
    "MLP_DEFAULTS",
    "RECOMMENDER_DEFAULTS",
    "SCHEDULES",
    "EstimatorDefaults",
    "Seeds",
    "TrainingConfig",
    "TrainingResult",
    "auto_batch_size",
    "train",
]

AVERAGING = (None, "ema", "swa", "snapshot", "fge")
SCHEDULES = ("one_cycle", "sgdr", "constant", "cyclical", "slanted_triangular")
LR_SUGGESTIONS = ("valley", "steepest", "minimum")
_CYCLICAL = ("sgdr", "cyclical")


@dataclass(frozen=True)
class EstimatorDefaults:
    """The measured defaults of one estimator family (the signatures read them from here)."""

    epochs: int
    lr: object
    averaging: str | None
    weight_decay: object
    batch_size: object = "auto"
    schedule: str = "one_cycle"
    cycle_len: float = 1
    cycle_mult: int = 2
    ema_decay: float = 0.999
    swa_start: float = 0.75
    swa_lr: float = 0.5
    validation_fraction: float = 0.1
    patience: int = 3


# Entity-embedding MLP (Adult validation, four rounds): 8 epochs of one-cycle at the LR
# finder's "minimum" suggestion; EMA beat plain training in each round (+0.03 to +0.08
# points) at no cost in time; AdamW decay 0.01 (0 to 0.1 made no difference).
MLP_DEFAULTS = EstimatorDefaults(epochs=8, lr="auto", averaging="ema", weight_decay=0.01)

# Recommenders (MovieLens 100K validation): 5 epochs of one-cycle at 5e-3 (more epochs
# overfit); EMA was neutral (0.9129 vs 0.9129), so no averaging. "auto" batch size and
# decay depend on the model: see RECOMMENDER_AUTO.
RECOMMENDER_DEFAULTS = EstimatorDefaults(epochs=5, lr=5e-3, averaging=None, weight_decay="auto")

# Dot-bias: no decoupled decay, an L2 penalty of 0.05 on the rows a batch uses (validation
# RMSE 0.9129 vs 0.9168 for the best decoupled decay alone), batch 768 (validation RMSE as
# 512's over 12 seeds, 0.9131 vs 0.9139; test: ml-100k +0.0007, latest-small -0.0013;
# a third fewer steps, bench/RESULTS.md "Defaults"); neural CF: batch 256, AdamW decay 0.1,
# no row penalty.
RECOMMENDER_AUTO = {
    "dot": {"batch_size": 768, "weight_decay": 0.0, "embedding_l2": 0.05},
    "neural": {"batch_size": 256, "weight_decay": 0.1, "embedding_l2": 0.0},
}

# Implicit feedback (ImplicitRecommender), measured on validation splits of MovieLens 100K
# and latest-small (bench/RESULTS.md, "Ranking"; tabembed.recommender explains the choice).
IMPLICIT_DEFAULTS = EstimatorDefaults(epochs=20, lr=5e-3, averaging=None, weight_decay=0.0,
                                      batch_size=1024)
# Validation recall@10 on 100K / latest-small (ratings >= 4 relevant; bench/RESULTS.md,
# "Ranking"): softmax, embedding_l2 1e-3, uniform negatives 0.212 / 0.132; popularity
# negatives (log-Q corrected) 0.218 / 0.155; with embedding_l2 1e-2 0.223 / 0.161 (3e-2:
# 0.221 / 0.159). BPR 0.198 / 0.111, with 1e-2 0.201 / 0.118 (popularity negatives: 0.104
# on 100K). 10 epochs 0.196 / 0.082, 40 epochs 0.190 / 0.138; 64 or 1024 negatives, 100
# factors, lr 1e-2: no better.
IMPLICIT_AUTO = {
    "bpr": {"embedding_l2": 1e-2, "n_negatives": 4, "negatives": "uniform"},
    "softmax": {"embedding_l2": 1e-2, "n_negatives": 256, "negatives": "popularity"},
}

# The LR finder's sweep per suggestion. For "minimum" (lr="auto"): it never suggests
# below 1e-3 (it looks at rates of 1e-2 and up): on 1,000 rows of Adult (batches of 16)
# the sweep's loss hardly moves and its noise made "minimum" pick 1e-7 to 2e-4 in 3 of 5
# seeds (test accuracy 0.47-0.63 against 0.71-0.73); with the floor, 1.4e-3 to 1.7e-2
# and 0.705-0.730 (bench/NOTES.md, "LR finder on small data"). So the sweep starts at
# 1e-4 instead of fastai's 1e-7 (below 1e-4 Adam's steps leave the weights as they
# were): 37 steps at the density of the 60-step sweep from 1e-7 (7.4 per decade, the
# same smoothing per step), 33-34 steps run on Adult instead of 55-57. Twelve seeds on
# Adult: picks 3.0e-2 to 7.7e-2 (geometric mean 5.2e-2) against 4.4e-2 to 6.0e-2 (5.4e-2),
# test accuracy 0.8716 +- 0.0010 against 0.8715 +- 0.0011, the fit 3.8% shorter; small
# data and regression unchanged within the seeds' spread (bench/NOTES.md, "Speed, sixth
# round"). "steepest" and "valley" keep fastai's 100 steps from 1e-7.
LR_FINDER_OPTIONS = {"minimum": {"start_lr": 1e-4, "num_steps": 37, "beta": 0.98 ** (100 / 60),
                                 "minimum_floor": 1e-3}}

# Recommenders whose user and item tables hold at least this many rows train them with
# sparse gradients and lazy Adam (only a batch's rows move). One 512-row dot-bias step
# (`bench/scale.py --only steps`): 2.6k rows dense 0.78 ms / lazy 1.29 ms; 26.7k rows
# 1.88 / 1.41; 267k rows 18.9 / 1.40 (the dense step reads and writes every row and its
# moments). Lazy Adam on ml-100k u1..u5: RMSE 0.9084 against 0.9099 dense (better on every
# fold), so only speed sets the threshold. Single process on CPU only (not measured
# under DDP or on a GPU).
SPARSE_TABLE_MIN_ROWS = 16_384

# A fit whose final training loss exceeds this multiple of the untrained model's has
# diverged, even when every number stayed finite (a saturated output, huge embeddings).
DIVERGENCE_FACTOR = 2.0
# ... plus this much: from a near-zero loss (a constant target, a few rows) a small rise is
# noise, not divergence (the fuzz suite found 1e-4 -> 2e-3 on six rows of a zero target).
DIVERGENCE_SLACK = 0.05
_DIVERGENCE_SAMPLE = 8192
# Below this many rows a loss that rose is noise, not divergence (the fuzz suite: 1.5 ->
# 3.7 in two steps on six rows); non-finite losses and weights are still errors.
_DIVERGENCE_MIN_ROWS = 32


def auto_batch_size(n_rows: int) -> int:
    """The MLP's ``batch_size="auto"``: the largest power of two giving at least 32
    batches an epoch, between 16 and 1024 (512 on Adult; bench/RESULTS.md, "Defaults")."""
    size = 2 ** int(np.floor(np.log2(max(n_rows / 32, 1))))
    return int(min(1024, max(16, size)))


@dataclass(frozen=True)
class Seeds:
    """Independent streams derived from one seed per fit."""

    init: int       # the model's initial weights
    shuffle: int    # batch order and dropout (the Learner's random_state)
    split: int      # the validation split

    @classmethod
    def from_seed(cls, seed: int) -> Seeds:
        init, shuffle, split = np.random.SeedSequence(seed).generate_state(3)
        return cls(int(init), int(shuffle), int(split))


EXIT_WAIT_SECONDS = 30.0


def draw_seed(random_state) -> int:
    """One integer seed per fit from ``random_state`` (None draws fresh entropy).

    Under torchrun the process group is joined here (the first thing a fit
    does), and every rank gets rank 0's seed.
    """
    if distributed.launch_from_environment() is not None and not distributed.is_distributed():
        if distributed.init_process_group() is not None:
            # Leave the group at exit, waiting a bounded time for the other ranks (one
            # leaving while another still talks made gloo abort it now and then; a rank
            # that failed never arrives).
            atexit.register(distributed.destroy_process_group, wait=EXIT_WAIT_SECONDS)
    if random_state is None:
        return distributed.shared_seed(int(np.random.SeedSequence().generate_state(1)[0]))
    if isinstance(random_state, np.random.RandomState):
        return distributed.shared_seed(int(random_state.randint(0, 2**31 - 1)))
    if isinstance(random_state, np.random.Generator):
        return distributed.shared_seed(int(random_state.integers(0, 2**31 - 1)))
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state)
    raise ValueError(f"random_state must be None, an int, a numpy RandomState or Generator, "
                     f"got {random_state!r}")


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
    averaging : {None, "ema", "swa", "snapshot", "fge"}
    ema_decay, swa_start, swa_lr : float
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
    averaging: str | None
    ema_decay: float
    swa_start: float
    swa_lr: float
    batch_size: int
    weight_decay: float
    early_stopping: bool
    validation_fraction: float
    patience: int
    device: str
    seed: int
    verbose: int

    @classmethod
    def from_params(cls, params: Mapping, *, seed: int, auto: Mapping | None = None
                    ) -> TrainingConfig:
        """Validate estimator parameters (``get_params()``) and resolve ``"auto"``.

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

        epochs = params["epochs"]
        _check(isinstance(epochs, int | np.integer) and not isinstance(epochs, bool)
               and epochs >= 1, f"epochs must be a positive integer, got {epochs!r}")
        lr, lr_finder = _learning_rate(params["lr"])
        averaging = params["averaging"]
        _check(averaging in AVERAGING, f"averaging must be one of {AVERAGING}, "
                                       f"got {averaging!r}")
        schedule = _schedule(params["schedule"], params["cycle_len"], params["cycle_mult"])
        if averaging == "snapshot":
            _check(bool(schedule.low_points(1, 1000)),
                   "averaging='snapshot' collects a model at the end of each cycle, so it "
                   f"needs a cyclical schedule (schedule='sgdr'), got {params['schedule']!r}")
        batch_size = resolved("batch_size")
        _check(isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
               and batch_size >= 1,
               f"batch_size must be a positive integer or 'auto', got {params['batch_size']!r}")
        weight_decay = resolved("weight_decay")
        _check(_number(weight_decay) and weight_decay >= 0,
               f"weight_decay must be a number >= 0, got {params['weight_decay']!r}")
        ema_decay = params["ema_decay"]
        _check(_number(ema_decay) and 0 < ema_decay < 1,
               f"ema_decay must be in (0, 1), got {ema_decay!r}")
        swa_start, swa_lr = params["swa_start"], params["swa_lr"]
        _check(_number(swa_start) and (0 <= swa_start < 1 or isinstance(swa_start, int)),
               f"swa_start must be a fraction in [0, 1) or an epoch index, got {swa_start!r}")
        _check(_number(swa_lr) and swa_lr > 0, f"swa_lr must be positive, got {swa_lr!r}")
        early_stopping = bool(params["early_stopping"])
        fraction = params["validation_fraction"]
        if early_stopping:
            _check(_number(fraction) and 0 < fraction < 1,
                   f"early_stopping needs 0 < validation_fraction < 1, got {fraction!r}")
        patience = params["patience"]
        _check(isinstance(patience, int | np.integer) and patience >= 1,
               f"patience must be a positive integer, got {patience!r}")
        return cls(
            epochs=int(epochs), lr=lr, lr_finder=lr_finder, schedule=schedule,
            averaging=averaging, ema_decay=float(ema_decay), swa_start=swa_start,
            swa_lr=float(swa_lr), batch_size=int(batch_size), weight_decay=float(weight_decay),
            early_stopping=early_stopping, validation_fraction=float(fraction),
            patience=int(patience), device=params["device"], seed=int(seed),
            verbose=int(params["verbose"]),
        )

    @property
    def seeds(self) -> Seeds:
        return Seeds.from_seed(self.seed)

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def callbacks(self) -> list:
        """The averaging and early-stopping callbacks this configuration asks for."""
        callbacks = []
        if self.averaging == "ema":
            callbacks.append(EMA(decay=self.ema_decay))
        elif self.averaging == "swa":
            cyclical = bool(self.schedule.low_points(1, 1000))
            callbacks.append(SWA(start=self.swa_start, swa_lr=None if cyclical else self.swa_lr))
        elif self.averaging == "snapshot":
            callbacks.append(SnapshotEnsemble())
        elif self.averaging == "fge":
            callbacks.append(FastGeometricEnsemble(cycle_epochs=2,
                                                   n_cycles=max(1, min(4, self.epochs // 4))))
        if self.early_stopping:
            callbacks.append(EarlyStopping(patience=self.patience))
        return callbacks


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _number(value) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(value))


def _learning_rate(lr) -> tuple[float | tuple | slice | None, str | None]:
    """(fixed rate(s), None) or (None, the LR finder's suggestion to use)."""
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


def _schedule(name, cycle_len, cycle_mult) -> Schedule:
    if isinstance(name, Schedule):
        return name
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be a Schedule or one of {SCHEDULES}, got {name!r}")
    if name == "sgdr":
        return SGDR(cycle_len=cycle_len, cycle_mult=cycle_mult)
    return get_schedule(name)


@dataclass
class TrainingResult:
    """What a training run produced."""

    learner: Learner
    lr: float | tuple | slice
    lr_finder: LRFinderResult | None
    history: pd.DataFrame
    stop_reason: str | None


@contextlib.contextmanager
def isolated_random_state():
    """Seed freely inside; the caller's global torch generators are left as they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


def train(config: TrainingConfig, model: torch.nn.Module, loss: Callable, train_data,
          valid_data=None, *, output_activation=None, metrics=None, penalty=None,
          learner: Learner | None = None) -> TrainingResult:
    """Fit ``model`` as ``config`` says and return the result.

    With an existing ``learner`` (``warm_start``/``partial_fit``) training
    continues from its weights and optimizer state on ``train_data``.
    Raises :class:`~tabembed.training.learner.TrainingDivergedError` when the
    loss or the final weights are not finite, or when training left the model
    clearly worse than it started (:data:`DIVERGENCE_FACTOR`).
    """
    seeds = config.seeds
    if learner is None:
        learner = Learner(
            model, loss, train_data, valid_data, weight_decay=config.weight_decay,
            batch_size=config.batch_size, device=config.device, random_state=seeds.shuffle,
            verbose=config.verbose, output_activation=output_activation, metrics=metrics,
            callbacks=config.callbacks(), penalty=penalty,
        )
    else:
        learner.set_train_data(train_data, batch_size=config.batch_size)
    sample = _loss_sample(learner)
    # The loss alone: metrics (an AUC through scikit-learn) cost ~10 ms a call here.
    before = learner.validate(sample, metrics=False)["valid_loss"] if sample is not None \
        else None
    finder, lr = None, config.lr
    if config.lr_finder is not None:
        finder = learner.lr_find(**LR_FINDER_OPTIONS.get(config.lr_finder, {}))
        if config.lr_finder not in finder.suggestions:
            raise TrainingDivergedError(
                f"the LR finder could not suggest a rate: the loss diverged within "
                f"{len(finder.lrs)} steps of its sweep from {finder.lrs[:1]}; pass a small "
                "fixed lr (e.g. lr=1e-4) and check the inputs for extreme values")
        lr = finder.suggestions[config.lr_finder]
        finder.used = lr
    _announce(config, finder, lr)
    learner.fit(config.epochs, lr, schedule=config.schedule)
    if sample is not None:
        after = learner.validate(sample, metrics=False)["valid_loss"]
        if not after <= DIVERGENCE_FACTOR * before + DIVERGENCE_SLACK:
            raise TrainingDivergedError(
                f"training left the model worse than it started: training loss {after:.4g} "
                f"after fitting vs {before:.4g} for the untrained model (at lr={lr!r}); lower "
                "the learning rate (lr='auto' runs the LR finder) or check the inputs")
    return TrainingResult(learner=learner, lr=lr, lr_finder=finder,
                          history=learner.history.to_frame(), stop_reason=learner.stop_reason)


def _announce(config: TrainingConfig, finder: LRFinderResult | None, lr) -> None:
    """What ``verbose`` prints before training: the rate and where it came from (1), the
    LR finder's suggestions and the whole configuration (2)."""
    if not distributed.is_main_process():
        return
    if config.verbose >= 2:
        print(f"training configuration: {config}", flush=True)
        if finder is not None:
            print("LR finder suggestions: " + ", ".join(
                f"{name} {rate:.2e}" for name, rate in finder.suggestions.items()), flush=True)
    if config.verbose:
        source = (f"the LR finder's {config.lr_finder!r} suggestion" if finder is not None
                  else "given")
        print(f"learning rate {_format_lr(lr)} ({source}); {config.epochs} epochs of "
              f"{type(config.schedule).__name__}, batch size {config.batch_size}", flush=True)


def row_batches(tensors, rows, weights=None, *, batch_size: int = EVALUATION_BATCH_SIZE,
                shuffle: bool = False) -> TensorBatches:
    """The ``rows`` of ``tensors`` (plus their sample ``weights``, if any) as a batch source.

    Its order is seeded by the Learner at each fit (``random_state=0`` here only
    keeps torch's global generator untouched).
    """
    chosen = [t[rows] for t in tensors]
    if weights is not None:
        chosen.append(torch.as_tensor(np.asarray(weights)[rows], dtype=torch.float32))
    return TensorBatches(chosen, batch_size=batch_size, shuffle=shuffle,
                         has_weight=weights is not None, random_state=0)


def inference_learner(model: torch.nn.Module, loss: Callable, *, output_activation=None,
                      device="auto", snapshots=()) -> Learner:
    """A Learner that only predicts (a loaded model): no training data; the mean of the
    ``snapshots``' predictions when there are some (a snapshot or FGE ensemble)."""
    empty = tuple(torch.zeros(0) for _ in range(2))
    learner = Learner(model, loss, TensorBatches(empty), device=device,
                      output_activation=output_activation)
    if snapshots:
        ensemble = SnapshotEnsemble()
        ensemble.snapshots = list(snapshots)
        learner.predictor = ensemble
    return learner


def encode_lr(lr):
    """A learning rate (float, list or slice) as JSON."""
    if isinstance(lr, slice):
        return {"slice": [lr.start, lr.stop]}
    return list(lr) if isinstance(lr, tuple | list) else lr


def decode_lr(value):
    if isinstance(value, dict):
        return slice(*value["slice"])
    return tuple(value) if isinstance(value, list) else value


def _format_lr(lr) -> str:
    if isinstance(lr, slice):
        return f"slice({lr.start:.2e}, {lr.stop:.2e})"
    if isinstance(lr, tuple | list):
        return "[" + ", ".join(f"{r:.2e}" for r in lr) + "]"
    return f"{lr:.2e}"


def _loss_sample(learner: Learner):
    """Up to a few thousand training rows to compare the loss before and after training."""
    source = learner.train_data
    if not isinstance(source, TensorBatches) or source.n_rows < _DIVERGENCE_MIN_ROWS:
        return None
    return TensorBatches([t[:_DIVERGENCE_SAMPLE] for t in source.tensors],
                         batch_size=_DIVERGENCE_SAMPLE, has_weight=source.has_weight)
