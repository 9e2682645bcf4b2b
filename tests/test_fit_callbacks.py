"""fit(..., callbacks=[...]): callbacks run inside every estimator's training loop.

They see each epoch's record (validation metrics included), get the estimator
events around the fit, never run in the LR finder's sweep, and leave no
reference behind in the fitted estimator.
"""

import pickle
import threading

import numpy as np
import pandas as pd
import pytest

from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    EntityEmbeddingTransformer,
    ImplicitRecommender,
)
from tabembed.datasets import make_synthetic
from tabembed.training.callbacks import Callback


class Recorder(Callback):
    """Every epoch's record as the loop holds it at on_epoch_end, and the estimator events."""

    def __init__(self):
        self.records, self.events, self.batches = [], [], 0
        self.lock = threading.Lock()       # unpicklable: a fitted model must not hold it

    def on_batch_end(self, learner):
        self.batches += 1

    def on_epoch_end(self, learner):
        self.records.append(dict(learner.history.records[-1]))

    def on_estimator_fit_begin(self, estimator):
        self.events.append(("begin", estimator, hasattr(estimator, "history_")))

    def on_estimator_fit_end(self, estimator, error):
        self.events.append(("end", estimator, error))


class FailAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, learner):
        if learner.epoch + 1 == self.epoch:
            raise RuntimeError(f"stop at epoch {self.epoch}")


def _table(task, n_rows=600, seed=0):
    X, y = make_synthetic(n_rows, cardinalities=(6, 12), n_continuous=2, task=task,
                          random_state=seed)
    return X, y


def _ratings(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    users, items = rng.normal(0, 1, (n_users, 2)), rng.normal(0, 1, (n_items, 2))
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.5)
    u, i = pairs[:, 0], pairs[:, 1]
    rating = 3 + (users[u] * items[i]).sum(1) + rng.normal(0, 0.1, len(u))
    return (pd.DataFrame({"user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i]}),
            pd.Series(rating, name="rating"))


CASES = {
    "classifier": (lambda: EmbeddingMLPClassifier(epochs=3, random_state=0),
                   lambda: _table("classification"), {"valid_loss", "accuracy", "auc"}),
    "regressor": (lambda: EmbeddingMLPRegressor(epochs=3, random_state=0),
                  lambda: _table("regression"), {"valid_loss", "rmse", "mae"}),
    "transformer": (lambda: EntityEmbeddingTransformer(epochs=3, random_state=0),
                    lambda: _table("classification"), {"valid_loss", "accuracy", "auc"}),
    "explicit": (lambda: EmbeddingRecommender(n_factors=4, epochs=3, ranking="rating",
                                              random_state=0),
                 _ratings, {"valid_loss", "rmse", "mae"}),
    "implicit": (lambda: ImplicitRecommender(n_factors=4, epochs=3, random_state=0),
                 _ratings, {"valid_loss"}),
}


def _split(X, y, n_valid=120):
    return (X.iloc[n_valid:], y.iloc[n_valid:]), (X.iloc[:n_valid], y.iloc[:n_valid])


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_callback_sees_every_epochs_validation_metrics(case):
    make, data, metrics = CASES[case]
    (X, y), valid = _split(*data())
    recorder = Recorder()
    estimator = make().fit(X, y, eval_set=valid, callbacks=[recorder])
    history = (estimator.estimator_ if case == "transformer" else estimator).history_
    assert [r["epoch"] for r in recorder.records] == [1, 2, 3]
    for record, (_, row) in zip(recorder.records, history.iterrows(), strict=True):
        assert metrics <= set(record)
        for name in metrics:
            assert np.isfinite(record[name]) and record[name] == pytest.approx(row[name])
    # The estimator events: once each (the transformer's inner fit fires none), around the
    # fit; at the end the fitted state is in place.
    assert [(kind, who) for kind, who, _ in recorder.events] == [("begin", estimator),
                                                                 ("end", estimator)]
    assert recorder.events[0][2] is False and recorder.events[1][2] is None
    # No reference kept: the recorder holds a lock, and the fitted model still pickles.
    pickle.loads(pickle.dumps(estimator))


def test_callbacks_do_not_run_in_the_lr_finders_sweep():
    X, y = _table("classification")
    recorder = Recorder()
    classifier = EmbeddingMLPClassifier(epochs=2, lr="auto", random_state=0)
    classifier.fit(X, y, callbacks=[recorder])
    assert classifier.lr_finder_ is not None
    steps_per_epoch = len(classifier.history_) and classifier.learner_.steps_per_epoch
    assert recorder.batches == 2 * steps_per_epoch
    assert len(recorder.records) == 2


def test_callbacks_change_nothing_about_the_fit():
    X, y = _table("regression")
    plain = EmbeddingMLPRegressor(epochs=2, random_state=0).fit(X, y)
    watched = EmbeddingMLPRegressor(epochs=2, random_state=0).fit(X, y, callbacks=[Recorder()])
    np.testing.assert_array_equal(plain.predict(X), watched.predict(X))


def test_a_callback_that_raises_leaves_the_previous_model_working():
    X, y = _table("classification")
    classifier = EmbeddingMLPClassifier(epochs=2, random_state=0).fit(X, y)
    before = classifier.predict_proba(X)
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="stop at epoch 1"):
        classifier.fit(X, y, callbacks=[recorder, FailAt(1)])
    assert recorder.events[-1][0] == "end"
    assert isinstance(recorder.events[-1][2], RuntimeError)
    np.testing.assert_array_equal(classifier.predict_proba(X), before)
    # A warm start that raises rolls back too.
    classifier.set_params(warm_start=True)
    with pytest.raises(RuntimeError):
        classifier.fit(X, y, callbacks=[FailAt(2)])
    np.testing.assert_array_equal(classifier.predict_proba(X), before)
    # ... and a warm start with a callback sees its own epochs only.
    recorder = Recorder()
    classifier.fit(X, y, callbacks=[recorder])
    assert [r["epoch"] for r in recorder.records] == [1, 2]


def test_callbacks_that_are_not_callbacks_are_refused():
    X, y = _table("regression", n_rows=100)
    with pytest.raises(TypeError, match="is not a Callback: subclass"):
        EmbeddingMLPRegressor(epochs=1).fit(X, y, callbacks=[print])
    with pytest.raises(TypeError, match="must be a list of Callback"):
        EmbeddingMLPRegressor(epochs=1).fit(X, y, callbacks="progress")
