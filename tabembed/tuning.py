"""Hyperparameter search with Optuna: default search spaces, a pruning callback, :func:`tune`.

Needs the ``tuning`` extra (``pip install 'tabembed[tuning]'``: Optuna 3 or later);
importing this module does not, only running a search does.

::

    from tabembed import EmbeddingMLPClassifier
    from tabembed.tuning import tune

    best, study = tune(EmbeddingMLPClassifier(random_state=0), X, y, n_trials=30,
                       timeout=600)
    best.predict(X_test)           # refitted on all of X with the best parameters

The search spaces are written from the benchmarks' evidence (bench/NOTES.md,
"Defaults and their evidence", "Accuracy options", and the 20-table suite of
issue 30): each range spans the values that won somewhere, and leaves out
those that lost everywhere. Why each range, beside it, in :func:`mlp_space`,
:func:`recommender_space` and :func:`implicit_space`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import KFold, StratifiedKFold, check_cv, train_test_split
from sklearn.utils.multiclass import type_of_target

from tabembed._validation import as_frame
from tabembed.training.callbacks import Callback
from tabembed.training.learner import TrainingDivergedError

__all__ = ["OptunaPruning", "Tuned", "implicit_space", "mlp_space", "recommender_space",
           "search_space", "tune"]

# Hidden widths offered to the search, by name (Optuna's categorical values are scalars).
HIDDEN_CHOICES = {"200x100": (200, 100), "200x64": (200, 64), "400x200": (400, 200)}
# Validation metrics where higher is better; every other history column (losses, RMSE,
# MAE) is better lower.
HIGHER_IS_BETTER = ("accuracy", "auc")


def _optuna():
    try:
        import optuna
    except ImportError as error:
        raise ImportError("tabembed.tuning needs Optuna: pip install 'tabembed[tuning]'"
                          ) from error
    return optuna


# ------------------------------------------------------------------ search spaces


def mlp_space(trial, *, robust_scaling: bool = False) -> dict:
    """The default search space of the MLP estimators (classifier, regressor, transformer).

    Evidence (validation splits only): bench/NOTES.md "Accuracy options" (Adult,
    diamonds, Caravan) and the suite's rounds of issue 30 (20 tables, error ratio
    to LightGBM; a geometric mean under 1 beats it, today's defaults 0.996).

    - ``continuous_encoding``: the lever that moved accuracy most, and no encoding
      wins everywhere: on the suite's 13 small tables piecewise-linear was best on
      6, plain numbers on 3, PLR-lite on 3, PLR on 1 (it alone fixes hpc_data).
      Choosing it per table "needs a validation split", which is what a search is.
    - ``frequency_init_scale`` (PLR only), log-uniform 0.1 to 10: the one
      sensitive knob, data dependent. Adult's validation peaks at 10 (30 worse),
      the suite's small tables at 0.3 (0.1 level with it), diamonds at 1 to 3.
    - ``n_members`` in {1, 4, 8}: 8 members was the suite's best single change
      (0.972, 15 of 20 wins), 16 and 32 no better; on Adult within noise (-0.4 to
      +0.15 points) at 3-17x the fit time, so 1 stays a choice.
    - ``dropout`` 0 to 0.5: 0.3 helped on the suite (0.985), 0 hurt (1.013); on
      Adult 0 to 0.5 made no difference.
    - ``weight_decay`` log-uniform 1e-3 to 0.1: 0.1 helped the suite's round 1
      (0.984) and cost Adult 0.4 points near PLR scale 10; 0 and 0.01 were level.
    - ``epochs`` 4 to 12: 4 was level with 8 on the suite, 12 and 16 worse there;
      on Adult 5 and 12 were 0.1-0.2 points under 8.
    - ``hidden`` (200, 100), (200, 64), (400, 200): (200, 64) matched the default
      on Adult and predicts faster; (400, 200) lost on the suite's average (1.046)
      but is the one wider body left for the tables that want it. Deeper bodies
      ((256, 256, 256): 1.060) are left out.
    - ``lr`` "auto" or "valley": the LR finder's "minimum" rule ("auto") beat
      "valley" on the suite (0.996 vs 1.039) and on Adult (0.33 points); a fixed
      rate lost too (1.030). "valley" stays as the cautious alternative.
    - ``continuous_scaling`` "standard" or "robust" (only where the estimator has
      "robust"): robust scaling was the suite's third-best knob (0.984).

    Batch size (256 lost to "auto": 1.020), averaging, label smoothing and
    embedding dropout moved nothing beyond noise and are not searched; nor is
    ``augmentation`` (swap noise and mixup won nowhere on validation at this
    budget, bench/NOTES.md "Accuracy options"). ``n_folds`` (the accuracy mode) is
    not a knob to search but a way to spend more time on the configuration found:
    refit the best one with ``n_folds=5``.
    """
    from tabembed.models.numeric_embeddings import PLR, PiecewiseLinear

    encoding = trial.suggest_categorical(
        "continuous_encoding", ["plr", "piecewise_linear", "plr_lite", "none"])
    if encoding in ("plr", "plr_lite"):
        scale = trial.suggest_float("frequency_init_scale", 0.1, 10.0, log=True)
        continuous = PLR(frequency_init_scale=scale, lite=encoding == "plr_lite")
    else:
        continuous = PiecewiseLinear() if encoding == "piecewise_linear" else None
    params = {
        "continuous_encoding": continuous,
        "n_members": trial.suggest_categorical("n_members", [1, 4, 8]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "weight_decay": trial.suggest_float("weight_decay", 1e-3, 0.1, log=True),
        "epochs": trial.suggest_int("epochs", 4, 12),
        "hidden": HIDDEN_CHOICES[trial.suggest_categorical("hidden", list(HIDDEN_CHOICES))],
        "lr": trial.suggest_categorical("lr", ["auto", "valley"]),
    }
    if robust_scaling:
        params["continuous_scaling"] = trial.suggest_categorical(
            "continuous_scaling", ["standard", "robust"])
    return params


def recommender_space(trial, *, model: str = "dot") -> dict:
    """The default search space of :class:`~tabembed.EmbeddingRecommender`.

    Evidence: MovieLens 100K validation RMSE, bench/RESULTS.md "Defaults:
    validation evidence, MovieLens 100K" (rounds 1-4).

    - ``n_factors`` log-uniform 16 to 128: 20 beat 50 and 100 with weak
      regularisation (0.921 / 0.937 / 0.957), 100 was level with 50 with a
      strong one (0.921): the best size depends on the penalty, so both move.
    - ``embedding_l2`` log-uniform 0.01 to 0.3 (dot-bias): 0.02 to 0.1 all gave
      0.913-0.915, against 0.917 for the best decoupled decay alone.
    - ``epochs`` 3 to 12: 10 and 15 epochs overfit at the old penalty (0.995,
      1.028) but 10 matched the best (0.9129) with ``embedding_l2=0.1``.
    - ``lr`` log-uniform 1e-3 to 1e-2: 2e-3 and 5e-3 were good, 1e-2 overfit (0.974).
    - Neural CF (``model="neural"``): ``dropout`` 0.1 to 0.5 (0.948 / 0.932 /
      0.931 at 0.1 / 0.3 / 0.5, 0.981 at 0) and AdamW ``weight_decay``
      log-uniform 0.01 to 0.3 (0.1 is its default) instead of the row penalty.
    """
    params = {
        "n_factors": trial.suggest_int("n_factors", 16, 128, log=True),
        "epochs": trial.suggest_int("epochs", 3, 12),
        "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
    }
    if model == "neural":
        params["dropout"] = trial.suggest_float("dropout", 0.1, 0.5)
        params["weight_decay"] = trial.suggest_float("weight_decay", 0.01, 0.3, log=True)
    else:
        params["embedding_l2"] = trial.suggest_float("embedding_l2", 0.01, 0.3, log=True)
    return params


def implicit_space(trial) -> dict:
    """The default search space of :class:`~tabembed.ImplicitRecommender`.

    Evidence: validation recall@10 on MovieLens 100K / latest-small,
    bench/NOTES.md "IMPLICIT_DEFAULTS" and "Ranking against EASE".

    - ``embedding_l2`` log-uniform 1e-3 to 3e-2: 1e-3 0.218 / 0.155, 1e-2
      0.223 / 0.161 (the default), 3e-2 0.221 / 0.159.
    - ``epochs`` 10 to 40: 10 epochs lost (0.196 / 0.082 against 20), 40 was
      worse on 100K and better on latest-small (0.190 / 0.138 at the old penalty).
    - ``n_factors`` log-uniform 32 to 128: 100 factors was no better than 50
      on MovieLens; other catalogues may want more.
    - ``lr`` log-uniform 2e-3 to 2e-2: 1e-2 was no better than 5e-3, and fewer
      epochs at a higher rate cost 2-11% NDCG@10.
    """
    return {
        "n_factors": trial.suggest_int("n_factors", 32, 128, log=True),
        "embedding_l2": trial.suggest_float("embedding_l2", 1e-3, 3e-2, log=True),
        "epochs": trial.suggest_int("epochs", 10, 40),
        "lr": trial.suggest_float("lr", 2e-3, 2e-2, log=True),
    }


def search_space(estimator) -> Callable:
    """The default search space for ``estimator``: a function ``trial -> parameters``.

    :func:`mlp_space` for the MLP estimators, :func:`recommender_space` for
    :class:`~tabembed.EmbeddingRecommender`, :func:`implicit_space` for
    :class:`~tabembed.ImplicitRecommender`.
    """
    from tabembed.estimators import (
        EmbeddingMLPClassifier,
        EmbeddingMLPRegressor,
        EntityEmbeddingTransformer,
    )
    from tabembed.estimators.mlp import MLP_CONSTRAINTS
    from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender

    if isinstance(estimator, EmbeddingMLPClassifier | EmbeddingMLPRegressor
                  | EntityEmbeddingTransformer):
        robust = any(getattr(rule, "accepts", lambda value: False)("robust")
                     for rule in MLP_CONSTRAINTS["continuous_scaling"])
        return lambda trial: mlp_space(trial, robust_scaling=robust)
    if isinstance(estimator, ImplicitRecommender):
        return implicit_space
    if isinstance(estimator, EmbeddingRecommender):
        return lambda trial: recommender_space(trial, model=estimator.model)
    raise TypeError(f"no default search space for {type(estimator).__name__}; pass "
                    "search_space=lambda trial: {...} (a function from an Optuna trial to "
                    "the estimator's parameters)")


default_search_space = search_space    # tune's search_space parameter shadows the name


# ------------------------------------------------------------------ pruning


class OptunaPruning(Callback):
    """Report each epoch's validation metric to an Optuna trial; stop a trial it prunes.

    Give it to ``fit(..., callbacks=[OptunaPruning(trial)])`` with validation
    data (``eval_set``, or ``early_stopping=True``). After every epoch it reports
    ``monitor`` from the epoch's record and raises ``optuna.TrialPruned`` when
    ``trial.should_prune()``: the fit then raises it too, and the estimator
    keeps whatever fitted state it had before (a fit builds first and swaps
    last), so nothing half-trained is left behind.

    Parameters
    ----------
    trial : optuna.trial.Trial
    monitor : str
        A column of the history: ``"valid_loss"``, or a task metric
        (``"accuracy"``, ``"auc"``, ``"rmse"``, ``"mae"``).
    mode : {"min", "max"}, optional
        Whether lower or higher ``monitor`` is better (default: "max" for
        accuracy and AUC, "min" otherwise). Reported values are negated when
        this disagrees with the study's direction, so the pruner always compares
        like with like.
    steps : {"epoch", "percent"}
        The steps values are reported at: the epoch number, or the percentage
        of the fit's epochs done (each epoch's value at every whole percent
        since the previous epoch's, so that trials of 4 and 7 epochs meet at
        every step). With one-cycle schedules (the default) trials of different
        lengths are comparable only at the same share of their schedule, so
        :func:`tune`, which searches ``epochs``, uses "percent".
    """

    def __init__(self, trial, monitor: str = "valid_loss", *, mode: str | None = None,
                 steps: str = "epoch"):
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None, got {mode!r}")
        if steps not in ("epoch", "percent"):
            raise ValueError(f"steps must be 'epoch' or 'percent', got {steps!r}")
        self.trial, self.monitor, self.mode, self.steps = trial, monitor, mode, steps
        self.last_step = 0

    def on_fit_begin(self, learner) -> None:
        self.last_step = 0

    def _sign(self) -> float:
        mode = self.mode or ("max" if self.monitor in HIGHER_IS_BETTER else "min")
        study = getattr(self.trial, "study", None)
        direction = getattr(getattr(study, "direction", None), "name", None)
        if direction is None:
            return 1.0
        return -1.0 if (direction == "MAXIMIZE") != (mode == "max") else 1.0

    def on_epoch_end(self, learner) -> None:
        record = learner.history.records[-1]
        if self.monitor not in record:
            raise KeyError(f"OptunaPruning monitors {self.monitor!r} but the history has "
                           f"{sorted(record)}; pass validation data (eval_set, or "
                           "early_stopping=True) or monitor another column")
        value = float(record[self.monitor])
        if self.steps == "epoch":
            steps = [record["epoch"]]
        else:
            percent = math.floor(100 * record["epoch"] / max(learner.epochs, 1))
            steps = range(self.last_step + 1, percent + 1)
        for step in steps:
            self.trial.report(self._sign() * value, step)
            self.last_step = step
        if self.trial.should_prune():
            step = self.last_step
            raise _optuna().TrialPruned(
                f"pruned at {self.steps} {step}: {self.monitor} {value:.5g}")


# ------------------------------------------------------------------ tune


class Tuned(NamedTuple):
    """What :func:`tune` returns: the refitted best estimator and the study."""

    estimator: object
    study: object


def tune(estimator, X, y=None, *, n_trials: int | None = 30, timeout: float | None = None,
         cv=None, validation_fraction: float = 0.2, scoring=None, search_space=None,
         random_state: int | None = 0, pruning: bool = True, refit: bool = True,
         study=None, verbose: bool = False) -> Tuned:
    """Search ``estimator``'s parameters with Optuna's TPE sampler; refit the best on all rows.

    Each trial fits a clone with the trial's parameters and scores it on held-out
    rows: by default a ``validation_fraction`` holdout (stratified for
    classifiers) that is also each fit's ``eval_set``, so the pruner sees every
    epoch's validation loss; with ``cv``, the mean over folds (reported after
    each fold, so a trial can be pruned between folds).

    Parameters
    ----------
    estimator : tabembed estimator
        The starting point: parameters the search space does not set keep its
        values (set ``random_state`` on it for trials that differ only by their
        parameters).
    X, y : DataFrame (pandas, polars, Arrow) and targets
        ``y`` may be None for :class:`~tabembed.ImplicitRecommender`.
    n_trials : int, optional
        At most this many trials (None: until ``timeout``). TabM's authors
        recommend 30-50 TPE trials.
    timeout : float, optional
        The study's time budget in seconds: no trial starts after it.
    cv : int, cross-validation splitter or iterable, optional
        Score by cross-validation instead of one holdout.
    validation_fraction : float
        The holdout's share of the rows (without ``cv``).
    scoring : str or callable, optional
        A scikit-learn scorer (higher is better); default the estimator's
        ``score`` (accuracy, R², or the recommenders' own).
    search_space : callable, optional
        ``trial -> dict`` of parameters; default :func:`search_space`'s.
    random_state : int, optional
        Seeds the sampler and the holdout split or folds.
    pruning : bool
        Prune trials with Optuna's median rule (:class:`OptunaPruning`), from
        the sixth trial on, never before 25% of a trial's epochs.
    refit : bool
        Fit the best parameters on all of ``X`` (else the returned estimator is
        None).
    study : optuna.Study, optional
        Continue this study (it must maximise) instead of a new one.
    verbose : bool
        Optuna's per-trial log lines (silenced otherwise).

    Returns
    -------
    Tuned
        ``(estimator, study)``: the refitted best estimator and the Optuna study
        (``study.best_params``, ``study.trials_dataframe()``).
    """
    optuna = _optuna()
    if isinstance(X, str) or hasattr(X, "files") or hasattr(X, "__fspath__"):
        raise TypeError("tune needs the rows in memory (a DataFrame); to search on a Parquet "
                        "dataset, read a sample of it first")
    if not (0 < validation_fraction < 1):
        raise ValueError(f"validation_fraction must be between 0 and 1, got "
                         f"{validation_fraction!r}")
    if n_trials is None and timeout is None:
        raise ValueError("give n_trials, timeout or both: the search needs an end")
    frame = X if isinstance(X, pd.DataFrame | np.ndarray) else as_frame(X)
    target = None if y is None else (y if isinstance(y, pd.Series | pd.DataFrame)
                                     else np.asarray(y))
    space = search_space or default_search_space(estimator)
    scorer = check_scoring(estimator, scoring=scoring)
    if study is None:
        if not verbose:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=random_state),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=25)
            if pruning else optuna.pruners.NopPruner())
    elif study.direction.name != "MAXIMIZE":
        raise ValueError("tune scores with scikit-learn's convention (higher is better): "
                         "pass a study created with direction='maximize'")
    folds = _folds(estimator, frame, target, cv, validation_fraction, random_state)

    def objective(trial):
        params = space(trial)
        scores = []
        for index, (train_rows, valid_rows) in enumerate(folds):
            candidate = clone(estimator).set_params(**params)
            X_train, X_valid = _rows(frame, train_rows), _rows(frame, valid_rows)
            y_train, y_valid = _rows(target, train_rows), _rows(target, valid_rows)
            callbacks = [OptunaPruning(trial, steps="percent")] \
                if pruning and len(folds) == 1 else []
            candidate.fit(X_train, y_train, eval_set=(X_valid, y_valid), callbacks=callbacks)
            scores.append(float(scorer(candidate, X_valid, y_valid)))
            if pruning and len(folds) > 1:
                trial.report(float(np.mean(scores)), index)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {index + 1}")
        score = float(np.mean(scores))
        if not math.isfinite(score):
            raise TrainingDivergedError(f"the trial's score is {score}")
        return score

    study.optimize(objective, n_trials=n_trials, timeout=timeout,
                   catch=(TrainingDivergedError,))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        states = sorted({t.state.name for t in study.trials})
        raise RuntimeError(f"no trial finished ({len(study.trials)} trials: {states}); give "
                           "the search more time (timeout) or trials (n_trials)")
    best = None
    if refit:
        params = space(optuna.trial.FixedTrial(study.best_params))
        best = clone(estimator).set_params(**params).fit(frame, target)
    return Tuned(best, study)


def _folds(estimator, frame, target, cv, validation_fraction, random_state) -> list:
    """``(train_rows, valid_rows)`` pairs: one holdout, or the folds of ``cv``."""
    rows = np.arange(len(frame))
    classes = target is not None and np.ndim(target) == 1 and (
        is_classifier(estimator) or getattr(estimator, "task", None) == "classification"
        or (getattr(estimator, "task", None) == "auto"
            and type_of_target(target) in ("binary", "multiclass")))
    stratify = target if classes else None
    if cv is None:
        try:
            return [tuple(np.sort(part) for part in train_test_split(
                rows, test_size=validation_fraction, random_state=random_state,
                stratify=stratify))]
        except ValueError:      # a class too rare to stratify
            return [tuple(np.sort(part) for part in train_test_split(
                rows, test_size=validation_fraction, random_state=random_state))]
    if isinstance(cv, int):
        splitter = (StratifiedKFold if stratify is not None else KFold)(
            cv, shuffle=True, random_state=random_state)
        return list(splitter.split(rows, stratify))
    return list(check_cv(cv).split(rows, target))


def _rows(data, rows):
    if data is None:
        return None
    return data.iloc[rows] if isinstance(data, pd.DataFrame | pd.Series) else data[rows]
