"""scikit-learn estimators over the entity-embedding MLP, and the base of every estimator.

- :class:`EmbeddingMLPClassifier`, :class:`EmbeddingMLPRegressor`
  (``classifier.py``, ``regressor.py``; their shared fit in ``mlp.py``);
- :class:`EntityEmbeddingTransformer` (``transformer.py``): categorical columns
  as their learned embeddings, for any other model;
- ``base.py``: :class:`TrainedEstimator`, what every estimator shares (the
  loop's parameters, the fit's order, the file form); ``parameters.py``:
  constraints, option objects in files, retired names; ``fit_data.py``: rows in
  memory or streamed.
"""

from tabembed.estimators.classifier import EmbeddingMLPClassifier
from tabembed.estimators.fit_data import is_stream
from tabembed.estimators.mlp import Predictions
from tabembed.estimators.regressor import EmbeddingMLPRegressor
from tabembed.estimators.transformer import EntityEmbeddingTransformer

__all__ = ["EmbeddingMLPClassifier", "EmbeddingMLPRegressor", "EntityEmbeddingTransformer",
           "Predictions", "is_stream"]
