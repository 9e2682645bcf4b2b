"""Save and load fitted estimators in a format that is safe to open.

A model file is a zip archive holding

- ``metadata.json``: format version, class name, and the class's own state
  (parameters, preprocessing and target state, model constructor arguments, history);
- ``weights.safetensors``: the network's tensors (and ensemble snapshots).

Loading parses JSON and safetensors only: nothing in the file is ever
unpickled or executed. Classes come from a registry that tabembed's own
persistable classes join with :func:`persistable`; each class writes and
reads its own state (``_to_state`` / ``_from_state``), so this module knows
the file format and nothing about estimators. Files are written atomically
(temporary file, then rename), so a crash never leaves a half-written model
in place of a good one.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tabembed._io import atomic_write_bytes
from tabembed._version import __version__

__all__ = ["FORMAT_VERSION", "load", "persistable", "save"]

FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}


def persistable(cls: type) -> type:
    """Class decorator: ``cls`` can be saved and loaded (it defines ``_to_state`` returning
    ``(metadata, tensors)`` and a classmethod ``_from_state(metadata, tensors, device=)``)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def json_safe(value):
    """Parameters as JSON: tuples become lists, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{value!r} ({type(value).__name__}) cannot be saved as JSON; save works "
                    "with parameters made of numbers, strings, lists and None")


def restore_tuples(cls, params: dict) -> dict:
    """JSON turned tuples into lists; give back tuples where the default is one."""
    defaults = cls().get_params()
    return {k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
            for k, v in params.items()}


def save(obj, path) -> Path:
    """Write a fitted tabembed estimator to ``path`` (a zip of JSON and safetensors)."""
    name = type(obj).__name__
    if _REGISTRY.get(name) is not type(obj):
        raise TypeError(f"save() handles tabembed's persistable classes {sorted(_REGISTRY)}, "
                        f"not {name}")
    meta, tensors = obj._to_state()
    meta = {"format": "tabembed", "version": FORMAT_VERSION, "tabembed_version": __version__,
            "class": name, **meta}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("weights.safetensors", save_tensors(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load(path, *, device="auto"):
    """Load an object written by :func:`save`; a GPU-trained model loads on a CPU-only machine.

    The file's class must be registered: ``tabembed.load`` registers every
    tabembed estimator first (this function alone knows only the classes
    whose modules were imported).
    """
    meta, tensors = _read(path)
    name = meta.get("class")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"{path} names class {name!r}, which is not one of tabembed's "
                         f"estimators {sorted(_REGISTRY)}")
    return _REGISTRY[name]._from_state(meta, tensors, device=device)


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


# ------------------------------------------------------------ networks (for the classes)

def network_state(model: torch.nn.Module, model_kwargs: dict,
                  snapshots: Sequence[dict] = ()) -> tuple[dict, dict]:
    """(metadata, tensors) of a network, its constructor arguments and ensemble snapshots."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for index, state in enumerate(snapshots):
        tensors.update({f"snapshot{index}.{k}": v for k, v in state.items()})
    meta = {"model_class": type(model).__name__, "model_kwargs": json_safe(model_kwargs),
            "snapshots": len(snapshots)}
    return meta, tensors


_TUPLE_LISTS = ("embedding_sizes", "side_embedding_sizes")
_TUPLES = ("y_range", "hidden")


def load_network(meta: dict, tensors: dict, model_classes: Sequence[type]
                 ) -> tuple[torch.nn.Module, dict, list[dict]]:
    """Rebuild ``(model, model_kwargs, snapshots)`` saved by :func:`network_state`."""
    classes = {cls.__name__: cls for cls in model_classes}
    model_class = classes.get(meta["model_class"])
    if model_class is None:
        raise ValueError(f"unknown model class {meta['model_class']!r} in the file")
    kwargs = dict(meta["model_kwargs"])
    for key in _TUPLE_LISTS:
        if key in kwargs:
            kwargs[key] = [tuple(size) for size in kwargs[key]]
    for key in _TUPLES:
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    model = model_class(**kwargs)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    model.eval()
    snapshots = [{k.split(".", 1)[1]: v for k, v in tensors.items()
                  if k.startswith(f"snapshot{i}.")} for i in range(meta["snapshots"])]
    return model, kwargs, snapshots
