"""EntityEmbeddingTransformer: categorical columns replaced by their learned embeddings."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from tabembed import defaults, persistence
from tabembed._validation import frame_for_prediction, require_target
from tabembed.estimators.base import ABSENT, TrainedEstimator, fit_events
from tabembed.estimators.classifier import EmbeddingMLPClassifier
from tabembed.estimators.fit_data import is_stream
from tabembed.estimators.mlp import MLP_CONSTRAINTS, MLP_PARAMETERS_DOC
from tabembed.estimators.parameters import (
    InstanceOf,
    Options,
    accepts_retired_parameters,
    check_parameters,
    decode_parameters,
    encode_parameters,
    store_parameters,
)
from tabembed.estimators.regressor import EmbeddingMLPRegressor
from tabembed.targets import TargetTransformer, distinct_labels
from tabembed.training import distributed

__all__ = ["EntityEmbeddingTransformer"]

_D = defaults.MLP_DEFAULTS
_INNER = {cls.__name__: cls for cls in (EmbeddingMLPClassifier, EmbeddingMLPRegressor)}


@persistence.persistable
class EntityEmbeddingTransformer(TransformerMixin, TrainedEstimator):
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
    %(mlp_parameters)s
    label_smoothing, class_weight :
        As in :class:`EmbeddingMLPClassifier` (classification only).
    %(loop_parameters)s

    Attributes
    ----------
    estimator_ : EmbeddingMLPClassifier or EmbeddingMLPRegressor
        The fitted network whose embeddings ``transform`` returns.
    """

    _parameter_constraints: ClassVar[dict] = {
        **{k: v for k, v in MLP_CONSTRAINTS.items() if k != "warm_start"},
        "task": [Options(("auto", "classification", "regression"))],
        "class_weight": [Options(("balanced", None)), InstanceOf((dict,), "a dict "
                                                                 "{class: weight}")],
    }
    _docstring_parts: ClassVar[dict] = {"mlp_parameters": MLP_PARAMETERS_DOC}

    @accepts_retired_parameters
    def __init__(
        self,
        *,
        task="auto",
        cat_names=None,
        cont_names=None,
        date_names=None,
        hidden=defaults.MLP_HIDDEN,
        dropout=defaults.MLP_DROPOUT,
        embedding_dropout=defaults.MLP_EMBEDDING_DROPOUT,
        epochs=_D.epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        schedule=_D.schedule,
        averaging=_D.averaging,
        weight_decay=_D.weight_decay,
        early_stopping=False,
        validation_fraction=_D.validation_fraction,
        patience=_D.patience,
        min_frequency=None,
        continuous_scaling="standard",
        continuous_encoding="auto",
        n_members=1,
        augmentation=None,
        label_smoothing=0.0,
        device="auto",
        random_state=None,
        verbose=0,
        class_weight=None,
    ):
        store_parameters(self, locals())

    def fit(self, X, y, sample_weight=None, *, eval_set=None, callbacks=None):
        """Train the network (see ``EmbeddingMLPClassifier.fit``) whose embeddings
        ``transform`` returns; ``callbacks`` run in its training loop."""
        with fit_events(self, callbacks) as callbacks:
            return self._fit(X, y, sample_weight, eval_set, callbacks)

    def _fit(self, X, y, sample_weight, eval_set, callbacks):
        require_target(self, y)
        check_parameters(self, self._parameter_constraints)
        task = self.task
        if task == "auto" and is_stream(X):
            from tabembed.streaming import fit_target

            task = "regression" if distributed.broadcast_object(
                fit_target(X, y).task_ if distributed.is_main_process() else None
            ) == "regression" else "classification"
        elif task == "auto":
            kind = type_of_target(distinct_labels(TargetTransformer.check_values(y)))
            task = "classification" if kind in ("binary", "multiclass") else "regression"
        options = {k: v for k, v in self.get_params(deep=False).items() if k != "task"}
        cls = EmbeddingMLPClassifier if task == "classification" else EmbeddingMLPRegressor
        if cls is EmbeddingMLPRegressor:
            for name, unset in (("class_weight", None), ("label_smoothing", 0.0)):
                if options.pop(name) != unset:
                    raise ValueError(f"{name} applies to classification; this target is "
                                     "regression (set task='classification' if it is not)")
        estimator = cls(**options).fit(X, y, sample_weight=sample_weight, eval_set=eval_set,
                                       callbacks=callbacks)
        self._adopt(self._fitted(estimator))
        return self

    @staticmethod
    def _fitted(estimator) -> dict:
        return {"estimator_": estimator, "n_features_in_": estimator.n_features_in_,
                "feature_names_in_": getattr(estimator, "feature_names_in_", ABSENT)}

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

    def to_state(self) -> tuple[dict, dict]:
        if not hasattr(self, "estimator_"):
            raise ValueError("this EntityEmbeddingTransformer is not fitted yet; call fit "
                             "before save")
        meta, tensors = self.estimator_.to_state()
        return {"params": persistence.json_safe(encode_parameters(
            self.get_params(deep=False))), "inner_class": type(self.estimator_).__name__,
            "inner": meta}, tensors

    @classmethod
    def from_state(cls, meta: dict, tensors: dict, *, device="auto"):
        inner = _INNER.get(meta["inner_class"])
        if inner is None:
            raise ValueError(f"unknown inner estimator {meta['inner_class']!r} in the file")
        params = decode_parameters(persistence.restore_tuples(cls, meta["params"]))
        transformer = cls(**{k: v for k, v in params.items() if k in cls().get_params()})
        # The first release kept the inner estimator's state beside the transformer's.
        inner_meta = meta.get("inner") or {**meta, "params": meta["inner_params"]}
        transformer._adopt(cls._fitted(inner.from_state(inner_meta, tensors, device=device)))
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
