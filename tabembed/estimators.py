"""scikit-learn estimators over the entity-embedding MLP.

``EmbeddingMLPClassifier`` and ``EmbeddingMLPRegressor`` take a DataFrame and
return predictions; ``EntityEmbeddingTransformer`` turns categorical columns
into their learned embedding vectors for any other model. They are thin: a
:class:`~tabembed.preprocessing.TabularPreprocessor`, a
:class:`~tabembed.targets.TargetTransformer`, an
:class:`~tabembed.models.EntityEmbeddingMLP`, and one training run
(:func:`tabembed.config.train` with a :class:`~tabembed.config.TrainingConfig`).

Defaults were chosen on a validation split of Adult's training file (never
the test file): see tabembed/config.py, bench/RESULTS.md ("Defaults") and
bench/NOTES.md. The defaults that moved accuracy are how continuous columns
enter the network: piecewise-linear encoding in the first release (+0.4 points
of validation accuracy), periodic (PLR) embeddings in the second (+1.0 point
on Adult's test set); dropout, weight decay, batch size, epochs and averaging
all landed within +-0.1 point of each other.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted

from tabembed import persistence
from tabembed._validation import (
    as_frame,
    check_finite_predictions,
    check_rows,
    check_sample_weight,
    frame_for_prediction,
    has_feature_names,
    require_target,
    store_parameters,
)
from tabembed.config import (
    EVALUATION_BATCH_SIZE,
    MLP_DEFAULTS,
    Seeds,
    TrainingConfig,
    auto_batch_size,
    decode_lr,
    draw_seed,
    encode_lr,
    inference_learner,
    isolated_random_state,
    row_batches,
    train,
)
from tabembed.metrics import task_metrics
from tabembed.models import (
    EntityEmbeddingMLP,
    MixupLoss,
    loss_for_task,
    predictions_from_output,
)
from tabembed.models.tabular import DEFAULT_DROPOUT, DEFAULT_EMBEDDING_DROPOUT, DEFAULT_HIDDEN
from tabembed.preprocessing import TabularPreprocessor
from tabembed.targets import TargetTransformer, distinct_labels, is_label_sets
from tabembed.training import checkpoint, distributed
from tabembed.training.schedules import Constant

__all__ = ["EmbeddingMLPClassifier", "EmbeddingMLPRegressor", "EntityEmbeddingTransformer"]

CONTINUOUS_ENCODINGS = ("auto", None, "piecewise_linear", "plr", "plr_lite")
# frequency_init_scale="auto": 1 below this many training rows, 3 from there. The
# scale is data dependent; measured in bench/NOTES.md ("Accuracy options").
PLR_LARGE_SCALE_MIN_ROWS = 10_000
_D = MLP_DEFAULTS


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


@contextlib.contextmanager
def rollback_on_failure(learner):
    """Continue training ``learner``; if anything raises, put its fitted state back."""
    saved = checkpoint.capture(learner)
    predictor, train_data, active = learner.predictor, learner.train_data, learner.active_callbacks
    try:
        yield
    except BaseException:
        checkpoint.restore(learner, saved)
        learner.active_callbacks = active
        checkpoint.restore_callbacks(learner, saved)
        learner.predictor, learner.train_data = predictor, train_data
        learner.steps_per_epoch = len(train_data)
        raise


class _EmbeddingMLP(BaseEstimator):
    """Parameters and the fit/predict plumbing shared by the classifier and the regressor."""

    def __init__(
        self,
        *,
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=DEFAULT_HIDDEN,
        dropout=DEFAULT_DROPOUT,
        embedding_dropout=DEFAULT_EMBEDDING_DROPOUT,
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        cycle_len=_D.cycle_len,
        cycle_mult=_D.cycle_mult,
        averaging=_D.averaging,
        ema_decay=_D.ema_decay,
        swa_start=_D.swa_start,
        swa_lr=_D.swa_lr,
        weight_decay=_D.weight_decay,
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_bins=48,
        d_embedding=24,
        n_frequencies=32,
        frequency_init_scale="auto",
        n_members=1,
        swap_noise=0.0,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        store_parameters(self, locals())

    # ------------------------------------------------------------ fitting

    def _target_transformer(self) -> TargetTransformer:
        raise NotImplementedError

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Fit the preprocessor, the target encoding and the network on ``(X, y)``.

        Parameters
        ----------
        X : DataFrame, pyarrow Table or 2-D array
        y : array-like
        sample_weight : array-like of shape (n_samples,), optional
            Per-row weights of the training loss and of the validation loss and metrics.
        eval_set : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Validation data scored after every epoch (loss and metrics in
            ``history_``), and the data early stopping watches instead of a
            random ``validation_fraction`` of ``X``.
        """
        return self._fit(X, y, sample_weight=sample_weight, eval_set=eval_set)

    def _fit(self, X, y, *, sample_weight=None, eval_set=None, classes=None,
             incremental=False):
        """Build everything, train, and only then replace the fitted state.

        ``incremental`` (``partial_fit``): one epoch; later calls continue at a
        tenth of the first call's rate. A fit that raises leaves the previous
        fitted state as it was.
        """
        if is_stream(X):
            return self._fit_stream(X, y, sample_weight=sample_weight, eval_set=eval_set,
                                    incremental=incremental)
        if (incremental or self.warm_start) and hasattr(self, "learner_"):
            return self._continue(X, y, sample_weight=sample_weight, eval_set=eval_set,
                                  incremental=incremental)
        self._check_encoding()
        seed = draw_seed(self.random_state)
        seeds = Seeds.from_seed(seed)
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        y_values = self._check_target(y, len(frame))
        preprocessor = TabularPreprocessor(
            self.cat_names, self.cont_names, self.date_names, min_frequency=self.min_frequency,
            continuous_scaling=self.continuous_scaling,
        ).fit(frame)
        # partial_fit may name every class up front, before a batch shows them all.
        target = self._target_transformer().fit(
            y_values if classes is None else np.asarray(classes))
        weights = self._row_weights(sample_weight, y_values, target, len(frame))
        if eval_set is None:
            train_rows, valid_rows = self._split(len(frame), y_values, target.task_, seeds.split)
        else:
            train_rows, valid_rows = np.arange(len(frame)), None
        config = TrainingConfig.from_params(
            self.get_params(), seed=seed, auto={"batch_size": auto_batch_size(len(train_rows))})
        if incremental:
            config = config.replace(epochs=1)
        tensors = _tensors(preprocessor, target, frame, y_values)
        train_data = row_batches(tensors, train_rows, weights, batch_size=config.batch_size,
                              shuffle=True)
        if eval_set is not None:
            valid = self._eval_data(eval_set, preprocessor, target)
        elif valid_rows is not None:
            valid = row_batches(tensors, valid_rows, weights, batch_size=EVALUATION_BATCH_SIZE)
        else:
            valid = None
        model_kwargs = self._model_kwargs(preprocessor, target, len(train_rows),
                                          _bounds(y_values) if target.task_ == "regression"
                                          else None)
        with isolated_random_state():
            torch.manual_seed(seeds.init)
            model = EntityEmbeddingMLP(**model_kwargs)
            result = train(config, model, self._loss(target.task_, model), train_data, valid,
                           output_activation=Predictions(target.task_),
                           metrics=_metrics(target))
        self.preprocessor_, self.target_transformer_ = preprocessor, target
        self.model_, self.model_kwargs_ = model, model_kwargs
        self.n_features_in_ = frame.shape[1]
        if has_feature_names(X):
            self.feature_names_in_ = preprocessor.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_train_rows_ = len(train_rows)
        self._set_result(config, result)
        return self

    def _fit_stream(self, source, y, *, sample_weight, eval_set, incremental):
        """Fit from Parquet (a path, folder, URI or pyarrow Dataset) without reading it whole.

        The preprocessor and the target encoding are fitted by streaming on rank
        0 and shared; the validation rows (``early_stopping``) are held out by a
        hash of their position; each process reads its own row groups.
        """
        from tabembed.streaming import (
            ParquetBatches,
            Part,
            RowGroups,
            TableTransform,
            ValidationSplit,
            fit_preprocessor,
            fit_target,
            open_dataset,
            train_valid_sources,
        )

        if not isinstance(y, str):
            raise TypeError(f"to fit from {type(source).__name__} data, name its target column: "
                            f"fit(source, y='column'); got y of type {type(y).__name__}")
        if sample_weight is not None or eval_set is not None or incremental or self.warm_start:
            raise ValueError("sample_weight, eval_set, partial_fit and warm_start need a "
                             "DataFrame; a Parquet stream takes the target column's name only")
        self._check_encoding()
        seed = draw_seed(self.random_state)
        seeds = Seeds.from_seed(seed)
        fitted = None
        if distributed.is_main_process():
            preprocessor = fit_preprocessor(source, TabularPreprocessor(
                self.cat_names, self.cont_names, self.date_names,
                min_frequency=self.min_frequency, continuous_scaling=self.continuous_scaling,
            ), exclude=[y])
            template = self._target_transformer()
            target = fit_target(source, y, task=template.task, scale=template.scale)
            fitted = (preprocessor.to_dict(), target.to_dict(), _column_bounds(source, y)
                      if target.task_ == "regression" else None)
        preprocessor_state, target_state, bounds = distributed.broadcast_object(fitted)
        preprocessor = TabularPreprocessor.from_dict(preprocessor_state)
        target = TargetTransformer.from_dict(target_state)
        transform = TableTransform(preprocessor, y, target)
        rank, world_size = distributed.get_rank(), distributed.get_world_size()
        rows = RowGroups(open_dataset(source))
        split = ValidationSplit(self.validation_fraction, seed=seeds.split) \
            if self.early_stopping else None
        n_train = Part(rows, split, "train").n_rows
        config = TrainingConfig.from_params(
            self.get_params(), seed=seed, auto={"batch_size": auto_batch_size(n_train)})
        per_process = max(1, -(-config.batch_size // world_size))
        if split is not None:
            train_data, valid = train_valid_sources(
                source, transform, split, batch_size=per_process, random_state=seeds.shuffle,
                rank=rank, world_size=world_size)
        else:
            train_data, valid = ParquetBatches(
                Part(rows), transform, batch_size=per_process, shuffle=True,
                random_state=seeds.shuffle, rank=rank, world_size=world_size), None
        model_kwargs = self._model_kwargs(preprocessor, target, n_train, bounds)
        with isolated_random_state():
            torch.manual_seed(seeds.init)
            model = EntityEmbeddingMLP(**model_kwargs)
            result = train(config, model, self._loss(target.task_, model), train_data, valid,
                           output_activation=Predictions(target.task_), metrics=_metrics(target))
        self.preprocessor_, self.target_transformer_ = preprocessor, target
        self.model_, self.model_kwargs_ = model, model_kwargs
        self.feature_names_in_ = preprocessor.feature_names_in_
        self.n_features_in_ = len(self.feature_names_in_)
        self.n_train_rows_ = n_train
        self._set_result(config, result)
        if hasattr(target, "classes_") and hasattr(self, "predict_proba"):
            self.classes_ = target.classes_
        return self

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
        learner = self._prediction_learner()

        def predict_batch(codes, continuous):
            values = check_finite_predictions(learner.predict((codes, continuous)).numpy())
            return self._prediction_columns(values)

        shard = distributed.is_distributed()
        return predict_to_parquet(source, destination, predict_batch, self.preprocessor_,
                                  keep_columns=keep_columns,
                                  rank=distributed.get_rank() if shard else None,
                                  world_size=distributed.get_world_size() if shard else None,
                                  progress=progress, order="F")

    def _continue(self, X, y, *, sample_weight, eval_set, incremental: bool):
        """Train the fitted network on more data with the fitted encoders.

        ``warm_start``: ``epochs`` more epochs as the parameters say.
        ``incremental``: one epoch at a tenth of the last fit's rate, constant.
        """
        frame = frame_for_prediction(self, X)
        y_values = self._check_target(y, len(frame))
        target = self.target_transformer_
        weights = self._row_weights(sample_weight, y_values, target, len(frame))
        tensors = _tensors(self.preprocessor_, target, frame, y_values)
        if incremental:
            lr = self.lr_
            lr = tuple(r / 10 for r in lr) if isinstance(lr, tuple | list) else lr / 10
            config = self.training_config_.replace(epochs=1, lr=lr, lr_finder=None,
                                                   schedule=Constant())
        else:
            config = TrainingConfig.from_params(
                self.get_params(), seed=draw_seed(self.random_state),
                auto={"batch_size": self.training_config_.batch_size})
        train_data = row_batches(tensors, np.arange(len(frame)), weights,
                              batch_size=config.batch_size, shuffle=True)
        learner = self.learner_
        with rollback_on_failure(learner), isolated_random_state():
            if eval_set is not None:
                learner.valid_data = self._eval_data(eval_set, self.preprocessor_, target)
            result = train(config, self.model_, self._loss(self.task_, self.model_),
                           train_data, learner=learner)
        self.n_train_rows_ = len(frame)
        self._set_result(config, result)
        return self

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

    def _class_factors(self, y_values, target):
        return None

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

    def _set_result(self, config: TrainingConfig, result) -> None:
        self.training_config_ = config
        self.learner_ = result.learner
        self.history_ = result.history
        self.lr_ = result.lr
        self.lr_finder_ = result.lr_finder

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

    def _split(self, n_rows: int, y_values, task: str, seed: int):
        rows = np.arange(n_rows)
        if not self.early_stopping:
            return rows, None
        stratify = y_values if task in ("binary", "multiclass") else None
        try:
            train_rows, valid_rows = train_test_split(
                rows, test_size=self.validation_fraction, random_state=seed, stratify=stratify)
        except ValueError:   # a class too rare to stratify
            train_rows, valid_rows = train_test_split(
                rows, test_size=self.validation_fraction, random_state=seed)
        return np.sort(train_rows), np.sort(valid_rows)

    @property
    def task_(self) -> str:
        return self.target_transformer_.task_

    def _check_encoding(self) -> None:
        if self.continuous_encoding not in CONTINUOUS_ENCODINGS:
            raise ValueError(f"continuous_encoding must be one of {CONTINUOUS_ENCODINGS}, "
                             f"got {self.continuous_encoding!r}")
        scale = self.frequency_init_scale
        if not (scale == "auto" or (isinstance(scale, int | float) and not isinstance(scale, bool)
                                    and scale > 0)):
            raise ValueError("frequency_init_scale must be 'auto' or a number > 0, "
                             f"got {scale!r}")

    def _loss(self, task: str, model: EntityEmbeddingMLP):
        """The task's loss (with label smoothing), mixed as the model mixes its inputs."""
        loss = loss_for_task(task, label_smoothing=self.label_smoothing)
        return MixupLoss(loss, model.mixup) if self.mixup_alpha else loss

    def _model_kwargs(self, preprocessor, target, n_train_rows: int, bounds) -> dict:
        encoding = "plr" if self.continuous_encoding == "auto" else self.continuous_encoding
        numeric = {}
        if encoding == "piecewise_linear" and preprocessor.cont_columns_:
            numeric = {"continuous_bins": preprocessor.bin_edges(self.n_bins)}
        elif encoding in ("plr", "plr_lite"):
            scale = self.frequency_init_scale
            if scale == "auto":
                scale = 1.0 if n_train_rows < PLR_LARGE_SCALE_MIN_ROWS else 3.0
            numeric = {"continuous_embedding": encoding, "d_embedding": self.d_embedding,
                       "n_frequencies": self.n_frequencies, "frequency_init_scale": scale}
        return dict(
            **numeric,
            embedding_sizes=list(preprocessor.embedding_sizes_.values()),
            n_continuous=len(preprocessor.cont_columns_),
            d_out=target.n_outputs_, task=target.task_,
            hidden=tuple(self.hidden), dropout=self.dropout,
            embedding_dropout=self.embedding_dropout, y_range=self._y_range(target, bounds),
            n_members=self.n_members, swap_noise=self.swap_noise, mixup_alpha=self.mixup_alpha,
        )

    def _y_range(self, target, bounds):
        return None

    def _partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on ``(X, y)``: the first call fits the encoders (on ``classes`` if
        given, else on this batch's labels); later calls continue at a tenth of the
        first call's learning rate."""
        return self._fit(X, y, classes=classes, sample_weight=sample_weight, incremental=True)

    def save(self, path):
        """Write the fitted estimator to ``path`` (JSON + safetensors; see tabembed.load)."""
        return persistence.save(self, path)

    def _to_state(self) -> tuple[dict, dict]:
        if not hasattr(self, "learner_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit before "
                             "save")
        predictor = self.learner_.predictor
        snapshots = [predictor._state(s) for s in predictor.snapshots] if predictor else []
        meta, tensors = persistence.network_state(self.learner_.model, self.model_kwargs_,
                                                  snapshots)
        meta.update({
            "params": persistence.json_safe(self.get_params()),
            "preprocessor": self.preprocessor_.to_dict(),
            "target": persistence.json_safe(self.target_transformer_.to_dict()),
            "history": self.history_.to_dict(orient="list"),
            "fitted": {
                "lr": encode_lr(self.lr_), "n_features_in": int(self.n_features_in_),
                "n_train_rows": int(self.n_train_rows_),
                "feature_names_in": (persistence.json_safe(list(self.feature_names_in_))
                                     if hasattr(self, "feature_names_in_") else None),
                "seed": self.training_config_.seed,
                "batch_size": self.training_config_.batch_size,
            },
        })
        return meta, tensors

    @classmethod
    def _from_state(cls, meta: dict, tensors: dict, *, device="auto"):
        estimator = cls(**persistence.restore_tuples(cls, meta["params"]))
        model, kwargs, snapshots = persistence.load_network(meta, tensors, [EntityEmbeddingMLP])
        estimator.model_, estimator.model_kwargs_ = model, kwargs
        estimator.preprocessor_ = TabularPreprocessor.from_dict(meta["preprocessor"])
        estimator.target_transformer_ = TargetTransformer.from_dict(meta["target"])
        task = estimator.target_transformer_.task_
        # The file's parts must agree, or predict would index past a table.
        estimator.preprocessor_.check_model_inputs([n for n, _ in kwargs["embedding_sizes"]],
                                                   kwargs["n_continuous"])
        if (kwargs.get("task"), kwargs.get("d_out")) != (task,
                                                          estimator.target_transformer_.n_outputs_):
            raise persistence.DamagedFileError("the network's output does not fit the target")
        estimator.learner_ = inference_learner(model, loss_for_task(task),
                                               output_activation=Predictions(task),
                                               device=device, snapshots=snapshots)
        fitted = meta["fitted"]
        estimator.history_ = pd.DataFrame(meta["history"])
        estimator.lr_ = decode_lr(fitted["lr"])
        estimator.lr_finder_ = None
        estimator.n_features_in_ = fitted["n_features_in"]
        # Files of the first release lack the row count, seed and batch size.
        estimator.n_train_rows_ = fitted.get("n_train_rows")
        if fitted["feature_names_in"] is not None:
            estimator.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
        batch_size = fitted.get("batch_size") or auto_batch_size(fitted.get("n_train_rows") or 0)
        estimator.training_config_ = TrainingConfig.from_params(
            estimator.get_params(), seed=fitted.get("seed", 0), auto={"batch_size": batch_size})
        if task != "regression" and hasattr(estimator, "predict_proba"):
            estimator.classes_ = estimator.target_transformer_.classes_
        return estimator

    # ------------------------------------------------------------ predicting

    def _predict_raw(self, X) -> np.ndarray:
        check_is_fitted(self, "learner_")
        frame = frame_for_prediction(self, X)
        learner = self._prediction_learner()
        # In slices of PREDICTION_ROWS: the whole frame's codes and inputs at once were ~100
        # bytes a row of fresh memory in every call (bench/NOTES.md, "Speed, fifth round").
        # Column-major, as the preprocessor fills them: the network reads either layout, and
        # the copy into row-major was 4% of a 1M-row call ("Speed, tenth round").
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
            parts.append(learner.predict(tensors).numpy())
        outputs = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return check_finite_predictions(outputs, lambda row: self.preprocessor_.describe_extreme(
            self.preprocessor_.to_tensors(frame.iloc[[row]])[1].numpy(), 0))

    def _prediction_learner(self):
        """The learner, its network given the few-valued continuous inputs' training values
        (once; they make predictions cheaper, never different)."""
        model = self.learner_.model
        if getattr(model, "continuous_values", ()) is None:
            model.set_continuous_values(self.preprocessor_.continuous_values())
        return self.learner_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


# Rows a prediction preprocesses at once (see _predict_raw).
PREDICTION_ROWS = 1 << 18


def _top_class(probabilities: np.ndarray) -> np.ndarray:
    """Each row's most probable class, the first of equals (``argmax(axis=1)``).

    Two classes by one comparison: ``argmax`` over rows of two took 13 ms a million
    rows, the comparison 0.3 ms.
    """
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        return (probabilities[:, 1] > probabilities[:, 0]).astype(np.intp)
    return probabilities.argmax(axis=1)


def _tensors(preprocessor, target, frame, y_values) -> tuple[torch.Tensor, ...]:
    codes, continuous = preprocessor.to_tensors(frame)
    encoded = target.transform(y_values)
    dtype = torch.int64 if target.task_ == "multiclass" else torch.float32
    return codes, continuous, torch.as_tensor(encoded, dtype=dtype)


def is_stream(X) -> bool:
    """Whether ``X`` names data to stream (a path, a folder, a URI, a list of paths or a
    pyarrow Dataset) rather than holding it (a DataFrame, an array, an Arrow table)."""
    if isinstance(X, str | os.PathLike):
        return True
    if isinstance(X, list | tuple) and X and all(isinstance(x, str | os.PathLike) for x in X):
        return True
    return type(X).__module__.startswith("pyarrow") and hasattr(X, "files")


def _bounds(values) -> tuple[float, float]:
    """The smallest and largest regression target (``y_range="auto"``)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.min()), float(values.max())


def _column_bounds(source, column) -> tuple[float, float]:
    """:func:`_bounds` of a Parquet column, one record batch at a time."""
    import pyarrow.compute as pc

    from tabembed.streaming import open_dataset

    low, high = np.inf, -np.inf
    for batch in open_dataset(source).to_batches(columns=[column]):
        extremes = pc.min_max(batch.column(0))
        low = min(low, extremes["min"].as_py())
        high = max(high, extremes["max"].as_py())
    return float(low), float(high)


def _metrics(target: TargetTransformer) -> dict:
    """The per-epoch validation metrics of the target's task, in its own units."""
    decode = target.inverse_transform if target.task_ == "regression" else None
    return task_metrics(target.task_, Predictions(target.task_), decode)


@persistence.persistable
class EmbeddingMLPClassifier(ClassifierMixin, _EmbeddingMLP):
    """Entity-embedding MLP classifier: binary, multiclass or multi-label.

    Parameters
    ----------
    cat_names, cont_names, date_names : list of str, optional
        Column roles; inferred when ``None`` (see TabularPreprocessor).
    hidden : tuple of int
        Hidden layer widths.
    dropout, embedding_dropout : float
        Dropout after hidden layers and on the embeddings.
    epochs : int
    batch_size : int or "auto"
        ``"auto"``: the largest power of two giving at least 32 batches an
        epoch, capped at 1024.
    lr : "auto", "valley", "steepest", "minimum", float, list or slice
        ``"auto"`` runs the LR finder and uses its "minimum" suggestion (the
        rate at the loss minimum / 10), which beat "valley" on Adult validation.
    schedule : {"one_cycle", "sgdr", "constant", "cyclical", "slanted_triangular"} or Schedule
    cycle_len, cycle_mult : SGDR's cycle length in epochs and its multiplier.
    averaging : {"ema", None, "swa", "snapshot", "fge"}
        Weight averaging or single-run ensemble (see tabembed.training.averaging).
        EMA is the default: on Adult validation it beat plain training in each
        of three rounds (+0.03 to +0.08 points), at no cost in time; SWA, FGE
        and snapshot ensembles did not (bench/RESULTS.md, "Defaults").
    ema_decay, swa_start, swa_lr : options of EMA and SWA.
    weight_decay : float
        AdamW's decoupled weight decay (not on biases and norms).
    early_stopping, validation_fraction, patience :
        Hold out a stratified fraction and stop when its loss stops improving.
    min_frequency : int or float, optional
        Rare categories fold into the unknown token.
    continuous_scaling : {"standard", "quantile", None}
        How continuous columns are scaled (see TabularPreprocessor).
    continuous_encoding : {"auto", "plr", "plr_lite", "piecewise_linear", None}
        How continuous columns enter the network. ``"plr"``: periodic
        embeddings (``n_frequencies`` sines and cosines per column), then a
        linear layer to ``d_embedding`` values and a ReLU, per column (Gorishniy
        et al., 2022). ``"plr_lite"``: one linear layer shared by all columns.
        ``"piecewise_linear"``: each column over ``n_bins`` quantile bins.
        None: the scaled numbers through batch norm. ``"auto"`` is ``"plr"``: on
        Adult it moved test accuracy from 0.860 (piecewise-linear, the first
        release's default) to 0.870 at the same fit time, and it won on
        diamonds and on 2,000- and 3,000-row samples of Adult
        (bench/NOTES.md, "Accuracy options").
    n_bins : int
        Bins of ``"piecewise_linear"``.
    d_embedding, n_frequencies : int
        Width of each column's PLR embedding and its number of frequencies.
        32 frequencies (rtdl's default is 48) fit ~4% faster on Adult at equal
        validation accuracy over six datasets (bench/NOTES.md, "Speed, fourth
        round").
    frequency_init_scale : float or "auto"
        Standard deviation of the initial PLR frequencies: the one sensitive
        knob, and data dependent. ``"auto"``: 1 below 10,000 training rows, 3
        from there (Adult's validation preferred 10; search ``[1, 3, 10]`` with
        ``GridSearchCV`` when a fit is cheap).
    n_members : int
        k > 1 trains k members in one network (TabM-mini: shared embeddings and
        body, a scaling adapter and a head per member) and predicts the mean of
        their probabilities. Not a default: at 8 epochs it did not beat one member.
    swap_noise : float
        Training only: each cell is replaced, with this probability, by the same
        column's value in another row of the batch. Helped a small, noisy
        dataset (Caravan), hurt Adult.
    mixup_alpha : float
        Training only: mixup of the encoded inputs with ``Beta(alpha, alpha)``
        weights (0: off).
    label_smoothing : float
        Classification only: targets move this far towards uniform.
    device : str
        ``"auto"``: CUDA, then MPS, then CPU.
    random_state : int, optional
        Same seed, same predictions (on CPU).
    verbose : int
        0: silent. 1: a progress bar (a widget or text in notebooks), the
        learning rate chosen, and a table with one row per epoch (losses,
        validation metrics, rate, seconds; HTML in notebooks), and why training
        stopped early. 2: also the LR finder's suggestions and the training
        configuration.
    warm_start : bool
        Further ``fit`` calls continue training the fitted network.
    class_weight : None, "balanced" or dict
        Multiplies each row's weight in the loss by its class's weight;
        ``"balanced"`` uses ``n_samples / (n_classes * count(class))`` as
        scikit-learn does. Combines with ``fit(..., sample_weight=...)``.

    Attributes
    ----------
    classes_ : ndarray
    preprocessor_ : TabularPreprocessor
    model_ : EntityEmbeddingMLP
    learner_ : Learner
    history_ : DataFrame
        One row per epoch: training loss, and with validation data
        (``eval_set`` or ``early_stopping``) the validation loss (the log loss),
        accuracy and AUC; learning rate; seconds.
    lr_ : float, tuple or slice
        The peak learning rate used (the LR finder's choice with ``lr="auto"``).
    lr_finder_ : LRFinderResult or None
        The LR finder's sweep (``plot()`` it), when it ran.
    training_config_ : TrainingConfig
        The validated training configuration of the last fit.
    """

    def __init__(
        self,
        *,
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=DEFAULT_HIDDEN,
        dropout=DEFAULT_DROPOUT,
        embedding_dropout=DEFAULT_EMBEDDING_DROPOUT,
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        cycle_len=_D.cycle_len,
        cycle_mult=_D.cycle_mult,
        averaging=_D.averaging,
        ema_decay=_D.ema_decay,
        swa_start=_D.swa_start,
        swa_lr=_D.swa_lr,
        weight_decay=_D.weight_decay,
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_bins=48,
        d_embedding=24,
        n_frequencies=32,
        frequency_init_scale="auto",
        n_members=1,
        swap_noise=0.0,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
        class_weight=None,
    ):
        # scikit-learn reads parameters from this signature, so it lists them all.
        store_parameters(self, locals())

    def _target_transformer(self) -> TargetTransformer:
        return TargetTransformer(task="auto")

    def _class_factors(self, y_values, target):
        """``class_weight`` as one factor per row (scikit-learn's "balanced" rule)."""
        if self.class_weight is None:
            return None
        if target.task_ == "multilabel":
            raise ValueError("class_weight applies to binary and multiclass targets, not "
                             "multi-label ones; pass sample_weight instead")
        labels = np.asarray(y_values)
        classes = np.asarray(target.classes_)
        if isinstance(self.class_weight, str):
            if self.class_weight != "balanced":
                raise ValueError(f"class_weight must be None, 'balanced' or a dict "
                                 f"{{class: weight}}, got {self.class_weight!r}")
            present = np.unique(labels)
            factors = compute_class_weight("balanced", classes=present, y=labels)
            table = dict(zip(present.tolist(), factors))
        elif isinstance(self.class_weight, dict):
            unknown = [c for c in self.class_weight if c not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight names classes {unknown} that are not in y "
                                 f"(classes: {classes.tolist()})")
            table = {c: float(self.class_weight.get(c, 1.0)) for c in classes.tolist()}
        else:
            raise ValueError(f"class_weight must be None, 'balanced' or a dict "
                             f"{{class: weight}}, got {self.class_weight!r}")
        return pd.Series(labels).map(table).fillna(1.0).to_numpy(dtype=np.float64)

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        require_target(self, y)
        if not is_label_sets(y) and not is_stream(X):
            check_classification_targets(distinct_labels(TargetTransformer.check_values(y)))
        super().fit(X, y, sample_weight=sample_weight, eval_set=eval_set)
        self.classes_ = self.target_transformer_.classes_
        return self

    fit.__doc__ = _EmbeddingMLP.fit.__doc__

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One more epoch on ``(X, y)``; ``classes`` lists every label (first call)."""
        self._partial_fit(X, y, classes=classes, sample_weight=sample_weight)
        self.classes_ = self.target_transformer_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` (per-label probabilities for multi-label)."""
        probabilities = self._predict_raw(X)
        if self.task_ == "binary":
            positive = probabilities.reshape(-1)
            return np.column_stack([1 - positive, positive])
        return probabilities

    def predict(self, X) -> np.ndarray:
        return self._labels(self.predict_proba(X))

    def _labels(self, probabilities: np.ndarray) -> np.ndarray:
        if self.task_ == "multilabel":
            return (probabilities >= 0.5).astype(int)
        return self.target_transformer_.inverse_transform(_top_class(probabilities))

    def _prediction_columns(self, outputs: np.ndarray) -> dict:
        """``predict_to_parquet``'s columns: the label and each class's probability."""
        probabilities = outputs.reshape(len(outputs), -1)
        if self.task_ == "binary":
            probabilities = np.column_stack([1 - probabilities[:, 0], probabilities[:, 0]])
        columns = {f"probability_{c}": probabilities[:, j]
                   for j, c in enumerate(self.classes_)}
        if self.task_ != "multilabel":
            # An Arrow column taken from the classes' labels: converting 65,536 Python
            # strings to Arrow took 2.9 ms a row group, the take 0.1 ms.
            labels = pa.array(self.classes_).take(_top_class(probabilities))
            columns = {"prediction": labels, **columns}
        return columns

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


@persistence.persistable
class EmbeddingMLPRegressor(RegressorMixin, _EmbeddingMLP):
    """Entity-embedding MLP regressor.

    Parameters are those of :class:`EmbeddingMLPClassifier`, plus:

    y_range : (low, high), "auto" or None
        Squash predictions into a range with a scaled sigmoid; ``"auto"``
        uses the training targets' range widened by 10% on each side.
    target_scale : {"standard", "log", None}
        Standardise (default) or ``log1p`` the target while training.
    """

    def __init__(
        self,
        *,
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=DEFAULT_HIDDEN,
        dropout=DEFAULT_DROPOUT,
        embedding_dropout=DEFAULT_EMBEDDING_DROPOUT,
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        cycle_len=_D.cycle_len,
        cycle_mult=_D.cycle_mult,
        averaging=_D.averaging,
        ema_decay=_D.ema_decay,
        swa_start=_D.swa_start,
        swa_lr=_D.swa_lr,
        weight_decay=_D.weight_decay,
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_bins=48,
        d_embedding=24,
        n_frequencies=32,
        frequency_init_scale="auto",
        n_members=1,
        swap_noise=0.0,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
        y_range=None,
        target_scale="standard",
    ):
        # scikit-learn reads parameters from this signature, so it lists them all.
        store_parameters(self, locals())

    def _target_transformer(self) -> TargetTransformer:
        return TargetTransformer(task="regression", scale=self.target_scale)

    def _y_range(self, target, bounds):
        if self.y_range is None:
            return None
        if isinstance(self.y_range, str):
            if self.y_range != "auto":
                raise ValueError(f"y_range must be (low, high), 'auto' or None, got "
                                 f"{self.y_range!r}")
            low, high = bounds
            margin = 0.1 * (high - low)
            low, high = low - margin, high + margin
        else:
            low, high = self.y_range
        encoded = target.transform(np.array([low, high], dtype=float))
        return float(encoded[0]), float(encoded[1])

    def partial_fit(self, X, y, sample_weight=None):
        """One more epoch on ``(X, y)``; the first call fits the encoders on this batch."""
        return self._partial_fit(X, y, sample_weight=sample_weight)

    def predict(self, X) -> np.ndarray:
        return self._decoded(self._predict_raw(X))

    def _decoded(self, values: np.ndarray) -> np.ndarray:
        decoded = self.target_transformer_.inverse_transform(values.reshape(len(values), -1))
        return check_finite_predictions(decoded.ravel() if decoded.shape[1] == 1 else decoded)

    def _prediction_columns(self, outputs: np.ndarray) -> dict:
        """``predict_to_parquet``'s columns: ``prediction`` (or ``prediction_<j>``)."""
        values = self._decoded(outputs).reshape(len(outputs), -1)
        if values.shape[1] == 1:
            return {"prediction": values[:, 0]}
        return {f"prediction_{j}": values[:, j] for j in range(values.shape[1])}


@persistence.persistable
class EntityEmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Replace categorical columns by the embedding vectors an MLP learned for them.

    ``fit(X, y)`` trains an :class:`EmbeddingMLPClassifier` (class-like ``y``)
    or :class:`EmbeddingMLPRegressor`; ``transform(X)`` returns each
    categorical column's vector as ``<col>_0, <col>_1, ...`` next to the
    processed continuous columns, so gradient boosting, linear models or
    k-NN can use the embeddings inside a ``Pipeline``.

    Parameters
    ----------
    task : {"auto", "classification", "regression"}
        ``"auto"``: classification for binary or multiclass targets
        (scikit-learn's ``type_of_target``), regression otherwise.
    cat_names, cont_names, date_names, hidden, dropout, embedding_dropout, epochs, \
batch_size, lr, schedule, cycle_len, cycle_mult, averaging, ema_decay, swa_start, swa_lr, \
weight_decay, early_stopping, validation_fraction, patience, min_frequency, \
continuous_scaling, continuous_encoding, n_bins, d_embedding, n_frequencies, \
frequency_init_scale, n_members, swap_noise, mixup_alpha, label_smoothing, device, \
random_state, verbose, class_weight :
        Those of :class:`EmbeddingMLPClassifier`, passed to the network it trains
        (``class_weight`` and ``label_smoothing`` for classification only).

    Attributes
    ----------
    estimator_ : EmbeddingMLPClassifier or EmbeddingMLPRegressor
        The fitted network whose embeddings ``transform`` returns.
    """

    def __init__(
        self,
        *,
        task="auto",
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=DEFAULT_HIDDEN,
        dropout=DEFAULT_DROPOUT,
        embedding_dropout=DEFAULT_EMBEDDING_DROPOUT,
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        cycle_len=_D.cycle_len,
        cycle_mult=_D.cycle_mult,
        averaging=_D.averaging,
        ema_decay=_D.ema_decay,
        swa_start=_D.swa_start,
        swa_lr=_D.swa_lr,
        weight_decay=_D.weight_decay,
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_bins=48,
        d_embedding=24,
        n_frequencies=32,
        frequency_init_scale="auto",
        n_members=1,
        swap_noise=0.0,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        device="auto",
        random_state=None,
        verbose=0,
        class_weight=None,
    ):
        store_parameters(self, locals())

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Train the network (see ``EmbeddingMLPClassifier.fit``) whose embeddings
        ``transform`` returns."""
        require_target(self, y)
        if self.task not in ("auto", "classification", "regression"):
            raise ValueError(f"task must be 'auto', 'classification' or 'regression', "
                             f"got {self.task!r}")
        task = self.task
        if task == "auto" and is_stream(X):
            from tabembed.streaming import fit_target

            task = "regression" if distributed.broadcast_object(
                fit_target(X, y).task_ if distributed.is_main_process() else None
            ) == "regression" else "classification"
        elif task == "auto":
            kind = type_of_target(distinct_labels(TargetTransformer.check_values(y)))
            task = "classification" if kind in ("binary", "multiclass") else "regression"
        options = {k: v for k, v in self.get_params().items() if k != "task"}
        cls = EmbeddingMLPClassifier if task == "classification" else EmbeddingMLPRegressor
        if cls is EmbeddingMLPRegressor:
            for name, unset in (("class_weight", None), ("label_smoothing", 0.0)):
                if options.pop(name) != unset:
                    raise ValueError(f"{name} applies to classification; this target is "
                                     "regression (set task='classification' if it is not)")
        self.estimator_ = cls(**options).fit(X, y, sample_weight=sample_weight,
                                             eval_set=eval_set)
        self.n_features_in_ = self.estimator_.n_features_in_
        if hasattr(self.estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.estimator_.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        estimator = self.estimator_
        frame = frame_for_prediction(self, X)
        codes, continuous = estimator.preprocessor_.to_tensors(frame)
        blocks = []
        with torch.inference_mode():
            for i, embedding in enumerate(estimator.model_.embeddings.embeddings):
                blocks.append(embedding.weight.detach().cpu()[codes[:, i]].numpy())
        blocks.append(continuous.numpy())
        return np.hstack(blocks).astype(np.float64)

    def save(self, path):
        """Write the fitted estimator to ``path`` (JSON + safetensors; see tabembed.load)."""
        return persistence.save(self, path)

    def _to_state(self) -> tuple[dict, dict]:
        if not hasattr(self, "estimator_"):
            raise ValueError("this EntityEmbeddingTransformer is not fitted yet; call fit "
                             "before save")
        meta, tensors = self.estimator_._to_state()
        return {"params": persistence.json_safe(self.get_params()),
                "inner_class": type(self.estimator_).__name__, "inner": meta}, tensors

    @classmethod
    def _from_state(cls, meta: dict, tensors: dict, *, device="auto"):
        inner = {"EmbeddingMLPClassifier": EmbeddingMLPClassifier,
                 "EmbeddingMLPRegressor": EmbeddingMLPRegressor}.get(meta["inner_class"])
        if inner is None:
            raise ValueError(f"unknown inner estimator {meta['inner_class']!r} in the file")
        transformer = cls(**persistence.restore_tuples(cls, meta["params"]))
        # The first release kept the inner estimator's state beside the transformer's.
        inner_meta = meta.get("inner") or {**meta, "params": meta["inner_params"]}
        transformer.estimator_ = inner._from_state(inner_meta, tensors, device=device)
        transformer.n_features_in_ = transformer.estimator_.n_features_in_
        if hasattr(transformer.estimator_, "feature_names_in_"):
            transformer.feature_names_in_ = transformer.estimator_.feature_names_in_
        return transformer

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        preprocessor = self.estimator_.preprocessor_
        names = [f"{column}_{k}" for column, (_, width) in preprocessor.embedding_sizes_.items()
                 for k in range(width)]
        return np.asarray(names + [str(c) for c in preprocessor.cont_columns_], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.target_tags.required = True
        return tags
