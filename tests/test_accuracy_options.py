"""The MLP estimators' accuracy options: PLR numeric embeddings (the default),
k members in one model, swap noise, mixup and label smoothing."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

import tabembed
from tabembed import EmbeddingMLPClassifier, EmbeddingMLPRegressor, EntityEmbeddingTransformer
from tabembed.datasets import make_synthetic
from tabembed.models.augmentation import MixupLoss
from tabembed.models.numeric_embeddings import PeriodicEmbeddings

FAST = {"epochs": 6, "hidden": (32,), "lr": 1e-2, "random_state": 0}


@pytest.fixture(scope="module")
def classification():
    return make_synthetic(1200, task="classification", n_classes=2, random_state=0)


def test_default_encodes_continuous_columns_with_plr_at_a_scale_set_by_the_rows(classification):
    X, y = classification
    model = EmbeddingMLPClassifier(**FAST).fit(X, y)
    assert isinstance(model.model_.continuous_norm, PeriodicEmbeddings)
    assert model.model_kwargs_["continuous_embedding"] == "plr"
    # Under 10,000 rows the initial frequencies have std 0.3 (3 from there).
    assert model.model_kwargs_["frequency_init_scale"] == 0.3
    big = EmbeddingMLPClassifier()._model_kwargs(model.preprocessor_, model.target_transformer_,
                                                  20_000, None)
    assert big["frequency_init_scale"] == 3.0
    fixed = EmbeddingMLPClassifier(frequency_init_scale=10)._model_kwargs(
        model.preprocessor_, model.target_transformer_, 20_000, None)
    assert fixed["frequency_init_scale"] == 10
    assert accuracy_score(y, model.predict(X)) > 0.8


@pytest.mark.parametrize("encoding", ["plr_lite", "piecewise_linear", None])
def test_other_encodings_train_and_round_trip(classification, encoding, tmp_path):
    X, y = classification
    model = EmbeddingMLPClassifier(continuous_encoding=encoding, n_bins=8, **FAST).fit(X, y)
    loaded = tabembed.load(model.save(tmp_path / "model.tabembed"))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert accuracy_score(y, model.predict(X)) > 0.75


@pytest.mark.parametrize("params, message", [
    ({"continuous_encoding": "periodic"}, "continuous_encoding must be one of"),
    ({"frequency_init_scale": 0}, "frequency_init_scale must be"),
    ({"frequency_init_scale": "high"}, "frequency_init_scale must be"),
    ({"label_smoothing": 1.0}, "label_smoothing must be"),
])
def test_bad_options_are_clear_errors(classification, params, message):
    X, y = classification
    with pytest.raises(ValueError, match=message):
        EmbeddingMLPClassifier(**{**FAST, "epochs": 1}, **params).fit(X, y)


def test_members_average_in_prediction_and_survive_save(classification, tmp_path):
    X, y = classification
    model = EmbeddingMLPClassifier(n_members=4, **FAST).fit(X, y)
    with torch.inference_mode():
        codes, continuous = model.preprocessor_.to_tensors(X.iloc[:5])
        assert model.model_(codes, continuous).shape == (5, 4, 1)   # binary: one logit
    probabilities = model.predict_proba(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    loaded = tabembed.load(model.save(tmp_path / "members.tabembed"))
    np.testing.assert_array_equal(loaded.predict_proba(X), probabilities)


def test_mixup_trains_with_the_mixed_loss_and_predicts_unmixed(classification):
    X, y = classification
    model = EmbeddingMLPClassifier(mixup_alpha=0.4, swap_noise=0.1, **FAST).fit(X, y)
    assert isinstance(model.learner_.loss, MixupLoss)
    # Prediction runs in eval mode: no noise, no mixing, the same answer twice.
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X))
    assert accuracy_score(y, model.predict(X)) > 0.75


def test_label_smoothing_pulls_probabilities_from_0_and_1(classification):
    X, y = classification
    sharp = EmbeddingMLPClassifier(**FAST).fit(X, y).predict_proba(X)
    smooth = EmbeddingMLPClassifier(label_smoothing=0.2, **FAST).fit(X, y).predict_proba(X)
    # Smoothed targets are 0.1 and 0.9: the loss's optimum for a row lies inside them.
    # Measured: median confidence 0.874 smoothed, 0.991 without.
    assert np.median(smooth.max(axis=1)) < 0.92 < np.median(sharp.max(axis=1))


def test_label_smoothing_is_for_classification_only():
    X, y = make_synthetic(300, task="regression", random_state=0)
    with pytest.raises(ValueError, match="label_smoothing applies to classification"):
        EmbeddingMLPRegressor(label_smoothing=0.1, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="label_smoothing applies to classification"):
        EntityEmbeddingTransformer(label_smoothing=0.1, **FAST).fit(X, y)
