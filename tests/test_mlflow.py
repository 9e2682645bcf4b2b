"""tabembed.mlflow against a local file store (no server, no network; optional extra)."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from tabembed import EmbeddingMLPClassifier, EmbeddingRecommender, EntityEmbeddingTransformer
from tabembed.datasets import make_synthetic

mlflow = pytest.importorskip("mlflow")

from tabembed.mlflow import MLflowLogger, load_model, log_model  # noqa: E402


def _has(module):
    return importlib.util.find_spec(module) is not None


@pytest.fixture(params=["file", pytest.param("sqlite", marks=pytest.mark.skipif(
    not (_has("sqlalchemy") and _has("alembic")), reason="MLflow's SQL store needs the full "
                                                         "mlflow package"))])
def store(request, tmp_path, monkeypatch):
    """A fresh local store in tmp_path as MLflow's tracking URI, no run active: a folder
    (MLflow 3 keeps it behind MLFLOW_ALLOW_FILE_STORE) or SQLite (MLflow 3's default)."""
    if request.param == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path / "mlruns").as_uri()
    else:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        monkeypatch.chdir(tmp_path)        # its artifacts go to ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    yield mlflow.MlflowClient()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def table():
    X, y = make_synthetic(600, cardinalities=(6, 12), n_continuous=2, task="classification",
                          random_state=0)
    return X.iloc[150:], y.iloc[150:], X.iloc[:150], y.iloc[:150]


def _artifacts(client, run_id, path=""):
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_a_logged_fit_has_its_parameters_epochs_plots_and_a_pyfunc_model(store, table):
    X, y, X_valid, y_valid = table
    logger = MLflowLogger(experiment_name="adult", run_name="defaults")
    classifier = EmbeddingMLPClassifier(epochs=3, lr="auto", random_state=0)
    classifier.fit(X, y, eval_set=(X_valid, y_valid), callbacks=[logger])
    run = store.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "defaults"
    assert store.get_experiment(run.info.experiment_id).name == "adult"
    assert mlflow.active_run() is None              # the logger ended the run it started
    # Parameters as text, exactly the estimator's.
    assert run.data.params == {name: str(value) for name, value in
                               classifier.get_params(deep=False).items()}
    assert run.data.tags["tabembed.estimator"] == "EmbeddingMLPClassifier"
    # Every epoch's metrics at step = epoch, equal to the history's.
    for name in ("train_loss", "valid_loss", "accuracy", "auc", "lr"):
        steps = store.get_metric_history(logger.run_id, name)
        assert [m.step for m in steps] == [1, 2, 3]
        np.testing.assert_allclose([m.value for m in steps], classifier.history_[name])
    assert run.data.metrics["fitted_lr"] == pytest.approx(classifier.lr_)
    artifacts = set(_artifacts(store, logger.run_id))
    assert {"plots/lr_finder.png", "plots/training_curves.png", "model/MLmodel",
            "model/data/model.tabembed"} <= artifacts
    assert not any(path.endswith((".pkl", ".pickle")) for path in artifacts)
    # The pyfunc flavour predicts like the estimator; the tabembed flavour loads it back.
    model = mlflow.pyfunc.load_model(logger.model_uri)
    np.testing.assert_array_equal(model.predict(X_valid), classifier.predict(X_valid))
    loaded = load_model(logger.model_uri)
    np.testing.assert_allclose(loaded.predict_proba(X_valid), classifier.predict_proba(X_valid))


def test_the_model_file_is_tabembeds_safe_format_not_a_pickle(store, table):
    X, y, _, _ = table
    classifier = EmbeddingMLPClassifier(epochs=1, lr=1e-2, random_state=0).fit(X, y)
    with mlflow.start_run() as run:
        uri = log_model(classifier, "clf")
    folder = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    mlmodel = (pd.io.common.Path(folder) / "MLmodel").read_text()
    assert "loader_module: tabembed.mlflow" in mlmodel and "python_model" not in mlmodel
    with open(f"{folder}/data/model.tabembed", "rb") as file:
        assert file.read(4) == b"PK\x03\x04"      # a zip of JSON and safetensors
    assert uri == f"runs:/{run.info.run_id}/clf"


def test_an_active_run_is_used_and_left_open(store, table):
    X, y, X_valid, y_valid = table
    with mlflow.start_run() as run:
        logger = MLflowLogger(log_model=False, log_plots=False)
        EmbeddingMLPClassifier(epochs=2, lr=1e-2).fit(X, y, eval_set=(X_valid, y_valid),
                                                     callbacks=[logger])
        assert logger.run_id == run.info.run_id and mlflow.active_run() is not None
        assert logger.model_uri is None
    assert _artifacts(store, run.info.run_id) == []


def test_a_failed_fit_ends_its_run_as_failed(store, table):
    X, y, _, _ = table
    logger = MLflowLogger()
    with pytest.raises(ValueError, match="epochs"):
        EmbeddingMLPClassifier(epochs=0).fit(X, y, callbacks=[logger])
    assert store.get_run(logger.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_recommender_and_transformer_models_load_through_pyfunc(store, table):
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame({"user": rng.integers(0, 30, 900), "item": rng.integers(0, 20, 900)})
    stars = pd.Series(rng.integers(1, 6, 900).astype(float))
    logger = MLflowLogger()
    recommender = EmbeddingRecommender(epochs=2, ranking="rating", random_state=0)
    recommender.fit(ratings, stars, callbacks=[logger])
    model = mlflow.pyfunc.load_model(logger.model_uri)
    np.testing.assert_allclose(model.predict(ratings.iloc[:50]),
                               recommender.predict(ratings.iloc[:50]), rtol=1e-6)
    assert model.get_raw_model().n_factors == recommender.n_factors
    X, y, X_valid, _ = table
    logger = MLflowLogger()
    transformer = EntityEmbeddingTransformer(epochs=1, lr=1e-2, random_state=0)
    transformer.fit(X, y, callbacks=[logger])
    model = mlflow.pyfunc.load_model(logger.model_uri)
    np.testing.assert_allclose(model.predict(X_valid), transformer.transform(X_valid))
    params = store.get_run(logger.run_id).data.params
    assert json.loads(params["hidden"].replace("(", "[").replace(")", "]")) == [200, 100]


def test_a_pruned_tuning_trial_ends_its_run_as_killed(store, table):
    optuna = pytest.importorskip("optuna")
    from tabembed.tuning import OptunaPruning

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    X, y, X_valid, y_valid = table
    trial = optuna.create_study(pruner=AlwaysPrune()).ask()
    logger = MLflowLogger()
    with pytest.raises(optuna.TrialPruned):
        EmbeddingMLPClassifier(epochs=3, lr=1e-2).fit(
            X, y, eval_set=(X_valid, y_valid), callbacks=[logger, OptunaPruning(trial)])
    run = store.get_run(logger.run_id)
    assert run.info.status == "KILLED"
    # The epoch before the pruning decision was logged; no model for a pruned fit.
    assert [m.step for m in store.get_metric_history(logger.run_id, "valid_loss")] == [1]
    assert logger.model_uri is None
