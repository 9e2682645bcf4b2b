"""MLflow: a fit's parameters, epochs, plots and model in a run; tabembed models as pyfunc.

Needs the ``mlflow`` extra (``pip install 'tabembed[mlflow]'``); importing this
module does not, only logging does.

::

    import mlflow
    from tabembed.mlflow import MLflowLogger

    logger = MLflowLogger()
    classifier.fit(X, y, eval_set=(X_valid, y_valid), callbacks=[logger])
    model = mlflow.pyfunc.load_model(logger.model_uri)    # "runs:/<run id>/model"
    model.predict(X_test)

The model is stored in tabembed's own format (JSON and safetensors, written by
``estimator.save``) with an MLmodel file whose ``python_function`` flavour names
this module as its loader. Nothing is pickled: ``mlflow.pyfunc.load_model``
imports the installed tabembed and calls :func:`tabembed.load`, which executes
nothing from the file. (A ``mlflow.pyfunc.PythonModel`` would be pickled into the
artifact, and unpickling it runs whatever code it holds.)
"""

from __future__ import annotations

import math
import re
import tempfile
import time
import warnings
from pathlib import Path

from tabembed._version import __version__
from tabembed.training.callbacks import Callback

__all__ = ["MLflowLogger", "PyfuncModel", "load_model", "log_model", "save_model"]

MODEL_FILE = "model.tabembed"
# MLflow's longest parameter value (6,000 characters since MLflow 2.x).
MAX_PARAM_LENGTH = 6000


def _mlflow():
    try:
        import mlflow
    except ImportError as error:
        raise ImportError("tabembed.mlflow needs MLflow: pip install 'tabembed[mlflow]'"
                          ) from error
    return mlflow


# ------------------------------------------------------------------ the model


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: a tabembed estimator predicting DataFrames.

    ``predict`` is the estimator's ``predict`` (labels for classifiers, ratings or
    scores for recommenders), or ``transform`` for
    :class:`~tabembed.EntityEmbeddingTransformer`. ``get_raw_model()`` (MLflow's
    name) is the estimator itself, for ``predict_proba`` or ``recommend``.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def predict(self, model_input, params=None):
        if hasattr(self.estimator, "predict"):
            return self.estimator.predict(model_input)
        return self.estimator.transform(model_input)

    def get_raw_model(self):
        return self.estimator


def _load_pyfunc(path):
    """MLflow's loader hook (``loader_module="tabembed.mlflow"``): the model at ``path``."""
    from tabembed import load

    return PyfuncModel(load(path))


def save_model(estimator, path, *, pip_requirements=None) -> Path:
    """Write a fitted estimator as an MLflow model folder at ``path``.

    The folder holds ``data/model.tabembed`` (``estimator.save``) and an MLmodel
    file with two flavours: ``python_function`` (loaded by this module) and
    ``tabembed``. ``pip_requirements`` default to this tabembed version.
    """
    _mlflow()      # a clear error without the extra
    import mlflow.pyfunc
    from mlflow.models import Model

    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        model_file = Path(scratch) / MODEL_FILE
        estimator.save(model_file)
        model = Model()
        model.add_flavor("tabembed", model_file=f"data/{MODEL_FILE}",
                         tabembed_version=__version__, estimator=type(estimator).__name__)
        mlflow.pyfunc.save_model(
            path, loader_module=__name__, data_path=str(model_file), mlflow_model=model,
            pip_requirements=pip_requirements or [f"tabembed=={__version__}"])
    return path


def log_model(estimator, artifact_path: str = "model", *, run_id: str | None = None) -> str:
    """Log a fitted estimator as an MLflow model in a run; returns its URI
    (``runs:/<run id>/<artifact_path>``) for ``mlflow.pyfunc.load_model`` or
    :func:`load_model`. ``run_id`` defaults to the active run."""
    mlflow = _mlflow()
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise ValueError("no active MLflow run: call inside mlflow.start_run() or pass "
                             "run_id")
        run_id = active.info.run_id
    with tempfile.TemporaryDirectory() as scratch:
        folder = save_model(estimator, Path(scratch) / "model")
        mlflow.MlflowClient().log_artifacts(run_id, str(folder), artifact_path)
    return f"runs:/{run_id}/{artifact_path}"


def load_model(model_uri: str, *, device="auto"):
    """The tabembed estimator of an MLflow model (any URI MLflow resolves), loaded with
    :func:`tabembed.load` (so nothing from the artifact is executed)."""
    mlflow = _mlflow()
    from mlflow.models import Model

    from tabembed import load

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    flavor = Model.load(str(folder / "MLmodel")).flavors.get("tabembed")
    if flavor is None:
        raise ValueError(f"{model_uri} is not a tabembed model (its MLmodel has no "
                         "'tabembed' flavour); load it with mlflow.pyfunc.load_model")
    return load(folder / flavor["model_file"], device=device)


# ------------------------------------------------------------------ the callback


def _metric_name(name: str) -> str:
    """A history column as an MLflow metric name (letters, digits, ``_-./ :`` only)."""
    return re.sub(r"[^\w\-./ :]", "_", str(name))


def _param_value(value) -> str:
    return str(value)[:MAX_PARAM_LENGTH]


class MLflowLogger(Callback):
    """Record a fit in MLflow: parameters, every epoch's metrics, plots and the fitted model.

    Give it to any tabembed estimator's ``fit(..., callbacks=[MLflowLogger()])``.

    - When the fit starts: the estimator's parameters (``get_params(deep=False)``,
      as text) and tags (its class, the tabembed version).
    - After every epoch: the epoch's record (``train_loss``, with validation data
      ``valid_loss`` and the task's metrics, ``lr``, ``time``), at step = epoch.
    - When the fit ends: the learning rate used (``fitted_lr``), the LR finder's
      plot when it ran and the training curves (``plots/``, with matplotlib), and
      the model (``model/``, see :func:`log_model`): ``mlflow.pyfunc.load_model(
      logger.model_uri).predict(df)`` works.

    The run: ``run_id`` if given, else the active run (``mlflow.start_run()``),
    else a new run in ``experiment_name`` (or MLflow's current experiment),
    started and ended by the logger (status FINISHED, or FAILED / KILLED when the
    fit raised or a tuning trial was pruned). The tracking server is MLflow's
    (``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI``).

    Parameters
    ----------
    run_id : str, optional
    experiment_name : str, optional
        For a run the logger starts: created if missing.
    run_name : str, optional
        For a run the logger starts.
    log_model : bool
        Log the fitted model as an artifact.
    artifact_path : str
        Where in the run the model goes.
    log_plots : bool
        Log the LR finder and training-curve plots (needs matplotlib).

    Attributes
    ----------
    run_id : str
        The run logged to (after the fit starts).
    model_uri : str or None
        ``runs:/<run id>/<artifact_path>`` once the model is logged.
    """

    def __init__(self, run_id: str | None = None, *, experiment_name: str | None = None,
                 run_name: str | None = None, log_model: bool = True,
                 artifact_path: str = "model", log_plots: bool = True):
        self.requested_run_id, self.run_id = run_id, run_id
        self.experiment_name, self.run_name = experiment_name, run_name
        self.log_model, self.artifact_path, self.log_plots = log_model, artifact_path, log_plots
        self.model_uri = None
        self.started = False       # whether this logger started (and so ends) the run

    # The client is made when needed and never kept: callbacks are copied with the loop's
    # state, and a client holds a connection.
    def _client(self):
        return _mlflow().MlflowClient()

    def on_estimator_fit_begin(self, estimator) -> None:
        mlflow = _mlflow()
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        self.model_uri, self.started = None, False
        self.run_id = self.requested_run_id
        if self.run_id is None:
            active = mlflow.active_run()
            if active is not None:
                self.run_id = active.info.run_id
            else:
                experiment_id = None
                if self.experiment_name is not None:
                    experiment = mlflow.get_experiment_by_name(self.experiment_name)
                    experiment_id = (experiment.experiment_id if experiment is not None
                                     else mlflow.create_experiment(self.experiment_name))
                run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name)
                self.run_id, self.started = run.info.run_id, True
        params = [Param(name, _param_value(value))
                  for name, value in sorted(estimator.get_params(deep=False).items())]
        tags = [RunTag("tabembed.estimator", type(estimator).__name__),
                RunTag("tabembed.version", __version__)]
        client = self._client()
        client.log_batch(self.run_id, tags=tags)
        try:
            client.log_batch(self.run_id, params=params)
        except MlflowException as error:
            # MLflow never changes a logged parameter: a second fit in one run with other
            # parameters keeps the first fit's.
            warnings.warn(f"MLflow kept the run's earlier parameters ({error.message}); "
                          "log each fit in a run of its own to record its parameters",
                          stacklevel=2)

    def on_epoch_end(self, learner) -> None:
        from mlflow.entities import Metric

        record = learner.history.records[-1]
        step, stamp = int(record["epoch"]), int(time.time() * 1000)
        metrics = [Metric(_metric_name(name), float(value), stamp, step)
                   for name, value in record.items()
                   if name != "epoch" and isinstance(value, int | float)
                   and math.isfinite(value)]
        self._client().log_batch(self.run_id, metrics=metrics)

    def on_estimator_fit_end(self, estimator, error) -> None:
        try:
            if error is None:
                self._log_fitted(estimator)
        finally:
            if self.started:
                status = ("FINISHED" if error is None else
                          "KILLED" if type(error).__name__ == "TrialPruned" else "FAILED")
                _mlflow().end_run(status=status)
                self.started = False

    def _log_fitted(self, estimator) -> None:
        client = self._client()
        inner = getattr(estimator, "estimator_", estimator)    # the transformer's network
        lr = getattr(inner, "lr_", None)
        if isinstance(lr, int | float):
            client.log_metric(self.run_id, "fitted_lr", float(lr))
        if self.log_plots:
            self._log_plots(client, inner)
        if self.log_model:
            self.model_uri = log_model(estimator, self.artifact_path, run_id=self.run_id)

    def _log_plots(self, client, estimator) -> None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            warnings.warn("MLflowLogger logs no plots without matplotlib: pip install "
                          "'tabembed[plot]'", stacklevel=3)
            return
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            finder = getattr(estimator, "lr_finder_", None)
            if finder is not None:
                finder.plot(folder / "lr_finder.png")
            learner = getattr(estimator, "learner_", None)
            if learner is not None and len(learner.history):
                learner.history.plot(folder / "training_curves.png")
            if any(folder.iterdir()):
                client.log_artifacts(self.run_id, str(folder), "plots")
