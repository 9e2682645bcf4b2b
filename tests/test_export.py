"""ONNX export: onnxruntime gives what the estimator's own predict gives."""

import numpy as np
import pandas as pd
import pytest

from tabembed.datasets import make_synthetic
from tabembed.estimators import EmbeddingMLPClassifier, EmbeddingMLPRegressor
from tabembed.export import export_onnx, onnx_inputs
from tabembed.recommenders import EmbeddingRecommender

ort = pytest.importorskip("onnxruntime")


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_adult_classifier_matches_torch_within_1e_5(adult, tmp_path):
    train, test = adult
    X, y = train.drop(columns="income").iloc[:6000], train["income"].iloc[:6000]
    X_test = test.drop(columns="income")
    classifier = EmbeddingMLPClassifier(epochs=2, random_state=0).fit(X, y)
    session = _session(export_onnx(classifier, tmp_path / "adult.onnx"))
    served = session.run(None, onnx_inputs(classifier, X_test))[0]
    np.testing.assert_allclose(served, classifier.predict_proba(X_test), atol=1e-5, rtol=0)
    one_row = session.run(None, onnx_inputs(classifier, X_test.iloc[:1]))[0]
    assert one_row.shape == (1, 2)
    labels = classifier.classes_[served.argmax(axis=1)]
    assert (labels == classifier.predict(X_test)).mean() > 0.999


@pytest.mark.parametrize("options", [{"target_scale": "standard"}, {"target_scale": "log"},
                                     {"averaging": "snapshot", "schedule": "sgdr",
                                      "cycle_mult": 1}])
def test_regressors_and_ensembles_decode_in_the_graph(options, tmp_path):
    X, y = make_synthetic(1500, noise=0.1, random_state=0)
    y = y - y.min() + 1.0      # positive, for log1p
    regressor = EmbeddingMLPRegressor(epochs=3, lr=1e-2, random_state=0, **options).fit(X, y)
    session = _session(export_onnx(regressor, tmp_path / "r.onnx"))
    served = session.run(None, onnx_inputs(regressor, X))[0].ravel()
    np.testing.assert_allclose(served, regressor.predict(X), rtol=1e-5, atol=1e-5)


def test_recommender_ratings(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"user": rng.integers(0, 50, 2000), "item": rng.integers(0, 40, 2000)})
    y = rng.integers(1, 6, 2000).astype(float)
    recommender = EmbeddingRecommender(epochs=2, random_state=0).fit(X, y)
    session = _session(export_onnx(recommender, tmp_path / "rec.onnx"))
    served = session.run(None, onnx_inputs(recommender, X))[0].ravel()
    np.testing.assert_allclose(served, recommender.predict(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not fitted"):
        export_onnx(EmbeddingRecommender(), tmp_path / "x.onnx")


def test_every_graph_takes_both_inputs(tmp_path):
    X, y = make_synthetic(600, cardinalities=(), n_continuous=3, random_state=0)
    only_numbers = EmbeddingMLPRegressor(epochs=2, lr=1e-2, random_state=0).fit(X, y)
    session = _session(export_onnx(only_numbers, tmp_path / "numbers.onnx"))
    assert [i.name for i in session.get_inputs()] == ["codes", "continuous"]
    served = session.run(None, onnx_inputs(only_numbers, X))[0].ravel()
    np.testing.assert_allclose(served, only_numbers.predict(X), rtol=1e-5, atol=1e-5)
