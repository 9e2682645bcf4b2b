"""Accuracy mode (``n_folds``: cross-fit bagging) and ``time_limit``."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import tabembed
from tabembed import EmbeddingMLPClassifier, EmbeddingMLPRegressor
from tabembed.datasets import make_synthetic
from tabembed.estimators.cross_fit import fold_rows
from tabembed.training import time_limit
from tabembed.training.callbacks import Callback

FAST = {"epochs": 3, "hidden": (32,), "lr": 1e-2, "random_state": 0}


@pytest.fixture(scope="module")
def binary():
    return make_synthetic(600, task="classification", n_classes=2, random_state=0)


@pytest.fixture(scope="module")
def cross_fitted(binary):
    X, y = binary
    return EmbeddingMLPClassifier(n_folds=3, **FAST).fit(X, y)


def test_predict_proba_is_the_mean_of_the_members_and_oof_score_scores_held_out_rows(
        binary, cross_fitted):
    X, y = binary
    model = cross_fitted
    assert model.n_folds_fitted_ == 3 and len(model.members_) == 3
    assert all(member.n_folds is None for member in model.members_)
    probabilities = model.predict_proba(X)
    members = np.mean([member.predict_proba(X) for member in model.members_], axis=0)
    np.testing.assert_allclose(probabilities, members, rtol=0, atol=1e-12)
    # The members differ (own rows, own seeds): the mean is not one of them.
    assert not np.allclose(model.members_[0].predict_proba(X),
                           model.members_[1].predict_proba(X))
    # Every row has exactly one out-of-fold prediction, and the score is its accuracy.
    assert model.oof_prediction_.shape == (len(X), 2)
    assert not np.isnan(model.oof_prediction_).any()
    labels = model.classes_[model.oof_prediction_.argmax(axis=1)]
    assert model.oof_score_ == pytest.approx(accuracy_score(y, labels))
    # Held-out rows score below the training rows; each member, trained on 400 rows for
    # 3 epochs, has learned much of the rule (chance: 0.5).
    assert model.oof_score_ < accuracy_score(y, model.predict(X))
    assert model.oof_score_ > 0.65
    assert model.n_train_rows_ == len(X)
    assert list(model.history_["member"].unique()) == [0, 1, 2]
    assert not model.time_limit_reached_


def test_each_member_trains_on_all_folds_but_its_own_and_stops_early_on_it(binary):
    X, y = binary
    model = EmbeddingMLPClassifier(n_folds=4, **FAST).fit(X, y)
    for member in model.members_:
        assert member.n_train_rows_ == len(X) * 3 // 4
        assert member.training_config_.early_stopping
        assert "valid_loss" in member.history_
    # The LR finder ran once: the other members reuse the first one's rate.
    assert {member.lr_ for member in model.members_} == {model.members_[0].lr_}


def test_folds_are_stratified_and_partition_the_rows():
    import torch

    labels = torch.as_tensor(np.repeat([0, 1, 2], [50, 30, 20]))
    folds = fold_rows(labels, "multiclass", 5, seed=0)
    held_out = np.sort(np.concatenate([valid for _, valid in folds]))
    np.testing.assert_array_equal(held_out, np.arange(100))
    for train, valid in folds:
        assert not set(train) & set(valid)
        np.testing.assert_array_equal(np.bincount(labels.numpy()[valid]), [10, 6, 4])
    # A class too rare to stratify: plain folds, no error.
    rare = torch.as_tensor(np.r_[np.zeros(20), 1.0])
    assert len(fold_rows(rare, "binary", 3, seed=0)) == 3
    with pytest.raises(ValueError, match="n_folds=5 needs at least 5 training rows"):
        fold_rows(torch.zeros(3), "regression", 5, seed=0)


def test_regressor_averages_members_and_scores_r2_out_of_fold():
    X, y = make_synthetic(500, task="regression", random_state=0)
    model = EmbeddingMLPRegressor(n_folds=3, **{**FAST, "epochs": 4}).fit(X, y)
    prediction = model.predict(X)
    np.testing.assert_allclose(prediction, np.mean([m.predict(X) for m in model.members_],
                                                   axis=0), rtol=1e-6)
    assert model.oof_prediction_.shape == (len(X),)
    assert model.oof_score_ == pytest.approx(r2_score(y, model.oof_prediction_))
    assert model.oof_score_ > 0.5


def test_save_load_keeps_every_member_and_predicts_the_same(binary, cross_fitted, tmp_path):
    X, _ = binary
    loaded = tabembed.load(cross_fitted.save(tmp_path / "bagged.tabembed"))
    np.testing.assert_array_equal(loaded.predict_proba(X), cross_fitted.predict_proba(X))
    assert len(loaded.members_) == 3
    for ours, theirs in zip(cross_fitted.members_, loaded.members_, strict=True):
        np.testing.assert_array_equal(theirs.predict_proba(X), ours.predict_proba(X))
    np.testing.assert_array_equal(loaded.oof_prediction_, cross_fitted.oof_prediction_)
    assert loaded.oof_score_ == cross_fitted.oof_score_
    assert loaded.get_params()["n_folds"] == 3
    pd.testing.assert_frame_equal(loaded.history_, cross_fitted.history_)


def test_a_file_with_a_member_missing_is_refused(binary, cross_fitted, tmp_path):
    import io
    import json
    import zipfile

    path = cross_fitted.save(tmp_path / "bagged.tabembed")
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("metadata.json"))
        weights = archive.read("weights.safetensors")
    meta["cross_fit"]["members"].append(dict(meta["cross_fit"]["members"][0]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("weights.safetensors", weights)
    damaged = tmp_path / "damaged.tabembed"
    damaged.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="damaged"):
        tabembed.load(damaged)


def test_onnx_export_averages_the_members_in_one_graph(binary, cross_fitted, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from tabembed.export import export_onnx, onnx_inputs

    X, _ = binary
    path = export_onnx(cross_fitted, tmp_path / "bagged.onnx")
    session = onnxruntime.InferenceSession(str(path))
    output = session.run(None, onnx_inputs(cross_fitted, X))[0]
    np.testing.assert_allclose(output, cross_fitted.predict_proba(X), atol=1e-5)


def test_clone_pipeline_and_grid_search_over_n_folds(binary):
    X, y = binary
    estimator = EmbeddingMLPClassifier(n_folds=2, time_limit=600.0, **FAST)
    assert clone(estimator).get_params() == estimator.get_params()
    pipeline = make_pipeline(FunctionTransformer(lambda frame: frame.copy()), estimator)
    pipeline.fit(X, y)
    assert len(pipeline[-1].members_) == 2
    assert accuracy_score(y, pipeline.predict(X)) > 0.8
    search = GridSearchCV(EmbeddingMLPClassifier(**FAST), {"n_folds": [None, 2]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        search.fit(X, y)
    assert list(search.cv_results_["param_n_folds"]) == [None, 2]
    assert search.best_score_ > 0.65     # 150-row members (chance: 0.5)


def test_unsupported_combinations_fail_clearly(binary, tmp_path):
    X, y = binary
    model = EmbeddingMLPClassifier(n_folds=3, **FAST)
    with pytest.raises(ValueError, match="n_folds=3 does not work with eval_set"):
        model.fit(X, y, eval_set=(X, y))
    with pytest.raises(ValueError, match="n_folds=3 does not work with warm_start"):
        EmbeddingMLPClassifier(n_folds=3, warm_start=True, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="n_folds=3 does not work with partial_fit"):
        model.partial_fit(X, y, classes=np.unique(y))
    path = tmp_path / "rows.parquet"
    X.assign(target=y).to_parquet(path)
    with pytest.raises(ValueError, match="n_folds=3 does not work with a Parquet stream"):
        model.fit(str(path), "target")
    with pytest.raises(ValueError, match="n_folds must be an integer in \\[2, inf\\)"):
        EmbeddingMLPClassifier(n_folds=1).fit(X, y)
    with pytest.raises(ValueError, match="time_limit must be a number of seconds > 0"):
        EmbeddingMLPClassifier(time_limit=0).fit(X, y)
    assert not hasattr(model, "learner_")


def test_a_single_refit_drops_the_members_and_warm_start_refuses_a_bagged_model(binary):
    X, y = binary
    model = EmbeddingMLPClassifier(n_folds=2, **FAST).fit(X, y)
    model.set_params(warm_start=True, n_folds=None)
    with pytest.raises(ValueError, match="fitted with n_folds"):
        model.fit(X, y)
    model.set_params(warm_start=False).fit(X, y)
    assert not hasattr(model, "members_") and not hasattr(model, "oof_score_")
    single = model.learner_.predict(model.preprocessor_.to_tensors(X)).numpy().reshape(-1)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], single, rtol=0, atol=1e-12)


class Failing(Callback):
    """Raises in the third member's first epoch."""

    def __init__(self):
        self.fits = 0

    def on_fit_begin(self, learner):
        self.fits += 1
        if self.fits == 3:
            raise RuntimeError("member 2 failed")


def test_a_failed_cross_fit_leaves_the_previous_model_in_place(binary):
    X, y = binary
    model = EmbeddingMLPClassifier(**FAST).fit(X, y)
    before = model.predict_proba(X)
    model.set_params(n_folds=3)
    with pytest.raises(RuntimeError, match="member 2 failed"):
        model.fit(X, y, callbacks=[Failing()])
    assert not hasattr(model, "members_")
    np.testing.assert_array_equal(model.predict_proba(X), before)


# ------------------------------------------------------------ time limit

class Clock:
    """A fake clock: epochs advance it (``Tick``), nothing sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Tick(Callback):
    """Each epoch end moves the clock by the next of ``seconds`` (the last one repeats)."""

    order = -100

    def __init__(self, clock, seconds):
        self.clock, self.seconds, self.epochs = clock, list(seconds), 0

    def on_epoch_end(self, learner):
        self.clock.now += self.seconds[min(self.epochs, len(self.seconds) - 1)]
        self.epochs += 1


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(time_limit, "clock", fake)
    return fake


def test_the_first_member_always_finishes_stopped_at_the_epoch_after_the_budget(binary, clock):
    X, y = binary
    model = EmbeddingMLPClassifier(n_folds=4, time_limit=2.5, **{**FAST, "epochs": 5})
    with pytest.warns(UserWarning, match="1 of 4 members trained, 3 skipped"):
        model.fit(X, y, callbacks=[Tick(clock, [1.0])])
    assert model.n_folds_fitted_ == 1 and model.time_limit_reached_
    assert len(model.members_[0].history_) == 3          # epochs ending at 1, 2 and 3 s
    assert model.members_[0].time_limit_reached_
    covered = ~np.isnan(model.oof_prediction_).any(axis=1)
    assert covered.sum() == len(X) // 4
    labels = model.classes_[model.oof_prediction_[covered].argmax(axis=1)]
    assert model.oof_score_ == pytest.approx(accuracy_score(y[covered], labels))
    np.testing.assert_array_equal(model.predict_proba(X), model.members_[0].predict_proba(X))


def test_members_start_only_while_the_time_left_covers_one(binary, clock):
    X, y = binary
    model = EmbeddingMLPClassifier(n_folds=5, time_limit=6.5, **{**FAST, "epochs": 2})
    with pytest.warns(UserWarning, match="3 of 5 members trained, 2 skipped"):
        model.fit(X, y, callbacks=[Tick(clock, [1.0])])
    assert model.n_folds_fitted_ == 3 and clock.now == 6.0
    assert all(len(member.history_) == 2 for member in model.members_)


def test_a_member_the_budget_cuts_short_is_dropped(binary, clock):
    X, y = binary
    model = EmbeddingMLPClassifier(n_folds=3, time_limit=7.0, **FAST)
    # Member 0 takes 3 s; member 1 starts (4 s left) but its epochs take 2 s each.
    with pytest.warns(UserWarning, match="1 of 3 members trained, 2 skipped"):
        model.fit(X, y, callbacks=[Tick(clock, [1.0, 1.0, 1.0, 2.0])])
    assert model.n_folds_fitted_ == 1 and clock.now == 7.0


def test_a_single_network_stops_at_the_first_epoch_end_past_the_budget(binary, clock):
    X, y = binary
    model = EmbeddingMLPClassifier(time_limit=2.5, **{**FAST, "epochs": 6})
    model.fit(X, y, callbacks=[Tick(clock, [1.0])])
    assert len(model.history_) == 3 and model.time_limit_reached_
    roomy = EmbeddingMLPClassifier(time_limit=100.0, **{**FAST, "epochs": 3}).fit(
        X, y, callbacks=[Tick(clock, [1.0])])
    assert len(roomy.history_) == 3 and not roomy.time_limit_reached_


def test_warm_start_continues_within_the_time_limit_too(binary, clock):
    X, y = binary
    model = EmbeddingMLPClassifier(warm_start=True, time_limit=1.5, **{**FAST, "epochs": 4})
    model.fit(X, y, callbacks=[Tick(clock, [1.0])])
    assert len(model.history_) == 2 and model.time_limit_reached_
    model.fit(X, y, callbacks=[Tick(clock, [1.0])])       # a new budget for the new fit
    assert len(model.history_) == 4 and model.time_limit_reached_
