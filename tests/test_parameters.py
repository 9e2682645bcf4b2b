"""Estimator parameters: constraints checked at fit, option objects, the retired names."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import tabembed
from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    EntityEmbeddingTransformer,
    ImplicitRecommender,
)
from tabembed.datasets import make_synthetic
from tabembed.estimators.parameters import decode_parameters, encode_parameters
from tabembed.models.numeric_embeddings import PLR, PiecewiseLinear
from tabembed.training.averaging import EMA, SWA
from tabembed.training.schedules import SGDR

ESTIMATORS = [EmbeddingMLPClassifier, EmbeddingMLPRegressor, EntityEmbeddingTransformer,
              EmbeddingRecommender, ImplicitRecommender]
FAST = {"epochs": 2, "hidden": (16,), "lr": 1e-2, "batch_size": 64, "random_state": 0}


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_parameter_has_a_constraint(cls):
    assert set(cls().get_params()) == set(cls._parameter_constraints)


def test_the_classifier_has_at_most_28_parameters():
    assert len(EmbeddingMLPClassifier().get_params()) <= 28


def _ratings():
    rng = np.random.default_rng(0)
    pairs = np.argwhere(rng.random((30, 20)) < 0.5)
    return (pd.DataFrame({"user": pairs[:, 0], "item": pairs[:, 1]}),
            pd.Series(rng.integers(1, 6, len(pairs)).astype(float)))


@pytest.mark.parametrize(("cls", "bad", "named"), [
    (EmbeddingMLPClassifier, {"epochs": 0}, r"epochs must be an integer in \[1, inf\); got 0"),
    (EmbeddingMLPClassifier, {"averaging": "polyak"}, "averaging must be one of"),
    (EmbeddingMLPClassifier, {"schedule": 3}, "schedule must be"),
    (EmbeddingMLPClassifier, {"hidden": (64, 0)}, "hidden must be a tuple of positive"),
    (EmbeddingMLPClassifier, {"dropout": 1.5}, r"dropout must be a number in \[0, 1\)"),
    (EmbeddingMLPClassifier, {"continuous_encoding": "fourier"}, "continuous_encoding"),
    (EmbeddingMLPClassifier, {"lr": -1.0}, "lr must be"),
    (EmbeddingMLPClassifier, {"verbose": -1}, "verbose must be"),
    (EmbeddingMLPRegressor, {"target_scale": "minmax"}, "target_scale must be one of"),
    (EmbeddingMLPRegressor, {"y_range": (5, 1)}, r"y_range must be.*\(low, high\)"),
    (EmbeddingRecommender, {"ranking_shrinkage": -1}, "ranking_shrinkage must be"),
    (EmbeddingRecommender, {"min_support": 1.5}, "min_support must be"),
    (EmbeddingRecommender, {"ranking": "best"}, "ranking must be one of"),
    (ImplicitRecommender, {"n_negatives": 0}, "n_negatives must be"),
    (ImplicitRecommender, {"model": "svd"}, "model must be one of"),
])
def test_a_bad_parameter_fails_when_fit_starts_naming_itself(cls, bad, named):
    if cls in (EmbeddingRecommender, ImplicitRecommender):
        X, y = _ratings()
    else:
        X, y = make_synthetic(100, task="regression" if cls is EmbeddingMLPRegressor
                              else "classification", random_state=0)
    estimator = cls(**bad)      # nothing is checked in __init__ (scikit-learn's contract)
    with pytest.raises(ValueError, match=named):
        estimator.fit(X, y)
    assert not hasattr(estimator, "learner_")


def test_retired_names_fold_into_the_objects_that_replaced_them():
    X, y = make_synthetic(300, task="classification", random_state=0)
    with pytest.warns(FutureWarning, match=r"cycle_len.*schedule=SGDR\(cycle_len=2"):
        old = EmbeddingMLPClassifier(schedule="sgdr", cycle_len=2, cycle_mult=1,
                                     averaging="ema", ema_decay=0.99,
                                     frequency_init_scale=3.0, **{**FAST, "epochs": 4})
    new = EmbeddingMLPClassifier(schedule=SGDR(cycle_len=2, cycle_mult=1),
                                 averaging=EMA(decay=0.99),
                                 continuous_encoding=PLR(frequency_init_scale=3.0),
                                 **{**FAST, "epochs": 4})
    assert repr(old) == repr(new)
    assert old.continuous_encoding == new.continuous_encoding
    np.testing.assert_array_equal(old.fit(X, y).predict_proba(X),
                                  new.fit(X, y).predict_proba(X))
    # clone and set_params carry them the same way.
    assert repr(clone(old)) == repr(old)
    with pytest.warns(FutureWarning, match="swa_start"):
        swa = EmbeddingMLPClassifier(averaging="swa").set_params(swa_start=0.5, swa_lr=0.1)
    assert (swa.averaging.start, swa.averaging.swa_lr) == (0.5, 0.1)
    with pytest.warns(FutureWarning, match="no effect"):
        ignored = EmbeddingMLPClassifier(n_bins=16)       # PLR inputs have no bins
    assert ignored.continuous_encoding == "auto"
    assert EmbeddingMLPClassifier(continuous_encoding="piecewise_linear").set_params(
        n_bins=16).continuous_encoding == PiecewiseLinear(n_bins=16)
    with pytest.raises(TypeError, match="unexpected keyword argument 'cycles'"):
        EmbeddingMLPClassifier(cycles=3)


def test_retired_names_work_on_the_recommenders_too():
    with pytest.warns(FutureWarning):
        recommender = EmbeddingRecommender(schedule="sgdr", cycle_len=1, cycle_mult=1)
    assert isinstance(recommender.schedule, SGDR) and recommender.schedule.cycle_mult == 1


def test_option_objects_are_saved_and_only_known_classes_are_rebuilt(tmp_path):
    X, y = make_synthetic(300, task="classification", random_state=0)
    options = dict(schedule=SGDR(cycle_len=1, cycle_mult=2), averaging=SWA(start=0.5),
                   continuous_encoding=PLR(n_frequencies=8, frequency_init_scale=2.0))
    fitted = EmbeddingMLPClassifier(**{**FAST, "epochs": 3}, **options).fit(X, y)
    loaded = tabembed.load(fitted.save(tmp_path / "model.tabembed"))
    for name in options:
        assert repr(loaded.get_params()[name]) == repr(fitted.get_params()[name])
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    encoded = encode_parameters({"schedule": SGDR(cycle_len=3)})
    assert encoded == {"schedule": {"option": "SGDR", "arguments": {
        "cycle_len": 3, "cycle_mult": 1, "min_fraction": 0.0}}}
    with pytest.raises(ValueError, match="unknown option 'system'"):
        decode_parameters({"schedule": {"option": "system", "arguments": {"command": "ls"}}})


def test_a_search_over_option_objects_clones_them():
    X, y = make_synthetic(300, task="classification", random_state=0)
    search = GridSearchCV(EmbeddingMLPClassifier(**FAST), {
        "averaging": [EMA(decay=0.9), EMA(decay=0.99)],
        "continuous_encoding": [PLR(frequency_init_scale=1.0), PiecewiseLinear(n_bins=8)]},
        cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert isinstance(search.best_estimator_.averaging, EMA)
