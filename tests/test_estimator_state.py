"""Every estimator's fitted state survives save and tabembed.load, under every averaging mode.

The fitted state's file form is written once (``TrainedEstimator.to_state``), so
ensembles' snapshots travel with every estimator: a loaded model predicts and
recommends exactly as the fitted one.
"""

import copy

import numpy as np
import pandas as pd
import pytest

import tabembed
from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    EntityEmbeddingTransformer,
    ImplicitRecommender,
)
from tabembed.datasets import make_synthetic
from tabembed.recommenders.scoring import GridScorer

AVERAGING = [None, "ema", "swa", "snapshot", "fge"]


def _options(averaging):
    # Snapshots need a cyclical schedule: three SGDR cycles of one epoch.
    # FGE collects one model per two-epoch cycle at the end: two cycles in 8 epochs.
    schedule = "sgdr" if averaging == "snapshot" else "one_cycle"
    epochs = 8 if averaging == "fge" else 4
    return {"averaging": averaging, "schedule": schedule, "epochs": epochs, "random_state": 0}


def _ratings(n_users=40, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.4)
    users, items = rng.normal(0, 1, (n_users, 2)), rng.normal(0, 1, (n_items, 2))
    rating = 3 + (users[pairs[:, 0]] * items[pairs[:, 1]]).sum(1)
    frame = pd.DataFrame({"user": [f"u{k}" for k in pairs[:, 0]],
                          "item": [f"i{k}" for k in pairs[:, 1]],
                          "genres": np.array(["a|b", "b", "c|a"])[pairs[:, 1] % 3]})
    return frame, pd.Series(rating, name="rating")


@pytest.mark.parametrize("averaging", AVERAGING)
@pytest.mark.parametrize("kind", ["classifier", "regressor", "transformer"])
def test_tabular_estimators_predict_the_same_after_loading(kind, averaging, tmp_path):
    task = "regression" if kind == "regressor" else "classification"
    X, y = make_synthetic(400, task=task, random_state=0)
    cls = {"classifier": EmbeddingMLPClassifier, "regressor": EmbeddingMLPRegressor,
           "transformer": EntityEmbeddingTransformer}[kind]
    fitted = cls(hidden=(16,), batch_size=64, lr=1e-2, **_options(averaging)).fit(X, y)
    predictor = getattr(fitted, "estimator_", fitted).learner_.predictor
    assert (predictor is not None and len(predictor.snapshots) > 1) == \
        (averaging in ("snapshot", "fge"))
    loaded = tabembed.load(fitted.save(tmp_path / "model.tabembed"))
    method = {"classifier": "predict_proba", "regressor": "predict",
              "transformer": "transform"}[kind]
    np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(fitted, method)(X))
    assert loaded.get_params()["averaging"] == averaging


@pytest.mark.parametrize("averaging", AVERAGING)
@pytest.mark.parametrize("cls", [EmbeddingRecommender, ImplicitRecommender])
def test_recommenders_predict_and_recommend_the_same_after_loading(cls, averaging, tmp_path):
    X, y = _ratings()
    fitted = cls(n_factors=4, **_options(averaging)).fit(X, y)
    predictor = fitted.learner_.predictor
    assert (predictor is not None and len(predictor.snapshots) > 1) == \
        (averaging in ("snapshot", "fge"))
    loaded = tabembed.load(fitted.save(tmp_path / "model.tabembed"))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    users = ["u0", "u3", "stranger"]
    pd.testing.assert_frame_equal(loaded.recommend(users, k=5), fitted.recommend(users, k=5))
    pd.testing.assert_frame_equal(loaded.similar_items("i1", k=3),
                                  fitted.similar_items("i1", k=3))
    pd.testing.assert_frame_equal(loaded.recommend_for_items(["i1", "i2"], k=3),
                                  fitted.recommend_for_items(["i1", "i2"], k=3))


def test_a_snapshot_ensemble_recommends_with_the_mean_of_its_members(tmp_path):
    """The hybrid's rating scores are the mean of the snapshots' scores, before and after
    loading (the second release scored by snapshots it did not save)."""
    X, y = _ratings()
    fitted = EmbeddingRecommender(n_factors=4, ranking="rating", ranking_shrinkage=0,
                                  min_support=0, **_options("snapshot")).fit(X, y)
    codes = fitted.preprocessor_.encode("user", ["u0", "u5"])
    single = GridScorer(fitted.model_, fitted.scorer_.tables)     # the model's own weights
    final = copy.deepcopy(fitted.model_.state_dict())
    members = []
    for state in fitted.learner_.predictor.snapshot_states():
        fitted.model_.load_state_dict(state)
        members.append(single.scores(codes))
    fitted.model_.load_state_dict(final)
    expected = np.mean(members, axis=0)
    np.testing.assert_allclose(fitted._scores(codes), expected, rtol=1e-6)
    loaded = tabembed.load(fitted.save(tmp_path / "model.tabembed"))
    np.testing.assert_allclose(loaded._scores(codes), expected, rtol=1e-6)
