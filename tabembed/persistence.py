"""Save and load fitted estimators in a format that is safe to open.

A model file is a zip archive holding

- ``metadata.json``: format version, estimator class, parameters, the
  preprocessing and target state, the model's constructor arguments, history;
- ``weights.safetensors``: the network's tensors (and ensemble snapshots).

Loading parses JSON and safetensors only: nothing in the file is ever
unpickled or executed, and classes come from a fixed list of tabembed's own.
Files are written atomically (temporary file, then rename), so a crash never
leaves a half-written model in place of a good one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tabembed._version import __version__
from tabembed.estimators import Predictions
from tabembed.models import DotBias, EntityEmbeddingMLP, NeuralCF, loss_for_task
from tabembed.preprocessing import TabularPreprocessor
from tabembed.recommender import flatten
from tabembed.targets import TargetTransformer
from tabembed.training.averaging import SnapshotEnsemble
from tabembed.training.learner import Learner

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 1
_MODELS = {cls.__name__: cls for cls in (EntityEmbeddingMLP, DotBias, NeuralCF)}


def _estimator_classes() -> dict:
    from tabembed.estimators import (
        EmbeddingMLPClassifier,
        EmbeddingMLPRegressor,
        EntityEmbeddingTransformer,
    )
    from tabembed.recommender import EmbeddingRecommender

    return {cls.__name__: cls for cls in (EmbeddingMLPClassifier, EmbeddingMLPRegressor,
                                          EntityEmbeddingTransformer, EmbeddingRecommender)}


def _json_safe(value):
    """Parameters as JSON: tuples become lists, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{value!r} ({type(value).__name__}) cannot be saved as JSON; save works "
                    "with parameters made of numbers, strings, lists and None")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _network_state(estimator) -> tuple[dict, dict]:
    """(metadata, tensors) of an MLP estimator or a recommender."""
    learner = estimator.learner_
    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in learner.model.state_dict().items()}
    meta = {
        "model_class": type(learner.model).__name__,
        "model_kwargs": _json_safe(estimator.model_kwargs_),
        "preprocessor": estimator.preprocessor_.to_dict(),
        "history": estimator.history_.to_dict(orient="list"),
        "snapshots": 0,
    }
    predictor = learner.predictor
    if predictor is not None:   # an ensemble: its snapshots are part of the model
        for index, snapshot in enumerate(predictor.snapshots):
            state = predictor._state(snapshot)
            tensors.update({f"snapshot{index}.{k}": v.cpu().contiguous()
                            for k, v in state.items()})
        meta["snapshots"] = len(predictor.snapshots)
    return meta, tensors


def save(estimator, path) -> Path:
    """Write a fitted tabembed estimator to ``path`` (a zip of JSON and safetensors)."""
    classes = _estimator_classes()
    name = type(estimator).__name__
    if name not in classes:
        raise TypeError(f"save() handles tabembed's estimators {sorted(classes)}, not {name}")
    inner = estimator.estimator_ if name == "EntityEmbeddingTransformer" else estimator
    if not hasattr(inner, "learner_"):
        raise ValueError(f"this {name} is not fitted yet; call fit before save")
    meta, tensors = _network_state(inner)
    meta.update({
        "format": "tabembed", "version": FORMAT_VERSION, "tabembed_version": __version__,
        "class": name, "params": _json_safe(estimator.get_params()),
        "fitted": {"lr": getattr(inner, "lr_", None),
                   "n_features_in": int(inner.n_features_in_),
                   "feature_names_in": (_json_safe(list(inner.feature_names_in_))
                                        if hasattr(inner, "feature_names_in_") else None)},
    })
    if name == "EntityEmbeddingTransformer":
        meta["inner_class"] = type(inner).__name__
        meta["inner_params"] = _json_safe(inner.get_params())
    if hasattr(inner, "target_transformer_"):
        meta["target"] = _json_safe(inner.target_transformer_.to_dict())
    if name == "EmbeddingRecommender":
        tensors["seen_users"] = torch.from_numpy(np.ascontiguousarray(inner.seen_users_))
        tensors["seen_items"] = torch.from_numpy(np.ascontiguousarray(inner.seen_items_))
        meta["recommender"] = {
            "rating_range": list(inner.rating_range_),
            "user_features": inner.user_features_, "item_features": inner.item_features_,
            "context_features": inner.context_features_,
            "user_table": inner._user_table.reset_index().to_json(orient="table"),
            "item_table": inner._item_table.reset_index().to_json(orient="table"),
        }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("weights.safetensors", save_tensors(tensors))
    path = Path(path)
    _atomic_write(path, buffer.getvalue())
    return path


def _read(path) -> tuple[dict, dict]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"metadata.json", "weights.safetensors"} <= names:
                raise ValueError(f"{path} is not a tabembed model file (it lacks "
                                 "metadata.json/weights.safetensors)")
            meta = json.loads(archive.read("metadata.json"))
            raw = archive.read("weights.safetensors")
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a tabembed model file (not a zip archive); "
                         "tabembed never unpickles files") from error
    if not isinstance(meta, dict) or meta.get("format") != "tabembed":
        raise ValueError(f"{path} is not a tabembed model file (no tabembed format marker)")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by tabembed {meta.get('tabembed_version')} in format version "
            f"{meta['version']}; this tabembed ({__version__}) reads up to version "
            f"{FORMAT_VERSION}: upgrade tabembed to load it"
        )
    try:
        tensors = load_tensors(raw)
    except Exception as error:
        raise ValueError(f"{path} has a corrupt weights.safetensors: {error}") from error
    return meta, tensors


def _restore_network(estimator, meta: dict, tensors: dict, device) -> None:
    model_class = _MODELS.get(meta["model_class"])
    if model_class is None:
        raise ValueError(f"unknown model class {meta['model_class']!r} in the file")
    kwargs = dict(meta["model_kwargs"])
    for key in ("embedding_sizes", "side_embedding_sizes"):
        if key in kwargs:
            kwargs[key] = [tuple(size) for size in kwargs[key]]
    for key in ("y_range", "hidden"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    model = model_class(**kwargs)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    model.eval()
    estimator.model_kwargs_ = kwargs
    estimator.model_ = model
    estimator.preprocessor_ = TabularPreprocessor.from_dict(meta["preprocessor"])
    n_cat = len(estimator.preprocessor_.cat_columns_)
    n_cont = len(estimator.preprocessor_.cont_columns_)
    empty = (torch.zeros((0, n_cat), dtype=torch.int64), torch.zeros((0, n_cont)),
             torch.zeros(0))
    task = getattr(model, "task", "regression")
    activation = Predictions(task) if hasattr(model, "task") else flatten
    estimator.learner_ = Learner(model, loss_for_task(task), empty, device=device,
                                 output_activation=activation)
    if meta["snapshots"]:
        ensemble = SnapshotEnsemble()
        ensemble.snapshots = [
            {k.split(".", 1)[1]: v for k, v in tensors.items()
             if k.startswith(f"snapshot{i}.")} for i in range(meta["snapshots"])]
        estimator.learner_.predictor = ensemble
    estimator.history_ = pd.DataFrame(meta["history"])
    fitted = meta["fitted"]
    estimator.lr_ = fitted["lr"]
    estimator.n_features_in_ = fitted["n_features_in"]
    if fitted["feature_names_in"] is not None:
        estimator.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)


def _restore_tuples(cls, params: dict) -> dict:
    """JSON turned tuples into lists; give back tuples where the default is one."""
    defaults = cls().get_params()
    return {k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
            for k, v in params.items()}


def load(path, *, device="auto"):
    """Load an estimator written by ``save``; a GPU-trained model loads on a CPU-only machine."""
    meta, tensors = _read(path)
    classes = _estimator_classes()
    name = meta.get("class")
    if name not in classes:
        raise ValueError(f"{path} names class {name!r}, which is not one of tabembed's "
                         f"estimators {sorted(classes)}")
    estimator = classes[name](**_restore_tuples(classes[name], meta["params"]))
    inner = estimator
    if name == "EntityEmbeddingTransformer":
        inner_class = meta.get("inner_class")
        if inner_class not in ("EmbeddingMLPClassifier", "EmbeddingMLPRegressor"):
            raise ValueError(f"unknown inner estimator {inner_class!r} in {path}")
        inner = classes[inner_class](**_restore_tuples(classes[inner_class],
                                                       meta["inner_params"]))
        estimator.estimator_ = inner
    if "target" in meta:
        inner.target_transformer_ = TargetTransformer.from_dict(meta["target"])
    if name == "EmbeddingRecommender":
        extra = meta["recommender"]
        inner.rating_range_ = tuple(extra["rating_range"])
        inner.user_features_ = extra["user_features"]
        inner.item_features_ = extra["item_features"]
        inner.context_features_ = extra["context_features"]
        inner._user_table = pd.read_json(io.StringIO(extra["user_table"]),
                                         orient="table").set_index(inner.user_column)
        inner._item_table = pd.read_json(io.StringIO(extra["item_table"]),
                                         orient="table").set_index(inner.item_column)
        inner.seen_users_ = tensors["seen_users"].numpy()
        inner.seen_items_ = tensors["seen_items"].numpy()
    _restore_network(inner, meta, tensors, device)
    if name in ("EmbeddingMLPClassifier", "EntityEmbeddingTransformer") \
            and inner.target_transformer_.task_ != "regression":
        inner.classes_ = inner.target_transformer_.classes_
    if name == "EntityEmbeddingTransformer":
        estimator.n_features_in_ = inner.n_features_in_
        if hasattr(inner, "feature_names_in_"):
            estimator.feature_names_in_ = inner.feature_names_in_
    return estimator
