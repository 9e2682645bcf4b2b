"""Save and load fitted estimators in a format that is safe to open.

A model file is a zip archive holding

- ``metadata.json``: format version, class name, and the class's own state
  (parameters, preprocessing and target state, model constructor arguments, history);
- ``weights.safetensors``: the network's tensors (and ensemble snapshots).

Loading parses JSON and safetensors only: nothing in the file is ever
unpickled or executed. Classes come from a registry that tabembed's own
persistable classes join with :func:`persistable`; each class writes and
reads its own state (``to_state`` / ``from_state``), so this module knows
the file format and nothing about estimators. Files are written atomically
(temporary file, then rename), so a crash never leaves a half-written model
in place of a good one.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tabembed._io import atomic_write_bytes, open_regular
from tabembed._version import __version__

__all__ = ["FORMAT_VERSION", "MAX_BYTES", "DamagedFileError", "load", "persistable", "save"]

FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}


def persistable(cls: type) -> type:
    """Class decorator: ``cls`` can be saved and loaded (it defines ``to_state`` returning
    ``(metadata, tensors)`` and a classmethod ``from_state(metadata, tensors, device=)``)."""
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
    """Write a fitted tabembed estimator to ``path`` (a zip of JSON and safetensors).

    The file is written atomically (:mod:`tabembed._io`): a failed write leaves any
    previous file as it was. Only a regular file is replaced: a directory, FIFO, socket
    or device at ``path`` is an error; a symlink is written through to its target.
    """
    name = type(obj).__name__
    if _REGISTRY.get(name) is not type(obj):
        raise TypeError(f"save() handles tabembed's persistable classes {sorted(_REGISTRY)}, "
                        f"not {name}")
    meta, tensors = obj.to_state()
    meta = {"format": "tabembed", "version": FORMAT_VERSION, "tabembed_version": __version__,
            "class": name, **meta}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("weights.safetensors", save_tensors(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    return atomic_write_bytes(Path(path), buffer.getvalue())


# Limits on what a file may make tabembed read. A model file's entries are compressed by
# deflate: weights about 1.1x, metadata JSON 3-10x; a ratio beyond this is a zip bomb.
MAX_BYTES = 8 << 30
MAX_RATIO = 200
_RATIO_FREE_BYTES = 16 << 20
_ENTRIES = ("metadata.json", "weights.safetensors")
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# Parsed JSON takes up to 32 bytes of Python objects per byte of text ("[[],[],...]");
# counted at half that against max_bytes, as the weights are held twice for a moment (as
# bytes and as tensors): what a file may make loading allocate stays within 2 x max_bytes.
_JSON_COST = 16
_CHUNK = 1 << 20
# A tabembed file's central directory lists its two entries in about 150 bytes; zipfile
# makes an object of every entry listed, so a long one is refused before it is parsed.
_DIRECTORY_BYTES = 1 << 16


def load(path, *, device="auto", max_bytes: int = MAX_BYTES):
    """Load an object written by :func:`save`; a GPU-trained model loads on a CPU-only machine.

    Loading is safe on files from anywhere: it parses JSON and safetensors only,
    never unpickles or executes anything, and refuses non-finite weights and
    inconsistent metadata with a ``ValueError``. Memory stays within about
    ``2 * max_bytes`` whatever the file holds: only a regular file is read
    (``/dev/zero`` or a FIFO is refused), of at most ``max_bytes``; its entries'
    declared sizes are checked before reading (JSON counted 16-fold, for the
    Python objects it becomes; entries that expand more than 200-fold are
    refused); entries are stored or deflate only, decompressed in bounded
    chunks and never beyond the size they declare; every count the metadata
    gives is bounded by the tensors the file holds; and every tensor's name,
    shape and dtype is checked against the network the metadata describes
    *before* that network is allocated.

    The file's class must be registered: ``tabembed.load`` registers every
    tabembed estimator first (this function alone knows only the classes
    whose modules were imported).
    """
    meta, tensors = _read(path, max_bytes)
    name = meta.get("class")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"{path} names class {name!r}, which is not one of tabembed's "
                         f"estimators {sorted(_REGISTRY)}")
    try:
        return _REGISTRY[name].from_state(meta, tensors, device=device)
    except DamagedFileError as error:
        raise ValueError(f"{path} is damaged: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError) as error:
        # A file that passed the format checks but whose content does not fit together.
        missing = f"the entry {error} is missing" if isinstance(error, KeyError) else error
        raise ValueError(f"{path} has damaged or inconsistent metadata ({type(error).__name__}: "
                         f"{missing}); it cannot be loaded") from error


class DamagedFileError(ValueError):
    """A model file whose content is inconsistent (raised by the classes' ``from_state``)."""


def _read(path, max_bytes: int = MAX_BYTES) -> tuple[dict, dict]:
    stream, size = open_regular(path, "tabembed model file")
    with stream:
        if size > max_bytes:
            raise ValueError(f"{path} is {size:,} bytes, more than max_bytes={max_bytes:,}; if "
                             "you trust the file, pass a larger max_bytes")
        try:
            _check_directory(path, stream)
            with zipfile.ZipFile(stream) as archive:
                infos = archive.infolist()
                names = [info.filename for info in infos]
                unexpected = sorted(set(names) - set(_ENTRIES))
                if unexpected or len(names) != len(set(names)):
                    raise ValueError(
                        f"{path} is not a tabembed model file: it holds entries {names!r} (a "
                        f"tabembed model holds exactly {list(_ENTRIES)}); nothing was read")
                if not set(_ENTRIES) <= set(names):
                    raise ValueError(f"{path} is not a tabembed model file (it lacks "
                                     "metadata.json/weights.safetensors)")
                entries = {info.filename: info for info in infos}
                budget = _check_sizes(path, entries, max_bytes)
                meta = _parse_metadata(path, _read_entry(path, archive, entries["metadata.json"]))
                raw = _read_entry(path, archive, entries["weights.safetensors"])
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path} is not a tabembed model file (not a valid zip archive: "
                             f"{error}); tabembed never unpickles files") from error
        except (zlib.error, EOFError, NotImplementedError, RuntimeError, struct.error,
                OverflowError) as error:
            raise ValueError(f"{path} is a damaged zip archive ({type(error).__name__}: "
                             f"{error})") from error
    _check_tensor_header(path, raw, budget)
    try:
        tensors = load_tensors(raw)
    except Exception as error:
        raise ValueError(f"{path} has a corrupt weights.safetensors: {error}") from error
    return meta, tensors


def _check_directory(path, stream) -> None:
    """The archive's central directory, as zipfile will read it, is short: zipfile builds
    an object per entry it lists before anything can be checked."""
    end = getattr(zipfile, "_EndRecData", None)   # zipfile's own reading of the end record
    if end is None:
        return
    record = end(stream)
    if record is None:
        return   # not a zip archive: ZipFile says so
    directory = record[zipfile._ECD_SIZE]
    if directory > _DIRECTORY_BYTES:
        raise ValueError(f"{path} is not a tabembed model file: its zip directory takes "
                         f"{directory:,} bytes (a tabembed model's two entries take about "
                         "150); nothing was read")


def _check_sizes(path, entries: dict, max_bytes: int) -> int:
    """Refuse entries that are not stored or deflate, or whose declared size is too large,
    before reading a byte of them. Returns what is left of ``max_bytes``."""
    for info in entries.values():
        if info.compress_type not in _METHODS:
            raise ValueError(
                f"{path}: entry {info.filename} is compressed with method {info.compress_type} "
                f"({_method_name(info.compress_type)}); tabembed writes stored or deflate "
                "entries only: refusing it unread")
    weights, meta = entries["weights.safetensors"], entries["metadata.json"]
    cost = weights.file_size + _JSON_COST * meta.file_size
    if cost > max_bytes:
        raise ValueError(
            f"{path} declares {weights.file_size:,} bytes of weights and {meta.file_size:,} of "
            f"metadata, which may take {2 * cost:,} bytes of memory to load, more than "
            f"max_bytes={max_bytes:,} allows (loading stays within 2 x max_bytes; JSON counts "
            f"{_JSON_COST}-fold); if you trust the file, pass a larger max_bytes")
    for info in entries.values():
        if info.file_size > _RATIO_FREE_BYTES + MAX_RATIO * info.compress_size:
            raise ValueError(
                f"{path}: entry {info.filename} declares {info.file_size:,} bytes from "
                f"{info.compress_size:,} compressed; tabembed writes nothing that expands "
                f"more than {MAX_RATIO}-fold: refusing a likely zip bomb")
    return max_bytes - cost


def _method_name(method: int) -> str:
    names = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}
    return names.get(method, "unknown")


def _read_entry(path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """An entry's content, decompressed in chunks of 1 MiB: never more than it declares
    (zipfile's ``read`` decompresses up to 2 GiB at once, whatever the entry declares)."""
    chunks, total = [], 0
    with archive.open(info) as entry:
        while chunk := entry.read(_CHUNK):
            total += len(chunk)
            chunks.append(chunk)
    if total != info.file_size:
        raise ValueError(f"{path}: entry {info.filename} holds {total:,} bytes where it "
                         f"declares {info.file_size:,}: the archive is damaged")
    return b"".join(chunks)


def _parse_metadata(path, raw: bytes) -> dict:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{path} has a metadata.json that is not JSON text ({error}); it is "
                         "not a tabembed model file (tabembed never unpickles files)") from error
    if not isinstance(meta, dict) or meta.get("format") != "tabembed":
        raise ValueError(f"{path} is not a tabembed model file (no tabembed format marker)")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has an invalid format version {version!r} (expected a "
                         f"positive integer, at most {FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by tabembed {meta.get('tabembed_version')} in format version "
            f"{version}; this tabembed ({__version__}) reads up to version "
            f"{FORMAT_VERSION}: upgrade tabembed to load it"
        )
    return meta


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                       "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
                       "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


def _check_tensor_header(path, raw: bytes, budget: int) -> None:
    """The safetensors header is well formed, names only known dtypes and tensors that fit,
    and is short enough to parse within ``budget`` (what is left of ``max_bytes``)."""
    def damaged(why):
        return ValueError(f"{path} has a corrupt weights.safetensors: {why}")

    if len(raw) < 8:
        raise damaged("shorter than its header")
    length = int.from_bytes(raw[:8], "little")
    if length > len(raw) - 8:
        raise damaged(f"its header claims {length:,} bytes of a {len(raw):,}-byte entry")
    if _JSON_COST * length > budget:
        raise ValueError(f"{path}: the header of weights.safetensors is {length:,} bytes of "
                         f"JSON, more than max_bytes leaves room to parse; if you trust the "
                         "file, pass a larger max_bytes")
    try:
        header = json.loads(raw[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise damaged(f"its header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and entry.get("dtype") in _SAFETENSORS_DTYPES
                and isinstance(entry.get("shape"), list)
                and all(isinstance(n, int) and n >= 0 for n in entry["shape"])):
            raise damaged(f"tensor {name!r} has an invalid entry {str(entry)[:200]}")


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
_MODULE_LISTS = ("embedding_sizes", "side_embedding_sizes", "hidden", "bags")
_TUPLES = ("y_range", "hidden")


def load_network(meta: dict, tensors: dict, model_classes: Sequence[type]
                 ) -> tuple[torch.nn.Module, dict, list[dict]]:
    """Rebuild ``(model, model_kwargs, snapshots)`` saved by :func:`network_state`.

    The network is first built on the meta device (no memory) and its tensors'
    names, shapes and dtypes compared with the file's; only a match is built for real.
    """
    classes = {cls.__name__: cls for cls in model_classes}
    model_class = classes.get(meta.get("model_class"))
    if model_class is None:
        raise DamagedFileError(f"unknown model class {meta.get('model_class')!r} (expected one of "
                          f"{sorted(classes)})")
    if not isinstance(meta.get("model_kwargs"), dict):
        raise DamagedFileError("model_kwargs is missing or not a JSON object")
    kwargs = dict(meta["model_kwargs"])
    for key in _MODULE_LISTS:   # each item is a module with tensors: bounded by the file's
        if isinstance(kwargs.get(key), list) and len(kwargs[key]) > len(tensors):
            raise DamagedFileError(f"model_kwargs {key} lists {len(kwargs[key]):,} items, more "
                                   f"than the {len(tensors):,} tensors the file holds")
    try:
        for key in _TUPLE_LISTS:
            if key in kwargs:
                kwargs[key] = [tuple(size) for size in kwargs[key]]
        for key in _TUPLES:
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        with torch.device("meta"):
            expected = model_class(**kwargs).state_dict()
    except Exception as error:
        raise DamagedFileError(f"model_kwargs do not describe a {model_class.__name__} "
                          f"({type(error).__name__}: {error})") from None
    n_snapshots = meta.get("snapshots", 0)
    if not isinstance(n_snapshots, int) or isinstance(n_snapshots, bool) or n_snapshots < 0:
        raise DamagedFileError(f"snapshots must be a count, got {n_snapshots!r}")
    if n_snapshots * len(expected) > len(tensors):   # before a name of each is made
        raise DamagedFileError(f"the metadata counts {n_snapshots:,} snapshots of "
                               f"{len(expected)} tensors each, but weights.safetensors holds "
                               f"{len(tensors):,} tensors in all")
    prefixes = ["model.", *(f"snapshot{i}." for i in range(n_snapshots))]
    for prefix in prefixes:
        found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        _compare(prefix, expected, found)
    known = {f"{p}{k}" for p in prefixes for k in expected}
    stray = sorted(k for k in tensors if k.startswith(("model.", "snapshot")) and k not in known)
    if stray:
        raise DamagedFileError(f"weights.safetensors holds tensors no network has: {stray[:5]}")
    with torch.random.fork_rng(devices=[]):   # the caller's generator is left alone
        model = model_class(**kwargs)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    model.eval()
    snapshots = [{k.split(".", 1)[1]: v for k, v in tensors.items()
                  if k.startswith(f"snapshot{i}.")} for i in range(n_snapshots)]
    return model, kwargs, snapshots


def _compare(prefix: str, expected: dict, found: dict) -> None:
    """The file's tensors under ``prefix`` are exactly the network's: names, shapes, dtypes,
    and finite values."""
    missing = sorted(set(expected) - set(found))
    if missing:
        raise DamagedFileError(f"weights.safetensors lacks {[prefix + k for k in missing[:5]]}")
    for key, reference in expected.items():
        tensor = found[key]
        if tuple(tensor.shape) != tuple(reference.shape) or tensor.dtype != reference.dtype:
            raise DamagedFileError(
                f"tensor {prefix}{key} is {tensor.dtype} {tuple(tensor.shape)} in "
                f"weights.safetensors, but the network described by the metadata expects "
                f"{reference.dtype} {tuple(reference.shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DamagedFileError(f"tensor {prefix}{key} holds NaN or infinite values")


def check_ids(name: str, tensor, size: int) -> np.ndarray:
    """A 1-D int64 tensor of codes below ``size`` (a loaded file's index arrays)."""
    if tensor is None or tensor.dtype != torch.int64 or tensor.ndim != 1:
        raise DamagedFileError(f"{name} must be a 1-D int64 tensor")
    values = tensor.numpy()
    if len(values) and (values.min() < 0 or values.max() >= size):
        raise DamagedFileError(f"{name} holds codes outside [0, {size})")
    return values
