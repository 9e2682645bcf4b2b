import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from tabembed.datasets import make_synthetic
from tabembed.estimators import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EntityEmbeddingTransformer,
)

# Small, fixed-rate configurations: the checks fit dozens of times on tiny data.
FAST = {"epochs": 50, "hidden": (16,), "random_state": 0, "lr": 1e-2, "batch_size": 64}

# Predictions are float32 network outputs. Which GEMM kernel a CPU picks depends on the
# batch's shape (e.g. fewer than 16 rows on some Intel CPUs), and kernels differ in the
# last bits (~1e-7 relative), beyond these checks' 1e-7 tolerance. Whether a check passes
# would depend on the CPU, so they are listed (not strict: they pass on many CPUs), and
# test_predictions_do_not_depend_on_batch_composition asserts the same property at 1e-5.
FLOAT32 = ("predictions are float32 network outputs; a different batch composition can pick "
           "another GEMM kernel and change the last bits (~1e-7 relative)")
BATCH_COMPOSITION_CHECKS = ("check_methods_subset_invariance",
                            "check_methods_sample_order_invariance")


def _expected_failures(estimator):
    if isinstance(estimator, EmbeddingMLPClassifier | EmbeddingMLPRegressor):
        return dict.fromkeys(BATCH_COMPOSITION_CHECKS, FLOAT32)
    return {}


@parametrize_with_checks(
    [EmbeddingMLPClassifier(**FAST), EmbeddingMLPRegressor(**FAST),
     EntityEmbeddingTransformer(epochs=50, hidden=(16,), random_state=0, lr=1e-2,
                                batch_size=64)],
    expected_failed_checks=_expected_failures,
)
def test_scikit_learn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("cls", [EmbeddingMLPClassifier, EmbeddingMLPRegressor])
def test_predictions_do_not_depend_on_batch_composition(cls):
    task = "classification" if cls is EmbeddingMLPClassifier else "regression"
    X, y = make_synthetic(600, task=task, random_state=0)
    estimator = cls(**FAST).fit(X, y)
    method = "predict_proba" if task == "classification" else "predict"
    whole = getattr(estimator, method)(X)
    order = np.random.default_rng(0).permutation(len(X))
    shuffled = getattr(estimator, method)(X.iloc[order])
    np.testing.assert_allclose(shuffled, whole[order], rtol=1e-5, atol=1e-7)
    for rows in (slice(0, 1), slice(3, 10), slice(100, 400)):
        np.testing.assert_allclose(getattr(estimator, method)(X.iloc[rows]), whole[rows],
                                   rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ Adult

@pytest.fixture(scope="module")
def adult_small(adult):
    train, test = adult
    sample = train.sample(6000, random_state=0)
    return (sample.drop(columns="income"), sample["income"],
            test.drop(columns="income").iloc[:3000], test["income"].iloc[:3000])


@pytest.fixture(scope="module")
def fitted_classifier(adult_small):
    X, y, _, _ = adult_small
    return EmbeddingMLPClassifier(epochs=4, random_state=0).fit(X, y)


def test_classifier_on_adult_learns_and_decodes_labels(fitted_classifier, adult_small):
    _, _, X_test, y_test = adult_small
    classifier = fitted_classifier
    assert list(classifier.classes_) == ["<=50K", ">50K"]
    predictions = classifier.predict(X_test)
    assert set(predictions) <= {"<=50K", ">50K"}
    assert accuracy_score(y_test.astype(object), predictions) > 0.82
    probabilities = classifier.predict_proba(X_test)
    assert probabilities.shape == (3000, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-6)
    assert classifier.score(X_test, y_test) > 0.82
    assert classifier.n_features_in_ == 14
    assert list(classifier.feature_names_in_) == list(X_test.columns)
    assert classifier.lr_finder_ is not None and classifier.lr_ > 0
    assert len(classifier.history_) == 4


def test_same_random_state_same_predictions_and_pickle_round_trip(fitted_classifier,
                                                                   adult_small):
    X, y, X_test, _ = adult_small
    again = clone(fitted_classifier).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X_test),
                                  fitted_classifier.predict_proba(X_test))
    restored = pickle.loads(pickle.dumps(fitted_classifier))
    np.testing.assert_array_equal(restored.predict_proba(X_test),
                                  fitted_classifier.predict_proba(X_test))


def test_pipeline_grid_search_and_cross_validation(adult_small):
    X, y, _, _ = adult_small
    X, y = X.iloc[:1500], y.iloc[:1500]
    base = EmbeddingMLPClassifier(epochs=2, lr=3e-3, random_state=0)
    search = GridSearchCV(base, {"hidden": [(32,), (64, 32)]}, cv=2).fit(X, y)
    assert search.best_params_["hidden"] in [(32,), (64, 32)]
    scores = cross_val_score(base, X, y, cv=2)
    assert scores.shape == (2,) and (scores > 0.7).all()
    pipeline = make_pipeline(EntityEmbeddingTransformer(epochs=2, lr=3e-3, random_state=0),
                             HistGradientBoostingClassifier(max_iter=20))
    pipeline.fit(X, y)
    assert pipeline.score(X, y) > 0.75


def test_multiclass_and_multilabel():
    X, y = make_synthetic(3000, task="classification", n_classes=3, noise=0.3, random_state=0)
    labels = np.array(["low", "mid", "high"])[y]
    classifier = EmbeddingMLPClassifier(epochs=10, lr=1e-2, random_state=0).fit(X, labels)
    assert list(classifier.classes_) == ["high", "low", "mid"]
    probabilities = classifier.predict_proba(X)
    assert probabilities.shape == (3000, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    assert classifier.score(X, labels) > 0.7
    indicator = pd.DataFrame({"a": (y == 0).astype(int), "b": (y != 1).astype(int)})
    multi = EmbeddingMLPClassifier(epochs=10, lr=1e-2, random_state=0).fit(X, indicator)
    assert list(multi.classes_) == ["a", "b"]
    assert multi.predict(X).shape == (3000, 2)
    probabilities = multi.predict_proba(X)
    assert not np.allclose(probabilities.sum(1), 1)
    assert (multi.predict(X) == indicator.to_numpy()).mean() > 0.8


def test_regressor_recovers_signal_with_y_range():
    X, y = make_synthetic(4000, noise=0.1, random_state=0)
    regressor = EmbeddingMLPRegressor(epochs=12, lr=1e-2, random_state=0, y_range="auto")
    regressor.fit(X.iloc[:3000], y.iloc[:3000])
    assert regressor.score(X.iloc[3000:], y.iloc[3000:]) > 0.85
    predictions = regressor.predict(X)
    span = y.max() - y.min()
    assert predictions.min() >= y.min() - 0.1 * span - 1e-6
    assert predictions.max() <= y.max() + 0.1 * span + 1e-6


def test_early_stopping_uses_a_validation_split():
    X, y = make_synthetic(2000, task="classification", random_state=1)
    classifier = EmbeddingMLPClassifier(epochs=30, lr=1e-2, early_stopping=True, patience=2,
                                        random_state=0).fit(X, y)
    assert "valid_loss" in classifier.history_
    assert len(classifier.history_) < 30


@pytest.mark.parametrize("averaging, schedule", [("ema", "one_cycle"), ("swa", "one_cycle"),
                                                 ("swa", "sgdr"), ("snapshot", "sgdr"),
                                                 ("fge", "one_cycle")])
def test_averaging_options(averaging, schedule):
    X, y = make_synthetic(1500, task="classification", random_state=2)
    classifier = EmbeddingMLPClassifier(epochs=7, lr=1e-2, averaging=averaging,
                                        schedule=schedule, random_state=0).fit(X, y)
    assert classifier.score(X, y) > 0.7
    if averaging in ("snapshot", "fge"):
        assert classifier.learner_.predictor is not None


def test_warm_start_and_partial_fit():
    X, y = make_synthetic(2000, task="classification", random_state=3)
    classifier = EmbeddingMLPClassifier(epochs=2, lr=1e-2, warm_start=True, random_state=0)
    classifier.fit(X, y)
    first = classifier.model_.head.weight.detach().clone()
    classifier.fit(X, y)
    assert classifier.model_ is not None and len(classifier.history_) == 4
    assert not np.allclose(first.numpy(), classifier.model_.head.weight.detach().numpy())
    incremental = EmbeddingMLPClassifier(lr=1e-2, random_state=0)
    for chunk in range(4):
        rows = slice(chunk * 500, (chunk + 1) * 500)
        incremental.partial_fit(X.iloc[rows], y.iloc[rows])
    assert len(incremental.history_) == 4 and incremental.score(X, y) > 0.6
    # A first batch without class 2: classes= names it up front.
    X3, y3 = make_synthetic(1200, task="classification", n_classes=3, random_state=4)
    first = y3 != 2
    stream = EmbeddingMLPClassifier(lr=1e-2, random_state=0)
    stream.partial_fit(X3[first], y3[first], classes=[0, 1, 2])
    stream.partial_fit(X3, y3)
    assert list(stream.classes_) == [0, 1, 2]
    assert stream.predict_proba(X3).shape == (1200, 3)


def test_bad_input_is_a_clear_error(fitted_classifier, adult_small):
    X, y, X_test, _ = adult_small
    with pytest.raises(ValueError, match=r"missing from the frame: \['age'\]"):
        fitted_classifier.predict(X_test.drop(columns="age"))
    with pytest.raises(ValueError, match="missing value"):
        EmbeddingMLPClassifier().fit(X.iloc[:10], y.iloc[:10].where(y.iloc[:10] != "<=50K"))
    with pytest.raises(ValueError, match="single class"):
        EmbeddingMLPClassifier().fit(X.iloc[:10], ["a"] * 10)
    with pytest.raises(ValueError, match="minimum of 2"):
        EmbeddingMLPClassifier().fit(X.iloc[:0], y.iloc[:0])
    with pytest.raises(ValueError, match="averaging"):
        EmbeddingMLPClassifier(averaging="mean").fit(X.iloc[:10], y.iloc[:10])
    with pytest.raises(ValueError, match="continuous"):
        EmbeddingMLPClassifier().fit(X.iloc[:10], np.linspace(0, 1, 10))
