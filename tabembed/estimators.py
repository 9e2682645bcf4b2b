"""scikit-learn estimators over the entity-embedding MLP.

``EmbeddingMLPClassifier`` and ``EmbeddingMLPRegressor`` take a DataFrame and
return predictions; ``EntityEmbeddingTransformer`` turns categorical columns
into their learned embedding vectors for any other model. They are thin: a
:class:`~tabembed.preprocessing.TabularPreprocessor`, a
:class:`~tabembed.targets.TargetTransformer`, an
:class:`~tabembed.models.EntityEmbeddingMLP`, and one Learner run
(:mod:`tabembed.training_options`).

Defaults were chosen on a validation split of Adult's training file (never
the test file): see bench/RESULTS.md, "Defaults", and bench/NOTES.md. The one
default that moved accuracy is the piecewise-linear encoding of continuous
columns (+0.4 points of validation accuracy); dropout, weight decay, batch
size, epochs and averaging all landed within +-0.1 point of each other.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from tabembed import training_options
from tabembed.models import EntityEmbeddingMLP, loss_for_task, predictions_from_output
from tabembed.models.tabular import DEFAULT_DROPOUT, DEFAULT_EMBEDDING_DROPOUT, DEFAULT_HIDDEN
from tabembed.preprocessing import TabularPreprocessor
from tabembed.targets import TargetTransformer, is_label_sets

__all__ = ["EmbeddingMLPClassifier", "EmbeddingMLPRegressor", "EntityEmbeddingTransformer"]

# "auto" uses piecewise-linear inputs from this many training rows (~200 rows per
# bin at 48 bins); measured in bench/NOTES.md ("Piecewise-linear inputs").
PIECEWISE_LINEAR_MIN_ROWS = 10_000


def as_frame(X, feature_names=None) -> pd.DataFrame:
    """A DataFrame from X (arrays get ``x0, x1, ...`` or the fitted names); never a copy we own."""
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, pd.Series):
        return X.to_frame()
    if hasattr(X, "tocsr") or hasattr(X, "sparse"):
        raise TypeError("sparse input is not supported: tabembed needs dense data; convert "
                        "with X.toarray() or pass a DataFrame")
    if X is None:
        raise ValueError("Expected a 2D array or a DataFrame, got None")
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(
            f"Expected a 2D array or a DataFrame, got an array of shape {array.shape}. "
            "Reshape your data with X.reshape(-1, 1) for a single feature or "
            "X.reshape(1, -1) for a single sample"
        )
    if np.iscomplexobj(array):
        raise ValueError("Complex data not supported")
    names = (list(feature_names) if feature_names is not None
             and len(feature_names) == array.shape[1]
             else [f"x{i}" for i in range(array.shape[1])])
    return pd.DataFrame(array, columns=names)


def frame_for_prediction(estimator, X) -> pd.DataFrame:
    """X as the frame the fitted estimator expects; arrays must have the fitted width."""
    frame = as_frame(X, getattr(estimator, "feature_names_in_", None))
    if not isinstance(X, pd.DataFrame) and frame.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {frame.shape[1]} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input")
    check_rows(frame)
    return frame


def require_target(estimator, y) -> None:
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target "
                         "y is None")


def check_rows(frame: pd.DataFrame, minimum: int = 1) -> None:
    if len(frame) < minimum:
        raise ValueError(
            f"Found array with {len(frame)} sample(s) (shape={frame.shape}) while a minimum "
            f"of {minimum} is required."
        )
    if frame.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={frame.shape}) while a "
                         "minimum of 1 is required.")


class _EmbeddingMLP(BaseEstimator):
    """Parameters and the fit/predict plumbing shared by the classifier and the regressor."""

    _task = "auto"

    def __init__(
        self,
        *,
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=DEFAULT_HIDDEN,
        dropout=DEFAULT_DROPOUT,
        embedding_dropout=DEFAULT_EMBEDDING_DROPOUT,
        epochs=8,
        batch_size="auto",
        lr="auto",
        schedule="one_cycle",
        cycle_len=1,
        cycle_mult=2,
        averaging="ema",
        ema_decay=0.999,
        swa_start=0.75,
        swa_lr=0.5,
        weight_decay=0.01,
        early_stopping=False,
        validation_fraction=0.1,
        patience=3,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_bins=48,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.cat_names = cat_names
        self.cont_names = cont_names
        self.date_names = date_names
        self.hidden = hidden
        self.dropout = dropout
        self.embedding_dropout = embedding_dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.schedule = schedule
        self.cycle_len = cycle_len
        self.cycle_mult = cycle_mult
        self.averaging = averaging
        self.ema_decay = ema_decay
        self.swa_start = swa_start
        self.swa_lr = swa_lr
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.min_frequency = min_frequency
        self.continuous_scaling = continuous_scaling
        self.continuous_encoding = continuous_encoding
        self.n_bins = n_bins
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------ fitting

    def _target_transformer(self) -> TargetTransformer:
        raise NotImplementedError

    def fit(self, X, y):
        """Fit the preprocessor, the target encoding and the network on ``(X, y)``."""
        return self._fit(X, y)

    def _fit(self, X, y, classes=None):
        training_options.check_training_parameters(self)
        if self.warm_start and hasattr(self, "learner_"):
            return self._continue(X, y)
        frame = as_frame(X)
        check_rows(frame, minimum=2)
        y_values = self._check_target(y, len(frame))
        self.preprocessor_ = TabularPreprocessor(
            self.cat_names, self.cont_names, self.date_names, min_frequency=self.min_frequency,
            continuous_scaling=self.continuous_scaling,
        )
        # partial_fit may name every class up front, before a batch shows them all.
        self.target_transformer_ = self._target_transformer().fit(
            y_values if classes is None else np.asarray(classes))
        self.preprocessor_.fit(frame)
        self.feature_names_in_ = self.preprocessor_.feature_names_in_
        if not isinstance(X, pd.DataFrame):
            del self.feature_names_in_
        self.n_features_in_ = frame.shape[1]
        train_rows, valid_rows = self._split(len(frame), y_values)
        tensors = self._tensors(frame, y_values)
        train = tuple(t[train_rows] for t in tensors)
        self.n_train_rows_ = len(train_rows)
        valid = tuple(t[valid_rows] for t in tensors) if valid_rows is not None else None
        training_options.seed_everything(self.random_state)
        self.model_ = self._build_model()
        self.learner_ = training_options.train(
            self, self.model_, loss_for_task(self.task_), train, valid,
            output_activation=self._activation,
        )
        self._after_fit()
        return self

    def _continue(self, X, y):
        """warm_start: train ``epochs`` more epochs on new data with the fitted encoders."""
        frame = frame_for_prediction(self, X)
        y_values = self._check_target(y, len(frame))
        tensors = self._tensors(frame, y_values)
        self.n_train_rows_ = len(frame)
        training_options.train(self, self.model_, loss_for_task(self.task_), tensors, None,
                               output_activation=self._activation, learner=self.learner_)
        self._after_fit()
        return self

    def _check_target(self, y, n_rows: int) -> np.ndarray:
        require_target(self, y)
        if not isinstance(y, pd.DataFrame | pd.Series | list | np.ndarray):
            y = np.asarray(y)
        if isinstance(y, pd.DataFrame) and y.shape[1] == 1 and self._task != "multilabel":
            y = y.iloc[:, 0]
        values = y if isinstance(y, pd.DataFrame) else np.asarray(y)
        if len(values) != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {len(values)}; they must match")
        if not isinstance(values, pd.DataFrame) and values.ndim == 2 and values.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                          "flattened to (n_samples,)", DataConversionWarning, stacklevel=3)
            values = values.ravel()
        return values

    def _split(self, n_rows: int, y_values):
        rows = np.arange(n_rows)
        if not self.early_stopping:
            return rows, None
        stratify = y_values if self.task_ in ("binary", "multiclass") else None
        try:
            train, valid = train_test_split(rows, test_size=self.validation_fraction,
                                            random_state=self.random_state, stratify=stratify)
        except ValueError:   # a class too rare to stratify
            train, valid = train_test_split(rows, test_size=self.validation_fraction,
                                            random_state=self.random_state)
        return np.sort(train), np.sort(valid)

    @property
    def task_(self) -> str:
        return self.target_transformer_.task_

    def _tensors(self, frame, y_values) -> tuple[torch.Tensor, ...]:
        codes, continuous = self.preprocessor_.to_tensors(frame)
        encoded = self.target_transformer_.transform(y_values)
        dtype = torch.int64 if self.task_ == "multiclass" else torch.float32
        return codes, continuous, torch.as_tensor(encoded, dtype=dtype)

    def _build_model(self) -> EntityEmbeddingMLP:
        if self.continuous_encoding not in ("auto", None, "piecewise_linear"):
            raise ValueError("continuous_encoding must be 'auto', None or 'piecewise_linear', "
                             f"got {self.continuous_encoding!r}")
        encoding = self.continuous_encoding
        if encoding == "auto":
            enough = self.n_train_rows_ >= PIECEWISE_LINEAR_MIN_ROWS
            encoding = "piecewise_linear" if enough else None
        bins = None
        if encoding == "piecewise_linear" and self.preprocessor_.cont_columns_:
            bins = self.preprocessor_.bin_edges(self.n_bins)
        self.model_kwargs_ = dict(
            continuous_bins=bins,
            embedding_sizes=list(self.preprocessor_.embedding_sizes_.values()),
            n_continuous=len(self.preprocessor_.cont_columns_),
            d_out=self.target_transformer_.n_outputs_, task=self.task_,
            hidden=tuple(self.hidden), dropout=self.dropout,
            embedding_dropout=self.embedding_dropout, y_range=self._y_range(),
        )
        return EntityEmbeddingMLP(**self.model_kwargs_)

    def _y_range(self):
        return None

    def _activation(self, output: torch.Tensor) -> torch.Tensor:
        predictions = predictions_from_output(output.double(), self.task_)
        if self.task_ == "regression":
            return predictions
        # A saturated sigmoid or softmax gives exactly 0 or 1; keep log losses finite.
        return predictions.clamp(1e-12, 1 - 1e-12)

    def _partial_fit(self, X, y, classes=None):
        """One epoch on ``(X, y)``: the first call fits the encoders (on ``classes`` if
        given, else on this batch's labels); later calls continue at a tenth of the
        first call's learning rate."""
        if not hasattr(self, "learner_"):
            epochs = self.epochs
            self.set_params(epochs=1)
            try:
                self._fit(X, y, classes=classes)
            finally:
                self.set_params(epochs=epochs)
            return self
        epochs, lr = self.epochs, self.lr
        schedule = self.schedule
        self.set_params(epochs=1, lr=self.lr_ / 10, schedule="constant")
        try:
            self._continue(X, y)
        finally:
            self.set_params(epochs=epochs, lr=lr, schedule=schedule)
        return self

    def auto_defaults(self) -> dict:
        """``batch_size="auto"``: the largest power of two giving at least 32 batches an
        epoch, between 16 and 1024 (512 on Adult; bench/RESULTS.md, "Defaults")."""
        rows = max(getattr(self, "n_train_rows_", 0), 1)
        size = 2 ** int(np.floor(np.log2(max(rows / 32, 1))))
        return {"batch_size": int(min(1024, max(16, size)))}

    def _after_fit(self) -> None:
        self.history_ = self.learner_.history.to_frame()
        self.lr_ = self.learner_.fitted_lr
        self.lr_finder_ = getattr(self.learner_, "lr_finder_result", None)

    def save(self, path):
        """Write the fitted estimator to ``path`` (JSON + safetensors; see tabembed.load)."""
        from tabembed.persistence import save

        return save(self, path)

    # ------------------------------------------------------------ predicting

    def _predict_raw(self, X) -> np.ndarray:
        check_is_fitted(self, "learner_")
        frame = frame_for_prediction(self, X)
        codes, continuous = self.preprocessor_.to_tensors(frame)
        return self.learner_.predict((codes, continuous)).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


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
    continuous_encoding : {"auto", None, "piecewise_linear"}
        ``"piecewise_linear"`` encodes each continuous column over ``n_bins``
        quantile bins (PiecewiseLinearEncoding) instead of feeding the number.
        ``"auto"`` does so from 10,000 training rows up: on Adult it added 0.4
        points of validation accuracy, on a 750-row sample it lost 18-34 points.
    n_bins : int
    device : str
        ``"auto"``: CUDA, then MPS, then CPU.
    random_state : int, optional
        Same seed, same predictions (on CPU).
    verbose : int
    warm_start : bool
        Further ``fit`` calls continue training the fitted network.

    Attributes
    ----------
    classes_ : ndarray
    preprocessor_ : TabularPreprocessor
    model_ : EntityEmbeddingMLP
    learner_ : Learner
    history_ : DataFrame
    lr_ : float
        The peak learning rate used.
    """

    def _target_transformer(self) -> TargetTransformer:
        return TargetTransformer(task="auto")

    def fit(self, X, y):
        require_target(self, y)
        if not is_label_sets(y):
            TargetTransformer.check_values(y)
            check_classification_targets(y)
        super().fit(X, y)
        self.classes_ = self.target_transformer_.classes_
        return self

    def partial_fit(self, X, y, classes=None):
        """One more epoch on ``(X, y)``; ``classes`` lists every label (first call)."""
        self._partial_fit(X, y, classes=classes)
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
        probabilities = self.predict_proba(X)
        if self.task_ == "multilabel":
            return (probabilities >= 0.5).astype(int)
        return self.target_transformer_.inverse_transform(probabilities.argmax(axis=1))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


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
        epochs=8,
        batch_size="auto",
        lr="auto",
        schedule="one_cycle",
        cycle_len=1,
        cycle_mult=2,
        averaging="ema",
        ema_decay=0.999,
        swa_start=0.75,
        swa_lr=0.5,
        weight_decay=0.01,
        early_stopping=False,
        validation_fraction=0.1,
        patience=3,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_bins=48,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
        y_range=None,
        target_scale="standard",
    ):
        # scikit-learn reads parameters from this signature, so it lists them all.
        super().__init__(
            cat_names=cat_names, cont_names=cont_names, date_names=date_names, hidden=hidden,
            dropout=dropout, embedding_dropout=embedding_dropout, epochs=epochs,
            batch_size=batch_size, lr=lr, schedule=schedule, cycle_len=cycle_len,
            cycle_mult=cycle_mult, averaging=averaging, ema_decay=ema_decay,
            swa_start=swa_start, swa_lr=swa_lr, weight_decay=weight_decay,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            patience=patience, min_frequency=min_frequency,
            continuous_scaling=continuous_scaling, continuous_encoding=continuous_encoding,
            n_bins=n_bins, device=device,
            random_state=random_state, verbose=verbose, warm_start=warm_start,
        )
        self.y_range = y_range
        self.target_scale = target_scale

    def _target_transformer(self) -> TargetTransformer:
        return TargetTransformer(task="regression", scale=self.target_scale)

    def _y_range(self):
        if self.y_range is None:
            return None
        transformer = self.target_transformer_
        if isinstance(self.y_range, str):
            if self.y_range != "auto":
                raise ValueError(f"y_range must be (low, high), 'auto' or None, got "
                                 f"{self.y_range!r}")
            low, high = self._target_bounds
            margin = 0.1 * (high - low)
            low, high = low - margin, high + margin
        else:
            low, high = self.y_range
        encoded = transformer.transform(np.array([low, high], dtype=float))
        return float(encoded[0]), float(encoded[1])

    def fit(self, X, y):
        values = np.asarray(y, dtype=float) if not isinstance(y, pd.DataFrame) else None
        if values is not None and values.size:
            self._target_bounds = (float(np.nanmin(values)), float(np.nanmax(values)))
        return super().fit(X, y)

    def partial_fit(self, X, y):
        """One more epoch on ``(X, y)``; the first call fits the encoders on this batch."""
        return self._partial_fit(X, y)

    def predict(self, X) -> np.ndarray:
        values = self._predict_raw(X)
        decoded = self.target_transformer_.inverse_transform(values.reshape(len(values), -1))
        return decoded.ravel() if decoded.shape[1] == 1 else decoded


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
    **options
        Any parameter of the MLP estimators (``epochs``, ``random_state``, ...).
    """

    def __init__(self, *, task="auto", epochs=8, batch_size="auto", lr="auto",
                 hidden=DEFAULT_HIDDEN, dropout=DEFAULT_DROPOUT, weight_decay=0.01,
                 cat_names=None, cont_names=None, random_state=None, verbose=0):
        self.task = task
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.cat_names = cat_names
        self.cont_names = cont_names
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        require_target(self, y)
        if self.task not in ("auto", "classification", "regression"):
            raise ValueError(f"task must be 'auto', 'classification' or 'regression', "
                             f"got {self.task!r}")
        task = self.task
        if task == "auto":
            from sklearn.utils.multiclass import type_of_target
            kind = type_of_target(np.asarray(y))
            task = "classification" if kind in ("binary", "multiclass") else "regression"
        options = {k: v for k, v in self.get_params().items() if k != "task"}
        cls = EmbeddingMLPClassifier if task == "classification" else EmbeddingMLPRegressor
        self.estimator_ = cls(**options).fit(X, y)
        self.n_features_in_ = self.estimator_.n_features_in_
        if hasattr(self.estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.estimator_.feature_names_in_
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
        from tabembed.persistence import save

        return save(self, path)

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
