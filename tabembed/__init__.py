"""tabembed: deep learning on tabular data with entity embeddings.

The public names are loaded on first use (PEP 562), so ``import tabembed``
does no work and does not import torch until a name is needed.
"""

from __future__ import annotations

import importlib

from tabembed._version import __version__

_PUBLIC = {
    "EmbeddingMLPClassifier": "tabembed.estimators",
    "EmbeddingMLPRegressor": "tabembed.estimators",
    "EntityEmbeddingTransformer": "tabembed.estimators",
    "EmbeddingRecommender": "tabembed.recommender",
    "TabularPreprocessor": "tabembed.preprocessing",
    "TargetTransformer": "tabembed.targets",
    "embedding_size": "tabembed.preprocessing",
    "EntityEmbeddingMLP": "tabembed.models",
    "DotBias": "tabembed.models",
    "NeuralCF": "tabembed.models",
    "Learner": "tabembed.training.learner",
    "TensorBatches": "tabembed.batches",
    "save": "tabembed.persistence",
    "load": "tabembed.persistence",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tabembed' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
