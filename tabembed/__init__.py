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
    "EmbeddingRecommender": "tabembed.recommenders",
    "ImplicitRecommender": "tabembed.recommenders",
    "TabularPreprocessor": "tabembed.preprocessing",
    "TargetTransformer": "tabembed.targets",
    "embedding_size": "tabembed.preprocessing",
    "EntityEmbeddingMLP": "tabembed.models",
    "DotBias": "tabembed.models",
    "NeuralCF": "tabembed.models",
    "Learner": "tabembed.training.learner",
    "TensorBatches": "tabembed.batches",
    "save": "tabembed.persistence",
    # Option objects of the estimators' parameters.
    "SGDR": "tabembed.training.schedules",
    "OneCycle": "tabembed.training.schedules",
    "EMA": "tabembed.training.averaging",
    "SWA": "tabembed.training.averaging",
    "SnapshotEnsemble": "tabembed.training.averaging",
    "FastGeometricEnsemble": "tabembed.training.averaging",
    "PLR": "tabembed.models.numeric_embeddings",
    "PiecewiseLinear": "tabembed.models.numeric_embeddings",
    "SwapNoise": "tabembed.augmentation",
    "Mixup": "tabembed.augmentation",
}

__all__ = ["__version__", "load", *_PUBLIC]


def load(path, *, device="auto", max_bytes: int = 8 << 30):
    """Load a model written by ``save`` (or an estimator's ``save``): JSON and safetensors
    only, nothing in the file is executed, sizes and shapes are checked before anything is
    allocated. This is the safe way to open a model from elsewhere (unpickling one is not).
    See :func:`tabembed.persistence.load`."""
    # Importing the estimator modules registers every persistable class.
    import tabembed.estimators
    import tabembed.recommenders  # noqa: F401
    from tabembed.persistence import load as load_registered

    return load_registered(path, device=device, max_bytes=max_bytes)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tabembed' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
