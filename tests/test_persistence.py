import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tabembed
from tabembed.datasets import make_synthetic
from tabembed.estimators import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EntityEmbeddingTransformer,
)
from tabembed.recommenders import EmbeddingRecommender


@pytest.fixture(scope="module")
def classification():
    return make_synthetic(1500, task="classification", n_classes=3, random_state=0)


def test_classifier_round_trip_gives_identical_predictions(classification, tmp_path):
    X, y = classification
    classifier = EmbeddingMLPClassifier(epochs=3, lr=1e-2, random_state=0).fit(X, y)
    path = classifier.save(tmp_path / "model.tabembed")
    loaded = tabembed.load(path)
    assert isinstance(loaded, EmbeddingMLPClassifier)
    np.testing.assert_array_equal(loaded.predict_proba(X), classifier.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    assert loaded.get_params() == classifier.get_params()
    assert list(loaded.classes_) == list(classifier.classes_)
    pd.testing.assert_frame_equal(loaded.history_, classifier.history_)


def test_regressor_transformer_and_ensembles_round_trip(tmp_path):
    X, y = make_synthetic(1200, random_state=1)
    for estimator in (
        EmbeddingMLPRegressor(epochs=3, lr=1e-2, y_range="auto", random_state=0),
        EmbeddingMLPRegressor(epochs=3, lr=1e-2, schedule="sgdr", cycle_mult=1,
                              averaging="snapshot", random_state=0),
        EntityEmbeddingTransformer(epochs=2, lr=1e-2, random_state=0),
    ):
        estimator.fit(X, y)
        loaded = tabembed.load(estimator.save(tmp_path / "m.tabembed"))
        method = "transform" if isinstance(estimator, EntityEmbeddingTransformer) else "predict"
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(estimator, method)(X))
    assert loaded.get_feature_names_out().tolist() == estimator.get_feature_names_out().tolist()


def test_recommender_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"user": rng.integers(0, 50, 2000), "item": rng.integers(0, 40, 2000)})
    X["genre"] = (X["item"] % 3).map({0: "a", 1: "b", 2: "c"})
    y = rng.integers(1, 6, 2000).astype(float)
    recommender = EmbeddingRecommender(epochs=2, random_state=0).fit(X, y)
    loaded = tabembed.load(recommender.save(tmp_path / "rec.tabembed"))
    np.testing.assert_array_equal(loaded.predict(X), recommender.predict(X))
    pd.testing.assert_frame_equal(loaded.recommend(3, k=5), recommender.recommend(3, k=5))
    pd.testing.assert_frame_equal(loaded.similar_items(7), recommender.similar_items(7))


def test_loading_never_executes_a_pickle_payload(tmp_path, classification):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.tabembed"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="not a tabembed model file"):
        tabembed.load(evil)
    # A well-formed archive whose weights are a pickle instead of safetensors.
    X, y = classification
    good = EmbeddingMLPClassifier(epochs=1, lr=1e-2, random_state=0).fit(X, y)
    path = good.save(tmp_path / "good.tabembed")
    with zipfile.ZipFile(path) as archive:
        metadata = archive.read("metadata.json")
    tampered = tmp_path / "tampered.tabembed"
    with zipfile.ZipFile(tampered, "w") as archive:
        archive.writestr("metadata.json", metadata)
        archive.writestr("weights.safetensors", pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="corrupt weights"):
        tabembed.load(tampered)
    # A class that is not one of ours is refused by name, never imported.
    meta = json.loads(metadata)
    meta["class"] = "os.system"
    with zipfile.ZipFile(tampered, "w") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("weights.safetensors", zipfile.ZipFile(path).read("weights.safetensors"))
    with pytest.raises(ValueError, match="not one of tabembed's estimators"):
        tabembed.load(tampered)
    assert not marker.exists()


def test_newer_format_and_atomic_save(tmp_path, classification, monkeypatch):
    X, y = classification
    model = EmbeddingMLPClassifier(epochs=1, lr=1e-2, random_state=0).fit(X, y)
    path = model.save(tmp_path / "m.tabembed")
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("metadata.json"))
        weights = archive.read("weights.safetensors")
    meta["version"] = 99
    newer = tmp_path / "newer.tabembed"
    with zipfile.ZipFile(newer, "w") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("weights.safetensors", weights)
    with pytest.raises(ValueError, match="upgrade tabembed"):
        tabembed.load(newer)
    original = path.read_bytes()
    import tabembed.persistence as persistence

    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tabembed", "newer.tabembed"]
    assert persistence.FORMAT_VERSION == 1
    with pytest.raises(ValueError, match="not fitted"):
        EmbeddingMLPClassifier().save(tmp_path / "x.tabembed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_gpu_trained_model_loads_on_cpu(classification, tmp_path):
    X, y = classification
    model = EmbeddingMLPClassifier(epochs=2, lr=1e-2, device="cuda", random_state=0).fit(X, y)
    path = model.save(tmp_path / "gpu.tabembed")
    if os.environ.get("OUT"):     # on the lent GPU machine: keep the file for a CPU-side check
        import shutil

        shutil.copy(path, Path(os.environ["OUT"]) / "gpu_trained.tabembed")
        np.save(Path(os.environ["OUT"]) / "gpu_predictions.npy", model.predict_proba(X))
    loaded = tabembed.load(path, device="cpu")
    assert loaded.learner_.device.type == "cpu"
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-5)


def test_piecewise_linear_model_round_trip(classification, tmp_path):
    X, y = classification
    model = EmbeddingMLPClassifier(epochs=2, lr=1e-2, continuous_encoding="piecewise_linear",
                                   n_bins=8, random_state=0).fit(X, y)
    assert model.model_kwargs_["continuous_bins"] is not None
    loaded = tabembed.load(model.save(tmp_path / "ple.tabembed"))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_files_of_the_first_release_still_load():
    """Model files written by tabembed's first release (tests/data/release1, made by it)."""
    folder = Path(__file__).resolve().parent / "data" / "release1"
    X = pd.read_csv(folder / "X.csv")
    for column in ("cat_0", "cat_1"):
        X[column] = X[column].astype("category")
    classifier = tabembed.load(folder / "classifier.tabembed")
    assert classifier.learner_.predictor is not None      # a snapshot ensemble
    np.testing.assert_allclose(classifier.predict_proba(X),
                               np.load(folder / "classifier_proba.npy"), rtol=1e-5)
    transformer = tabembed.load(folder / "transformer.tabembed")
    np.testing.assert_allclose(transformer.transform(X), np.load(folder / "transformer.npy"),
                               rtol=1e-5)
    ratings = pd.read_csv(folder / "ratings.csv")
    recommender = tabembed.load(folder / "recommender.tabembed")
    np.testing.assert_allclose(recommender.predict(ratings), np.load(folder / "recommender.npy"),
                               rtol=1e-5)
    expected = pd.read_csv(folder / "recommend_3.csv")
    top = recommender.recommend(3, k=3)
    assert top["item"].tolist() == expected["item"].tolist()


def test_a_pipeline_rebuilt_from_saved_steps_predicts_the_same(tmp_path):
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    X, y = make_synthetic(800, task="classification", random_state=4)
    pipeline = make_pipeline(EntityEmbeddingTransformer(epochs=2, lr=1e-2, random_state=0),
                             HistGradientBoostingClassifier(max_iter=20)).fit(X, y)
    pipeline.named_steps["entityembeddingtransformer"].save(tmp_path / "embed.tabembed")
    joblib.dump(pipeline.named_steps["histgradientboostingclassifier"],
                tmp_path / "booster.joblib")
    rebuilt = make_pipeline(tabembed.load(tmp_path / "embed.tabembed"),
                            joblib.load(tmp_path / "booster.joblib"))
    np.testing.assert_array_equal(rebuilt.predict_proba(X), pipeline.predict_proba(X))
