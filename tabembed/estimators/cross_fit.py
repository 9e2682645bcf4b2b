"""Accuracy mode of the MLP estimators: ``n_folds=k`` cross-fit bagging.

The training rows are cut into k folds (stratified for classification). Member
i trains on the other k - 1 folds and stops early on fold i (patience, best
weights kept), so every row trains k - 1 members and validates one; the
members' averaged predictions (probabilities for classifiers) are the model's,
and each row's prediction by the member that never trained on it gives an
out-of-fold score (``oof_score_``), as AutoGluon's bagging and pytabkit's
``n_cv`` do.

Built here, adopted at once by the estimator (:meth:`TrainedEstimator._adopt`),
so a cross-fit that raises leaves the previous fit in place. What is shared:

- one preprocessor and one target encoding, fitted on all training rows: a
  member's held-out fold was seen by the unsupervised statistics (categories,
  scaling, the target's mean and spread) but never by its training loss;
- the first member's learning rate: the LR finder runs once, on member 0's
  rows, and the others reuse its choice (their rows overlap by (k-2)/(k-1)).

``time_limit``: member 0 always finishes (stopped at the first epoch end past
the budget if it must); a later member starts only when the time left covers
the mean duration of those before it, and one the budget stops mid-way is
dropped, its fold left without out-of-fold predictions (NaN).
"""

from __future__ import annotations

import dataclasses
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

from tabembed import defaults
from tabembed.estimators.base import ABSENT
from tabembed.estimators.fit_data import MemoryRows, is_stream
from tabembed.estimators.parameters import NONE, Interval
from tabembed.training.time_limit import Deadline, StopAtDeadline

__all__ = ["CROSS_FIT_CONSTRAINTS", "CROSS_FIT_PARAMETERS_DOC", "NOT_CROSS_FITTED",
           "CrossFitting", "check_supported", "fold_rows"]

CROSS_FIT_PARAMETERS_DOC = """\
n_folds : int, optional
    Accuracy mode: k >= 2 trains k networks on k folds of the training rows
    (stratified for classification), each stopping early on its own held-out
    fold whatever ``early_stopping`` says (``validation_fraction`` unused), and
    predicts their mean (probabilities for classifiers); ``oof_score_`` scores
    every row by the member that did not train on it. About k - 1 times a
    single fit's time. None: one network. Not with Parquet streams, ``eval_set``,
    ``warm_start`` or ``partial_fit``.
time_limit : float, optional
    Seconds the fit may take: training stops at the first epoch end past it
    and keeps what finished (with ``n_folds``: the first member always
    finishes, later ones start only if the time left covers a member; a
    warning says how many were skipped)."""

CROSS_FIT_CONSTRAINTS = {
    "n_folds": [Interval(Integral, 2, None), NONE],
    "time_limit": [Interval(Real, 0, None, closed="neither", description="a number of "
                            "seconds > 0"), NONE],
}

# The attributes a single-network fit removes (a cross-fit before it may have set them).
NOT_CROSS_FITTED = {"members_": ABSENT, "oof_prediction_": ABSENT, "oof_score_": ABSENT,
                    "n_folds_fitted_": ABSENT}


def check_supported(estimator, X, *, eval_set, incremental: bool) -> None:
    """A clear error for what cross-fitting does not do."""
    if estimator.n_folds is None:
        if hasattr(estimator, "members_") and (incremental or estimator.warm_start):
            raise ValueError("this model was fitted with n_folds (several networks); "
                             "warm_start and partial_fit continue a single network: refit "
                             "with warm_start=False first")
        return
    reasons = [(is_stream(X), "a Parquet stream (fit a DataFrame)"),
               (eval_set is not None, "eval_set (each member validates on its own fold)"),
               (incremental, "partial_fit"), (estimator.warm_start, "warm_start=True")]
    for unsupported, what in reasons:
        if unsupported:
            raise ValueError(f"n_folds={estimator.n_folds} does not work with {what}; "
                             "set n_folds=None for a single network")


def fold_rows(target: torch.Tensor, task: str, n_folds: int, seed: int
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(training rows, held-out rows)]`` of k folds; stratified by class when every
    class has at least k rows (binary and multiclass targets)."""
    n_rows = len(target)
    if n_rows < n_folds:
        raise ValueError(f"n_folds={n_folds} needs at least {n_folds} training rows, got "
                         f"{n_rows}")
    rows = np.arange(n_rows)
    labels = target.numpy() if task in ("binary", "multiclass") else None
    if labels is not None and np.unique(labels, return_counts=True)[1].min() >= n_folds:
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed % 2**32)
        return list(folds.split(rows, labels))
    return list(KFold(n_folds, shuffle=True, random_state=seed % 2**32).split(rows))


def member_seed(seed: int, index: int) -> int:
    """Member ``index``'s own seed (initial weights, batch order) from the fit's seed."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _histories(members) -> pd.DataFrame:
    """The members' histories in one frame, ``member`` first."""
    return pd.concat([member.history_.assign(member=index)[
        ["member", *member.history_.columns]] for index, member in enumerate(members)],
        ignore_index=True)


def _encode_lr(lr):
    from tabembed.training.run import encode_lr

    return encode_lr(lr)


def _decode_lr(lr):
    from tabembed.training.run import decode_lr

    return decode_lr(lr)


class CrossFitting:
    """The cross-fit part of :class:`~tabembed.estimators.mlp.MLPEstimator`: training the
    members, and their place in model files. Members are instances of the estimator's own
    class (``n_folds=None``), sharing its preprocessor and target encoding."""

    def _new_member(self, fitted: dict):
        """A single-network copy of this estimator holding ``fitted``."""
        member = clone(self).set_params(n_folds=None, time_limit=None)
        member._adopt(fitted)
        return member

    def _fit_members(self, data, seed: int, callbacks, *, deadline: Deadline,
                     initial_state=None) -> dict:
        """Train ``n_folds`` members on ``data`` (:class:`TabularData`, in memory) within
        ``deadline``: the fitted attributes of the cross-fitted estimator, to adopt at once.
        ``initial_state``: every member's weights before training (pretrained)."""
        n_folds = self.n_folds
        tensors, weights = data.rows.tensors, data.rows.weights
        target = data.target
        folds = fold_rows(tensors[-1], target.task_, n_folds, seed)
        members, durations, lr = [], [], None
        outputs = None
        skipped = 0
        for index, (train_rows, valid_rows) in enumerate(folds):
            if index and durations and deadline.remaining() < np.mean(durations):
                skipped = n_folds - index
                break
            started = deadline.elapsed()
            rows = MemoryRows(tensors, train_rows, valid_rows, weights=weights)
            config = self._training_config(
                member_seed(seed, index),
                {"batch_size": defaults.auto_batch_size(len(train_rows))}).replace(
                early_stopping=True)
            if lr is not None:
                config = config.replace(lr=lr, lr_finder=None)
            stopper = StopAtDeadline(deadline)
            fitted = self._train_new(dataclasses.replace(data, rows=rows), config,
                                     [*callbacks, stopper], initial_state=initial_state)
            if index and stopper.stopped:     # a later member the budget cut short: dropped
                skipped = n_folds - index
                break
            durations.append(deadline.elapsed() - started)
            lr = fitted["lr_"]
            member = self._new_member({**fitted, "time_limit_reached_": stopper.stopped})
            held_out = member._prediction_learner().predict(
                tuple(t[valid_rows] for t in tensors[:2])).numpy()
            if outputs is None:
                outputs = np.full((len(tensors[0]), *held_out.shape[1:]), np.nan)
            outputs[valid_rows] = held_out
            members.append(member)
        if skipped:
            warnings.warn(f"time_limit={self.time_limit:g} s: {len(members)} of {n_folds} "
                          f"members trained, {skipped} skipped; their folds have no out-of-fold "
                          "predictions (NaN in oof_prediction_)", UserWarning, stacklevel=4)
        oof = self._predictions_of(outputs, target)
        covered = ~np.isnan(oof.reshape(len(oof), -1)).any(axis=1)
        first = members[0]
        state = {name: getattr(first, name) for name in (
            "preprocessor_", "target_transformer_", "model_", "model_kwargs_", "n_features_in_",
            "learner_", "lr_", "lr_finder_", "training_config_")}
        return {
            **state,
            "feature_names_in_": getattr(first, "feature_names_in_", ABSENT),
            "classes_": getattr(first, "classes_", ABSENT),
            "n_train_rows_": len(tensors[0]),
            "history_": _histories(members),
            "members_": members,
            "n_folds_fitted_": len(members),
            "time_limit_reached_": bool(skipped) or first.time_limit_reached_,
            "oof_prediction_": oof,
            "oof_score_": self._oof_score(data.y_values, oof, covered, target),
        }

    # ------------------------------------------------------------ files

    def _save_members(self, meta: dict, tensors: dict) -> None:
        """Add members 1.. (member 0 is the estimator's own network) and the out-of-fold
        predictions to a model file's ``meta`` and ``tensors``."""
        from tabembed import persistence

        if not hasattr(self, "members_"):
            return
        records = []
        for index, member in enumerate(self.members_[1:], start=1):
            predictor = member.learner_.predictor
            snapshots = predictor.snapshot_states() if predictor is not None else []
            member_meta, member_tensors = persistence.network_state(
                member.learner_.model, member.model_kwargs_, snapshots)
            tensors.update({f"member{index}.{k}": v for k, v in member_tensors.items()})
            records.append({**member_meta, "lr": _encode_lr(member.lr_),
                            "n_train_rows": int(member.n_train_rows_),
                            "seed": member.training_config_.seed,
                            "batch_size": member.training_config_.batch_size,
                            "time_limit_reached": bool(member.time_limit_reached_)})
        first = self.members_[0]
        tensors["oof_prediction"] = torch.as_tensor(np.asarray(self.oof_prediction_,
                                                               dtype=np.float64))
        meta["cross_fit"] = {
            "members": records, "oof_score": float(self.oof_score_),
            "first": {"seed": first.training_config_.seed,
                      "batch_size": first.training_config_.batch_size,
                      "n_train_rows": int(first.n_train_rows_),
                      "time_limit_reached": bool(first.time_limit_reached_)},
            "time_limit_reached": bool(self.time_limit_reached_),
        }

    def _restore_members(self, meta: dict, tensors: dict, *, device) -> None:
        """Adopt the members of a file :meth:`_save_members` wrote (this estimator's own
        network, preprocessor and target encoding are already restored)."""
        from tabembed import persistence

        state = meta.get("cross_fit")
        if state is None:
            self._adopt(NOT_CROSS_FITTED)
            return
        records = state["members"]
        if not isinstance(records, list) or len(records) + 1 > max(1, len(tensors)):
            raise persistence.DamagedFileError("the cross-fit members do not match the tensors")
        history = self.history_
        shared = {"preprocessor_": self.preprocessor_,
                  "target_transformer_": self.target_transformer_,
                  "n_features_in_": self.n_features_in_,
                  "feature_names_in_": getattr(self, "feature_names_in_", ABSENT),
                  "lr_finder_": None}
        if hasattr(self, "classes_"):
            shared["classes_"] = self.classes_

        def member_from(index, model, kwargs, learner, lr, n_train_rows, seed, batch_size,
                        reached):
            own = history[history["member"] == index].drop(columns="member") \
                if "member" in history else history
            # A member's loop parameters are this estimator's: the same configuration.
            return self._new_member({
                **shared, "model_": model, "model_kwargs_": kwargs, "learner_": learner,
                "lr_": lr, "n_train_rows_": n_train_rows, "history_": own.reset_index(drop=True),
                "time_limit_reached_": reached,
                "training_config_": self._training_config(seed, {"batch_size": batch_size})})

        first = state["first"]
        members = [member_from(0, self.model_, self.model_kwargs_, self.learner_,
                               self.lr_, first["n_train_rows"], first["seed"],
                               first["batch_size"], first["time_limit_reached"])]
        task = self.target_transformer_.task_
        for index, record in enumerate(records, start=1):
            prefix = f"member{index}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            model, kwargs, member_snapshots = persistence.load_network(
                record, own, self._model_classes)
            if (kwargs.get("task"), kwargs.get("d_out")) != (task, self.model_kwargs_.get(
                    "d_out")):
                raise persistence.DamagedFileError(f"member {index}'s output does not fit the "
                                                   "target")
            learner = self._member_learner(model, member_snapshots, device)
            members.append(member_from(index, model, kwargs, learner, _decode_lr(record["lr"]),
                                       record["n_train_rows"], record["seed"],
                                       record["batch_size"], record["time_limit_reached"]))
        oof = tensors.get("oof_prediction")
        if oof is None or oof.shape[0] != self.n_train_rows_:
            raise persistence.DamagedFileError("the out-of-fold predictions do not match the "
                                               "training rows")
        self._adopt({"members_": members, "n_folds_fitted_": len(members),
                     "oof_prediction_": oof.numpy(), "oof_score_": float(state["oof_score"]),
                     "time_limit_reached_": bool(state["time_limit_reached"])})
