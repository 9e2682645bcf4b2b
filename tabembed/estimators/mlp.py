"""The entity-embedding MLP's fit and prediction, shared by the classifier and the regressor.

A fit builds a :class:`TabularData` (the fitted preprocessor and target
encoding, and the rows: in memory from a DataFrame, or streamed from Parquet),
then one routine, :meth:`MLPEstimator._train_new`, builds the network and
trains it. The two data sources differ only in how the encoders are fitted and
where the rows come from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_is_fitted

from tabembed import defaults
from tabembed._validation import (
    as_frame,
    check_finite_predictions,
    check_rows,
    check_sample_weight,
    frame_for_prediction,
    has_feature_names,
    require_target,
)
from tabembed.augmentation import augmentation_rates, is_augmentation
from tabembed.batches import EVALUATION_BATCH_SIZE, row_batches
from tabembed.estimators import cross_fit
from tabembed.estimators.base import (
    ABSENT,
    LOOP_CONSTRAINTS,
    TrainedEstimator,
    fit_events,
    rollback_on_failure,
)
from tabembed.estimators.fit_data import MemoryRows, StreamRows, is_stream, validation_split
from tabembed.estimators.parameters import (
    BOOLEAN,
    COLUMN_NAMES,
    FRACTION,
    NONE,
    POSITIVE_INT,
    WIDTHS,
    InstanceOf,
    Interval,
    Options,
    Satisfies,
)
from tabembed.metrics import task_metrics
from tabembed.models import EntityEmbeddingMLP, MixupLoss, loss_for_task, predictions_from_output
from tabembed.models.numeric_embeddings import PLR, PiecewiseLinear
from tabembed.preprocessing import TabularPreprocessor
from tabembed.targets import TargetTransformer, distinct_labels
from tabembed.training import distributed
from tabembed.training.run import inference_learner, train
from tabembed.training.schedules import Constant
from tabembed.training.seeding import Seeds, isolated_random_state
from tabembed.training.time_limit import Deadline, StopAtDeadline

__all__ = ["MLP_CONSTRAINTS", "MLP_PARAMETERS_DOC", "MLPEstimator", "Predictions"]

CONTINUOUS_ENCODINGS = ("auto", None, "piecewise_linear", "plr", "plr_lite")
# Rows a prediction preprocesses at once: the whole frame's codes and inputs at once were
# ~100 bytes a row of fresh memory in every call.
PREDICTION_ROWS = 1 << 18
# The pretraining's random stream, apart from the members' (0, 1, ...).
PRETRAINING_STREAM = 1 << 16

MLP_PARAMETERS_DOC = """\
cat_names, cont_names, date_names : list of str, optional
    Column roles; inferred when ``None`` (see TabularPreprocessor).
hidden : tuple of int
    Hidden layer widths.
dropout, embedding_dropout : float
    Dropout after hidden layers and on the embeddings.
min_frequency : int or float, optional
    Rare categories fold into the unknown token.
continuous_scaling : {"auto", "standard", "robust", "quantile", None}
    How continuous columns are scaled (see TabularPreprocessor). ``"auto"``:
    ``"robust"`` (median and interquartile range, then a smooth clip) below
    10,000 rows, ``"standard"`` from there.
continuous_encoding : {"auto", "plr", "plr_lite", "piecewise_linear", None}, PLR or \
PiecewiseLinear
    How continuous columns enter the network. ``PLR(n_frequencies=32,
    d_embedding=24, frequency_init_scale="auto")`` (``"plr"``): periodic
    embeddings, then a linear layer and a ReLU per column (Gorishniy et al.,
    2022); ``frequency_init_scale`` is the one sensitive knob ("auto": 0.3
    below 10,000 rows, 3 from there; search ``[0.3, 1, 3, 10]`` when a fit is
    cheap). ``"plr_lite"``: ``PLR(lite=True)``, one linear layer shared by all
    columns. ``PiecewiseLinear(n_bins=48)`` (``"piecewise_linear"``): each
    column over quantile bins. None: the scaled numbers through batch norm.
    ``"auto"`` is ``"plr"`` (:mod:`tabembed.defaults` says why).
n_members : int or "auto"
    k > 1 trains k members in one network (TabM-mini: shared embeddings and
    body, a scaling adapter and a head per member) and predicts the mean of
    their outputs. ``"auto"``: 8 below 10,000 rows, 1 from there.
augmentation : None, "swap_noise", "mixup", SwapNoise, Mixup or a list of them
    Training-only input noise (:mod:`tabembed.augmentation`).
    ``SwapNoise(rate=0.15)`` (``"swap_noise"``): each cell is replaced, with
    probability ``rate``, by the same column's value in another row of the
    batch. ``Mixup(alpha=0.2)`` (``"mixup"``): mixup of the encoded inputs with
    ``Beta(alpha, alpha)`` weights. ``[SwapNoise(0.1), Mixup(0.4)]``: both.
    Replaces ``swap_noise=`` and ``mixup_alpha=`` (retired: they still work,
    with a FutureWarning, for one release).
warm_start : bool
    Further ``fit`` calls continue training the fitted network for ``epochs``
    more epochs, at the learning rate the last fit used when ``lr`` names an
    LR-finder suggestion (the finder does not run on a trained model)."""

MLP_CONSTRAINTS = {
    **LOOP_CONSTRAINTS,
    "cat_names": [COLUMN_NAMES, NONE], "cont_names": [COLUMN_NAMES, NONE],
    "date_names": [COLUMN_NAMES, NONE],
    "hidden": [WIDTHS],
    "dropout": [FRACTION], "embedding_dropout": [FRACTION],
    "min_frequency": [Interval(Integral, 0, None), Interval(Real, 0, 1, closed="neither"),
                      NONE],
    "continuous_scaling": [Options(("auto", "standard", "robust", "quantile", None))],
    "continuous_encoding": [Options(CONTINUOUS_ENCODINGS),
                            InstanceOf((PLR, PiecewiseLinear), "a PLR or PiecewiseLinear")],
    "n_members": [POSITIVE_INT, Options(("auto",))],
    "augmentation": [Satisfies(is_augmentation, "None, 'swap_noise', 'mixup', "
                               "SwapNoise(rate=...), Mixup(alpha=...) or a list of them")],
    "label_smoothing": [FRACTION],
    "warm_start": [BOOLEAN],
}


@dataclass(frozen=True)
class Predictions:
    """The network's output as predictions of ``task`` (the Learner's output activation).

    Probabilities are clamped to [1e-12, 1 - 1e-12]: a saturated sigmoid or
    softmax would otherwise give exactly 0 or 1 and infinite log losses.
    """

    task: str

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        predictions = predictions_from_output(output.double(), self.task)
        if self.task == "regression":
            return predictions
        return predictions.clamp(1e-12, 1 - 1e-12)


@dataclass
class TabularData:
    """What an MLP fit trains on: the fitted encoders and the rows, from any source."""

    preprocessor: TabularPreprocessor
    target: TargetTransformer
    rows: MemoryRows | StreamRows
    bounds: tuple[float, float] | None      # the regression targets' range (y_range="auto")
    feature_names: np.ndarray | None        # None when X did not name its columns
    n_features: int
    n_rows: int                             # rows given to fit, which pick the size defaults
    y_values: object = None                 # the target as given (in-memory fits)


class MLPEstimator(cross_fit.CrossFitting, TrainedEstimator):
    """The fit and prediction of :class:`EmbeddingMLPClassifier` and
    :class:`EmbeddingMLPRegressor` (which hold the parameters)."""

    _parameter_constraints: ClassVar[dict] = MLP_CONSTRAINTS
    _model_classes: ClassVar[tuple] = (EntityEmbeddingMLP,)
    _docstring_parts: ClassVar[dict] = {"mlp_parameters": MLP_PARAMETERS_DOC,
                                        "cross_fit_parameters":
                                            cross_fit.CROSS_FIT_PARAMETERS_DOC}

    def _target_transformer(self) -> TargetTransformer:
        raise NotImplementedError

    def _class_factors(self, y_values, target):
        """Per-row factors of ``class_weight`` (the classifier's), or None."""
        return None

    def _y_range(self, target, bounds):
        return None

    def _predictions_of(self, outputs: np.ndarray, target: TargetTransformer) -> np.ndarray:
        """The network's activated outputs as ``predict_proba`` or ``predict`` gives them."""
        raise NotImplementedError

    def _oof_score(self, y_values, predictions: np.ndarray, rows: np.ndarray,
                   target: TargetTransformer) -> float:
        """``oof_score_``: the score of out-of-fold ``predictions`` on ``rows`` (a mask)."""
        raise NotImplementedError

    # ------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None, *, eval_set=None, callbacks=None,
            X_unlabeled=None):
        """Fit the preprocessor, the target encoding and the network on ``(X, y)``.

        Parameters
        ----------
        X : DataFrame, pyarrow Table, 2-D array, or Parquet to stream
            A Parquet file, folder, URI, list of files or
            ``pyarrow.dataset.Dataset`` is read in record batches, never whole:
            ``fit("data/", y="target")``.
        y : array-like, or str with Parquet
            The target; with Parquet, the name of its column.
        sample_weight : array-like of shape (n_samples,), optional
            Per-row weights of the training loss and of the validation loss and metrics.
        eval_set : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Validation data scored after every epoch (loss and metrics in
            ``history_``), and the data early stopping watches instead of a
            random ``validation_fraction`` of ``X``.
        callbacks : list of Callback, optional
            :class:`~tabembed.training.callbacks.Callback` objects run in this fit's
            training loop after the estimator's own (averaging, early stopping): each
            epoch's record (losses, validation metrics) is ``learner.history.records[-1]``
            at ``on_epoch_end``. They may also implement ``on_estimator_fit_begin(estimator)``
            and ``on_estimator_fit_end(estimator, error)``. For example
            :class:`tabembed.tuning.OptunaPruning` and :class:`tabembed.mlflow.MLflowLogger`.
            The fitted estimator keeps no reference to them.
        X_unlabeled : DataFrame or array, optional
            Rows of the same columns without a target (for example the rows to
            predict, as Kaggle users have them). The network's embeddings and body
            are first pretrained on the features of ``X`` and ``X_unlabeled`` to
            denoise swap-noised rows (:func:`tabembed.pretraining.pretrain`,
            ``epochs`` epochs), then trained on ``(X, y)`` as usual. The
            preprocessor is fitted on ``X`` alone, so the model encodes its inputs
            as it would without them; categories seen only in ``X_unlabeled``
            share the unknown category's embedding.
        """
        with fit_events(self, callbacks) as callbacks:
            return self._fit(X, y, sample_weight=sample_weight, eval_set=eval_set,
                             callbacks=callbacks, X_unlabeled=X_unlabeled)

    def _partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on ``(X, y)``: the first call fits the encoders (on ``classes`` if
        given, else on this batch's labels); later calls continue at a tenth of the
        first call's learning rate."""
        return self._fit(X, y, classes=classes, sample_weight=sample_weight, incremental=True)

    def _fit(self, X, y, *, sample_weight=None, eval_set=None, classes=None,
             incremental=False, callbacks=(), X_unlabeled=None):
        seed = self._begin_fit()
        cross_fit.check_supported(self, X, eval_set=eval_set, incremental=incremental)
        if X_unlabeled is not None and (is_stream(X) or incremental or self.warm_start):
            raise ValueError("X_unlabeled (pretraining) needs a fresh fit on a DataFrame: not "
                             "with a Parquet stream, partial_fit or warm_start")
        if (incremental or self.warm_start) and hasattr(self, "learner_") and not is_stream(X):
            return self._continue(X, y, seed, sample_weight=sample_weight, eval_set=eval_set,
                                  incremental=incremental, callbacks=callbacks)
        seeds = Seeds.from_seed(seed)
        if is_stream(X):
            if sample_weight is not None or eval_set is not None or incremental \
                    or self.warm_start:
                raise ValueError("sample_weight, eval_set, partial_fit and warm_start need a "
                                 "DataFrame; a Parquet stream takes the target column's "
                                 "name only")
            data = self._stream_data(X, y, seeds)
        else:
            data = self._frame_data(X, y, seeds, sample_weight=sample_weight,
                                    eval_set=eval_set, classes=classes)
        deadline = Deadline(self.time_limit)
        initial_state = None
        if X_unlabeled is not None:
            initial_state = self._pretrained_state(data, X_unlabeled, seed)
        if self.n_folds is not None:
            self._adopt(self._fit_members(data, seed, callbacks, initial_state=initial_state,
                                          deadline=deadline))
            return self
        config = self._training_config(
            seed, {"batch_size": defaults.auto_batch_size(data.rows.n_train_rows)})
        if incremental:
            config = config.replace(epochs=1)
        stopper = StopAtDeadline(deadline)
        fitted = self._train_new(data, config, [*callbacks, stopper],
                                 initial_state=initial_state)
        self._adopt({**fitted, **cross_fit.NOT_CROSS_FITTED,
                     "time_limit_reached_": stopper.stopped})
        return self

    def _pretrained_state(self, data: TabularData, X_unlabeled, seed: int) -> dict:
        """The network's initial weights after denoising pretraining on the features of the
        training rows and of ``X_unlabeled`` (:func:`tabembed.pretraining.pretrain`)."""
        from tabembed.pretraining import pretrain

        frame = as_frame(X_unlabeled, data.preprocessor.feature_names_in_)
        check_rows(frame)
        codes, continuous = data.preprocessor.to_tensors(frame)
        labelled = data.rows.tensors
        codes = torch.cat([labelled[0], codes])
        continuous = torch.cat([labelled[1], continuous])
        model_kwargs = self._model_kwargs(data.preprocessor, data.target, data.n_rows,
                                          data.bounds)
        seeds = Seeds.from_seed(cross_fit.member_seed(seed, PRETRAINING_STREAM))
        with isolated_random_state():
            torch.manual_seed(seeds.init)
            model = EntityEmbeddingMLP(**model_kwargs)
            pretrain(model, codes, continuous, epochs=self.epochs,
                     batch_size=defaults.auto_batch_size(len(codes)),
                     random_state=seeds.shuffle)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _frame_data(self, X, y, seeds: Seeds, *, sample_weight, eval_set, classes
                    ) -> TabularData:
        """Encoders fitted on a DataFrame (or array, or Arrow table) and its rows in memory."""
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        y_values = self._check_target(y, len(frame))
        preprocessor = self._preprocessor(len(frame)).fit(frame)
        # partial_fit may name every class up front, before a batch shows them all.
        if classes is not None and np.ndim(y_values) == 1:
            missing = np.setdiff1d(distinct_labels(np.asarray(y_values)), np.asarray(classes))
            if len(missing):
                raise ValueError(f"y holds labels {missing[:5].tolist()} that classes="
                                 f"{np.asarray(classes).tolist()} does not list; classes must "
                                 "name every label partial_fit will see")
        target = self._target_transformer().fit(
            y_values if classes is None else np.asarray(classes))
        weights = self._row_weights(sample_weight, y_values, target, len(frame))
        tensors = _tensors(preprocessor, target, frame, y_values)
        if eval_set is not None:
            rows = MemoryRows(tensors, np.arange(len(frame)), weights=weights,
                              valid=self._eval_data(eval_set, preprocessor, target))
        else:
            fraction = self.validation_fraction if self.early_stopping else None
            train_rows, valid_rows = validation_split(len(frame), y_values, target.task_,
                                                      seeds.split, fraction=fraction)
            rows = MemoryRows(tensors, train_rows, valid_rows, weights=weights)
        bounds = _bounds(y_values) if target.task_ == "regression" else None
        names = preprocessor.feature_names_in_ if has_feature_names(X) else None
        return TabularData(preprocessor, target, rows, bounds, names, frame.shape[1],
                           len(frame), y_values)

    def _stream_data(self, source, y, seeds: Seeds) -> TabularData:
        """Encoders fitted by streaming Parquet (on rank 0, then shared) and its row groups.

        The validation rows (``early_stopping``) are held out by a hash of their
        position; each process reads its own row groups.
        """
        from tabembed.streaming import (
            RowGroups,
            TableTransform,
            ValidationSplit,
            column_bounds,
            fit_preprocessor,
            fit_target,
            open_dataset,
        )

        if not isinstance(y, str):
            raise TypeError(f"to fit from {type(source).__name__} data, name its target column: "
                            f"fit(source, y='column'); got y of type {type(y).__name__}")
        fitted = None
        row_groups = RowGroups(open_dataset(source))
        if distributed.is_main_process():
            preprocessor = fit_preprocessor(source, self._preprocessor(row_groups.n_rows),
                                            exclude=[y])
            template = self._target_transformer()
            target = fit_target(source, y, task=template.task, scale=template.scale)
            fitted = (preprocessor.to_dict(), target.to_dict(), column_bounds(source, y)
                      if target.task_ == "regression" else None)
        preprocessor_state, target_state, bounds = distributed.broadcast_object(fitted)
        preprocessor = TabularPreprocessor.from_dict(preprocessor_state)
        target = TargetTransformer.from_dict(target_state)
        split = ValidationSplit(self.validation_fraction, seed=seeds.split) \
            if self.early_stopping else None
        rows = StreamRows(row_groups, TableTransform(preprocessor, y, target), split)
        names = preprocessor.feature_names_in_
        return TabularData(preprocessor, target, rows, bounds, names, len(names),
                           row_groups.n_rows)

    def _train_new(self, data: TabularData, config, callbacks=(), *, initial_state=None
                   ) -> dict:
        """A fresh network trained on ``data``: the fitted attributes it gives.
        ``initial_state``: the network's weights before training (pretrained)."""
        train_data, valid = data.rows.sources(config.batch_size, seed=config.seeds.shuffle)
        model_kwargs = self._model_kwargs(data.preprocessor, data.target, data.n_rows,
                                          data.bounds)
        task = data.target.task_
        with isolated_random_state():
            torch.manual_seed(config.seeds.init)
            model = EntityEmbeddingMLP(**model_kwargs)
            if initial_state is not None:
                model.load_state_dict(initial_state)
            result = train(config, model, self._loss(task, model), train_data, valid,
                           output_activation=Predictions(task), metrics=_metrics(data.target),
                           callbacks=callbacks)
        fitted = {
            "preprocessor_": data.preprocessor, "target_transformer_": data.target,
            "model_": model, "model_kwargs_": model_kwargs,
            "n_features_in_": data.n_features, "n_train_rows_": data.rows.n_train_rows,
            "feature_names_in_": data.feature_names if data.feature_names is not None
            else ABSENT,
            **self._result_state(config, result),
        }
        if task != "regression" and hasattr(self, "predict_proba"):
            fitted["classes_"] = data.target.classes_
        return fitted

    def _continue(self, X, y, seed: int, *, sample_weight, eval_set, incremental: bool,
                  callbacks=()):
        """Train the fitted network on more data with the fitted encoders.

        ``warm_start``: ``epochs`` more epochs as the parameters say.
        ``incremental``: one epoch at a tenth of the last fit's rate, constant.
        """
        frame = frame_for_prediction(self, X)
        if len(frame) < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                  for m in self.learner_.model.modules()):
            raise ValueError(f"X has {len(frame)} row(s); the network's batch norm needs a "
                             "minimum of 2 rows to train (pass at least two rows at once)")
        y_values = self._check_target(y, len(frame))
        target = self.target_transformer_
        if target.task_ == "regression" and target.scale == "standard":
            _warn_if_rescaled(np.asarray(y_values, dtype=np.float64), target)
        weights = self._row_weights(sample_weight, y_values, target, len(frame))
        tensors = _tensors(self.preprocessor_, target, frame, y_values)
        if incremental:
            lr = self.lr_
            lr = tuple(r / 10 for r in lr) if isinstance(lr, tuple | list) else lr / 10
            config = self.training_config_.replace(epochs=1, lr=lr, lr_finder=None,
                                                   schedule=Constant())
        else:
            config = self._training_config(seed, {"batch_size": self.training_config_.batch_size})
            if config.lr_finder is not None:
                # On a trained model the finder's sweep starts at the loss minimum, and its
                # noise diverges within a few steps: continue at the rate the model has.
                config = config.replace(lr=self.lr_, lr_finder=None)
        train_data = row_batches(tensors, np.arange(len(frame)), weights,
                                 batch_size=config.batch_size, shuffle=True)
        learner = self.learner_
        stopper = StopAtDeadline(Deadline(self.time_limit))
        with rollback_on_failure(learner), isolated_random_state():
            if eval_set is not None:
                learner.valid_data = self._eval_data(eval_set, self.preprocessor_, target)
            result = train(config, self.model_, self._loss(self.task_, self.model_),
                           train_data, learner=learner, callbacks=[*callbacks, stopper])
        self._adopt({"n_train_rows_": len(frame), **self._result_state(config, result),
                     "time_limit_reached_": stopper.stopped})
        return self

    def _preprocessor(self, n_rows: int) -> TabularPreprocessor:
        scaling = self.continuous_scaling
        if scaling == "auto":
            scaling = defaults.continuous_scaling(n_rows)
        return TabularPreprocessor(
            self.cat_names, self.cont_names, self.date_names, min_frequency=self.min_frequency,
            continuous_scaling=scaling)

    def _row_weights(self, sample_weight, y_values, target, n_rows: int):
        """Per-row weights from ``sample_weight`` (and the classifier's ``class_weight``);
        None when every row weighs the same, which changes nothing."""
        weights = None if sample_weight is None else check_sample_weight(sample_weight, n_rows)
        factors = self._class_factors(y_values, target)
        if factors is not None:
            weights = factors if weights is None else weights * factors
        if weights is None or np.all(weights == weights[0]):
            return None
        return weights

    def _eval_data(self, eval_set, preprocessor, target):
        """Validation batches from ``(X_val, y_val[, sample_weight_val])``."""
        if isinstance(eval_set, list) and len(eval_set) == 1:
            eval_set = eval_set[0]     # LightGBM's form: a list of one (X, y) pair
        if not (isinstance(eval_set, tuple | list) and len(eval_set) in (2, 3)):
            raise ValueError("eval_set must be (X_val, y_val) or (X_val, y_val, "
                             f"sample_weight_val), got {type(eval_set).__name__}")
        X_val, y_val, *weight = eval_set
        frame = as_frame(X_val, preprocessor.feature_names_in_)
        check_rows(frame)
        y_values = self._check_target(y_val, len(frame))
        weights = check_sample_weight(weight[0], len(frame)) if weight else None
        tensors = _tensors(preprocessor, target, frame, y_values)
        return row_batches(tensors, np.arange(len(frame)), weights,
                           batch_size=EVALUATION_BATCH_SIZE)

    def _check_target(self, y, n_rows: int) -> np.ndarray:
        require_target(self, y)
        if not isinstance(y, pd.DataFrame | pd.Series | list | np.ndarray):
            y = np.asarray(y)
        if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
            y = y.iloc[:, 0]
        values = y if isinstance(y, pd.DataFrame) else np.asarray(y)
        if len(values) != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {len(values)}; they must match")
        if not isinstance(values, pd.DataFrame) and values.ndim == 2 and values.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                          "flattened to (n_samples,)", DataConversionWarning, stacklevel=4)
            values = values.ravel()
        return values

    @property
    def task_(self) -> str:
        return self.target_transformer_.task_

    def _loss(self, task: str, model: EntityEmbeddingMLP):
        """The task's loss (with label smoothing), mixed as the model mixes its inputs."""
        loss = loss_for_task(task, label_smoothing=self.label_smoothing)
        return MixupLoss(loss, model.mixup) if self._augmentation_rates()["mixup_alpha"] \
            else loss

    def _augmentation_rates(self) -> dict:
        """``augmentation`` as the network's ``swap_noise`` and ``mixup_alpha``."""
        return augmentation_rates(self.augmentation)

    def _encoding(self) -> PLR | PiecewiseLinear | None:
        """``continuous_encoding`` as an object (names resolved)."""
        encoding = self.continuous_encoding
        if isinstance(encoding, PLR | PiecewiseLinear) or encoding is None:
            return encoding
        if encoding == "auto":
            encoding = defaults.CONTINUOUS_ENCODING
        return {"plr": PLR(), "plr_lite": PLR(lite=True),
                "piecewise_linear": PiecewiseLinear()}[encoding]

    def _model_kwargs(self, preprocessor, target, n_rows: int, bounds) -> dict:
        """The network's arguments; ``n_rows`` (rows given to fit) resolves the "auto"
        sizes."""
        encoding = self._encoding()
        numeric = {}
        if isinstance(encoding, PiecewiseLinear) and preprocessor.cont_columns_:
            numeric = {"continuous_bins": preprocessor.bin_edges(encoding.n_bins)}
        elif isinstance(encoding, PLR):
            scale = encoding.frequency_init_scale
            if scale == "auto":
                scale = defaults.frequency_init_scale(n_rows)
            numeric = {"continuous_embedding": "plr_lite" if encoding.lite else "plr",
                       "d_embedding": encoding.d_embedding,
                       "n_frequencies": encoding.n_frequencies, "frequency_init_scale": scale}
        return dict(
            **numeric,
            embedding_sizes=list(preprocessor.embedding_sizes_.values()),
            n_continuous=len(preprocessor.cont_columns_),
            d_out=target.n_outputs_, task=target.task_,
            hidden=tuple(self.hidden), dropout=self.dropout,
            embedding_dropout=self.embedding_dropout, y_range=self._y_range(target, bounds),
            n_members=(defaults.n_members(n_rows) if self.n_members == "auto"
                       else self.n_members),
            **self._augmentation_rates(),
        )

    # ------------------------------------------------------------ saving and loading

    def _extra_state(self, meta: dict, tensors: dict) -> None:
        meta["preprocessor"] = self.preprocessor_.to_dict()
        meta["target"] = self.target_transformer_.to_dict()
        meta["time_limit_reached"] = bool(getattr(self, "time_limit_reached_", False))
        self._save_members(meta, tensors)

    def _restore_extra(self, meta: dict, tensors: dict, *, snapshots, device) -> None:
        from tabembed import persistence

        preprocessor = TabularPreprocessor.from_dict(meta["preprocessor"])
        target = TargetTransformer.from_dict(meta["target"])
        kwargs, task = self.model_kwargs_, target.task_
        # The file's parts must agree, or predict would index past a table.
        preprocessor.check_model_inputs([n for n, _ in kwargs["embedding_sizes"]],
                                        kwargs["n_continuous"])
        if (kwargs.get("task"), kwargs.get("d_out")) != (task, target.n_outputs_):
            raise persistence.DamagedFileError("the network's output does not fit the target")
        self._adopt({"preprocessor_": preprocessor, "target_transformer_": target})
        self._adopt({
            "learner_": self._member_learner(self.model_, snapshots, device),
            "time_limit_reached_": bool(meta.get("time_limit_reached", False)),
        })
        if task != "regression" and hasattr(self, "predict_proba"):
            self.classes_ = target.classes_
        self._restore_members(meta, tensors, device=device)

    def _member_learner(self, model, snapshots, device):
        """A loaded network behind a Learner that predicts (with its snapshots)."""
        task = self.target_transformer_.task_
        return inference_learner(model, loss_for_task(task), output_activation=Predictions(task),
                                 device=device, snapshots=snapshots)

    def _default_batch_size(self) -> int:
        return defaults.auto_batch_size(self.n_train_rows_ or 0)

    # ------------------------------------------------------------ predicting

    def _predict_raw(self, X) -> np.ndarray:
        check_is_fitted(self, "learner_")
        frame = frame_for_prediction(self, X)
        learners = self._prediction_learners()
        # In slices (bounded fresh memory), column-major as the preprocessor fills them:
        # the network reads either layout, and a copy into row-major costs time.
        parts = []
        for start in range(0, len(frame), PREDICTION_ROWS):
            part = frame if len(frame) <= PREDICTION_ROWS else \
                frame.iloc[start:start + PREDICTION_ROWS]
            try:
                tensors = self.preprocessor_.to_tensors(part, order="F")
            except ValueError:
                if part is not frame:
                    self.preprocessor_.to_tensors(frame)    # the error, with the frame's rows
                raise
            parts.append(_mean([learner.predict(tensors).numpy() for learner in learners]))
        outputs = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return check_finite_predictions(outputs, lambda row: self.preprocessor_.describe_extreme(
            self.preprocessor_.to_tensors(frame.iloc[[row]])[1].numpy(), 0))

    def _prediction_learners(self) -> list:
        """The learners whose predictions are averaged: the cross-fit members', or one."""
        if hasattr(self, "members_"):
            return [member._prediction_learner() for member in self.members_]
        return [self._prediction_learner()]

    def _prediction_learner(self):
        """The learner, its network given the few-valued continuous inputs' training values
        (once; they make predictions cheaper, never different)."""
        model = self.learner_.model
        if getattr(model, "continuous_values", ()) is None:
            model.set_continuous_values(self.preprocessor_.continuous_values())
        return self.learner_

    def predict_to_parquet(self, source, destination, *, keep_columns=(), progress=None):
        """Predict every row of a Parquet dataset into a Parquet file, in bounded memory.

        Parameters
        ----------
        source : path, folder, URI, list of paths or pyarrow.dataset.Dataset
        destination : path
            The file written (atomically). Under torchrun, a folder where each
            process writes ``part-<rank>-of-<world_size>.parquet``.
        keep_columns : sequence of str
            Input columns copied beside the predictions (ids, the target).
        progress : bool, optional
            A progress bar of rows (default: in terminals and notebooks, rank 0).

        Returns
        -------
        Path
            The file this process wrote. Columns: ``prediction`` (the label or
            value), and for classifiers ``probability_<class>`` per class.
        """
        from tabembed.streaming import predict_to_parquet

        check_is_fitted(self, "learner_")
        learners = self._prediction_learners()

        def predict_batch(codes, continuous):
            values = check_finite_predictions(_mean([learner.predict((codes, continuous)).numpy()
                                                     for learner in learners]))
            return self._prediction_columns(values)

        shard = distributed.is_distributed()
        return predict_to_parquet(source, destination, predict_batch, self.preprocessor_,
                                  keep_columns=keep_columns,
                                  rank=distributed.get_rank() if shard else None,
                                  world_size=distributed.get_world_size() if shard else None,
                                  progress=progress, order="F")

    def _prediction_columns(self, outputs: np.ndarray) -> dict:
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


def _mean(outputs: list[np.ndarray]) -> np.ndarray:
    """The members' mean output (one member's unchanged)."""
    return outputs[0] if len(outputs) == 1 else np.mean(outputs, axis=0)


def _tensors(preprocessor, target, frame, y_values) -> tuple[torch.Tensor, ...]:
    codes, continuous = preprocessor.to_tensors(frame)
    encoded = target.transform(y_values)
    dtype = torch.int64 if target.task_ == "multiclass" else torch.float32
    return codes, continuous, torch.as_tensor(encoded, dtype=dtype)


# How far the target of a continued fit may drift from the first fit's scaling unwarned:
# beyond it the kept standardisation puts the new targets far outside the network's range.
RESCALE_WARNING_FACTOR = 10.0


def _warn_if_rescaled(values: np.ndarray, target: TargetTransformer) -> None:
    """A continued fit keeps the first fit's target scaling: warn when the new targets'
    mean or spread is far from it."""
    mean, std = float(values.mean()), float(values.std())
    shift = abs(mean - target.mean_) / target.std_
    ratio = std / target.std_ if std > 0 else 1.0
    if shift > RESCALE_WARNING_FACTOR or not 1 / RESCALE_WARNING_FACTOR < ratio \
            < RESCALE_WARNING_FACTOR:
        warnings.warn(
            f"the target's scale changed since the first fit (mean {target.mean_:.4g} -> "
            f"{mean:.4g}, std {target.std_:.4g} -> {std:.4g}); a continued fit keeps the first "
            "fit's scaling, which fits these targets badly: refit without warm_start",
            UserWarning, stacklevel=4)


def _bounds(values) -> tuple[float, float]:
    """The smallest and largest regression target (``y_range="auto"``)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.min()), float(values.max())


def _metrics(target: TargetTransformer) -> dict:
    """The per-epoch validation metrics of the target's task, in its own units."""
    decode = target.inverse_transform if target.task_ == "regression" else None
    return task_metrics(target.task_, Predictions(target.task_), decode)
