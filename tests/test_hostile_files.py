"""tabembed.load on hostile and damaged files: no code runs, memory stays bounded, and each
file gives a clear ValueError (never a KeyError, TypeError, UnicodeDecodeError, or an
IndexError from torch at predict)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

import tabembed
from tabembed import EmbeddingMLPClassifier, EmbeddingRecommender

SMALL = dict(epochs=1, lr=1e-2, hidden=(8,), random_state=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=80), "c": rng.choice(["x", "y", "z"], 80),
                      "n": np.where(rng.random(80) < 0.2, np.nan, rng.normal(size=80))})
    return X, (X["a"] > 0).astype(int)


@pytest.fixture(scope="module")
def model_file(data, tmp_path_factory):
    X, y = data
    path = tmp_path_factory.mktemp("model") / "model.tabembed"
    return EmbeddingMLPClassifier(**{**SMALL, "epochs": 3}, averaging="fge").fit(X, y).save(path)


@pytest.fixture(scope="module")
def recommender_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"user": rng.integers(0, 20, 300), "item": rng.integers(0, 30, 300)})
    y = rng.integers(1, 6, 300).astype(float)
    path = tmp_path_factory.mktemp("rec") / "rec.tabembed"
    return EmbeddingRecommender(epochs=1, random_state=0).fit(X, y).save(path)


def _parts(path) -> tuple[dict, dict]:
    with zipfile.ZipFile(path) as archive:
        return (json.loads(archive.read("metadata.json")),
                load_tensors(archive.read("weights.safetensors")))


def _write(path, entries: dict, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return Path(path)


def _rewrite(source, target, meta=None, tensors=None) -> Path:
    original_meta, original_tensors = _parts(source)
    meta = original_meta if meta is None else meta
    tensors = original_tensors if tensors is None else tensors
    return _write(target, {"metadata.json": json.dumps(meta),
                           "weights.safetensors": save_tensors(tensors)})


def _refused(path, match=None):
    """Loading raises a ValueError (and nothing else); return its message."""
    with pytest.raises(ValueError, match=match) as info:
        tabembed.load(path)
    return str(info.value)


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------ code execution

@pytest.mark.parametrize("entry", ["metadata.json", "weights.safetensors", "data.pkl",
                                   "archive/data.pkl", "model.pkl", "../evil.pkl"])
def test_pickle_payload_under_any_entry_name_never_runs(model_file, tmp_path, entry):
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Payload(marker))
    with zipfile.ZipFile(model_file) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries[entry] = payload
    _refused(_write(tmp_path / "hostile.tabembed", entries))
    assert not marker.exists()


def test_a_pickle_or_torch_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    _refused(raw, "not a tabembed model file")
    torch_file = tmp_path / "model.pt"
    torch.save({"payload": _Payload(marker)}, torch_file)   # a zip holding data.pkl
    _refused(torch_file, "not a tabembed model file")
    assert not marker.exists()


# ------------------------------------------------------------------ damaged archives

def test_truncated_files_are_refused(model_file, tmp_path):
    content = model_file.read_bytes()
    for fraction in (0.0, 0.01, 0.3, 0.5, 0.9, 0.999):
        path = tmp_path / f"cut{fraction}.tabembed"
        path.write_bytes(content[: int(len(content) * fraction)])
        _refused(path)


def test_bit_flips_are_refused_or_harmless(model_file, data, tmp_path):
    """A flipped bit either makes the file refused, or (in bytes the format ignores, such as
    timestamps) leaves a model that predicts exactly as before."""
    X, _ = data
    reference = tabembed.load(model_file).predict_proba(X)
    content = bytearray(model_file.read_bytes())
    rng = np.random.default_rng(0)
    positions = rng.choice(len(content), size=60, replace=False)
    outcomes = {"refused": 0, "harmless": 0}
    for position in positions:
        flipped = bytearray(content)
        flipped[position] ^= 1 << int(rng.integers(8))
        path = tmp_path / "flipped.tabembed"
        path.write_bytes(bytes(flipped))
        try:
            loaded = tabembed.load(path)
        except ValueError:
            outcomes["refused"] += 1
            continue
        np.testing.assert_array_equal(loaded.predict_proba(X), reference)
        outcomes["harmless"] += 1
    assert outcomes["refused"] > 40


def _declare_size(content: bytes, entry: str, size: int) -> bytes:
    """Edit the uncompressed size a zip declares for ``entry`` (central directory and local
    header), leaving the data as it is."""
    data = bytearray(content)
    name = entry.encode()
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:   # central directory records
        if data[start + 46: start + 46 + len(name)] == name:
            struct.pack_into("<I", data, start + 24, size)
        start += 4
    start = 0
    while (start := data.find(b"PK\x03\x04", start)) >= 0:   # local headers
        if data[start + 30: start + 30 + len(name)] == name:
            struct.pack_into("<I", data, start + 22, size)
        start += 4
    return bytes(data)


@pytest.mark.parametrize("entry", ["metadata.json", "weights.safetensors"])
def test_oversized_declared_entries_are_refused_before_reading(model_file, tmp_path, entry):
    path = tmp_path / "declared.tabembed"
    path.write_bytes(_declare_size(model_file.read_bytes(), entry, 0xFFFFFFF0))
    _refused(path, "declares")


def test_zip_bomb_and_max_bytes(model_file, tmp_path):
    meta, _ = _parts(model_file)
    bomb = _write(tmp_path / "bomb.tabembed", {
        "metadata.json": json.dumps(meta),
        "weights.safetensors": bytes(400 << 20)})   # 400 MB of zeros, ~400 kB compressed
    assert bomb.stat().st_size < 2 << 20
    _refused(bomb, "zip bomb")
    with pytest.raises(ValueError, match="max_bytes"):
        tabembed.load(model_file, max_bytes=1000)


@pytest.mark.parametrize("name", ["../metadata.json", "/etc/passwd", "a/../../b.json",
                                  "..\\..\\evil.json", "metadata.json/../x"])
def test_path_traversal_names_are_refused_and_nothing_is_written(model_file, tmp_path, name):
    with zipfile.ZipFile(model_file) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    entries[name] = b"{}"
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    _refused(_write(tmp_path / "traversal.tabembed", entries), "holds exactly")
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before


def test_duplicate_entries_are_refused(model_file, tmp_path):
    with zipfile.ZipFile(model_file) as archive:
        meta = archive.read("metadata.json")
        weights = archive.read("weights.safetensors")
    path = tmp_path / "duplicate.tabembed"
    with pytest.warns(UserWarning, match="Duplicate name"):
        _write(path, {"metadata.json": meta, "weights.safetensors": weights})
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("metadata.json", b'{"format": "tabembed"}')
    _refused(path, "holds exactly")


# ------------------------------------------------------------------ damaged metadata

def _edited(meta: dict, edit) -> dict:
    meta = copy.deepcopy(meta)
    edit(meta)
    return meta


def _pop(*keys):
    def edit(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


def _set(value, *keys):
    def edit(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


METADATA_EDITS = {
    "version string": _set("1", "version"),
    "version null": _set(None, "version"),
    "version float": _set(1.5, "version"),
    "no version": _pop("version"),
    "no class": _pop("class"),
    "class not a string": _set(["EmbeddingMLPClassifier"], "class"),
    "no params": _pop("params"),
    "unknown param": _set({"evil": 1}, "params"),
    "no preprocessor": _pop("preprocessor"),
    "no target": _pop("target"),
    "no fitted": _pop("fitted"),
    "no model kwargs": _pop("model_kwargs"),
    "model kwargs a list": _set([1, 2], "model_kwargs"),
    "unknown model class": _set("os.system", "model_class"),
    "snapshots negative": _set(-1, "snapshots"),
    "snapshots string": _set("2", "snapshots"),
    "snapshots too many": _set(5, "snapshots"),
    "hidden a string": _set("abc", "model_kwargs", "hidden"),
    "hidden huge": _set([10 ** 8, 10 ** 8], "model_kwargs", "hidden"),
    "embedding table huge": lambda m: m["model_kwargs"]["embedding_sizes"].__setitem__(
        0, [10 ** 9, 50]),
    "n_continuous changed": lambda m: m["model_kwargs"].__setitem__(
        "n_continuous", m["model_kwargs"]["n_continuous"] + 1),
    "d_out changed": _set(3, "model_kwargs", "d_out"),
    "task changed": _set("regression", "model_kwargs", "task"),
    "vocabulary larger than its table": lambda m: m["preprocessor"]["categories"]["c"].extend(
        ["w", "v", "u"]),
    "vocabulary and sizes larger than the table": lambda m: (
        m["preprocessor"]["categories"]["c"].extend(["w", "v", "u"]),
        m["preprocessor"]["embedding_sizes"]["c"].__setitem__(0, 7)),
    "vocabulary of lists": _set([[1], [2], [3]], "preprocessor", "categories", "c"),
    "no medians": _set({}, "preprocessor", "medians"),
    "std zero": lambda m: m["preprocessor"]["stds"].__setitem__("a", 0.0),
    "mean a string": lambda m: m["preprocessor"]["means"].__setitem__("a", "0"),
    "roles name unknown columns": _set(["zz"], "preprocessor", "cat_names"),
    "scaling unknown": _set("evil", "preprocessor", "params", "continuous_scaling"),
    "one class": _set([0], "target", "classes"),
    "task unknown": _set("evil", "target", "task"),
    "history ragged": _set({"epoch": [1, 2], "train_loss": [0.1]}, "history"),
    "lr garbage": _set({"evil": 1}, "fitted", "lr"),
}


@pytest.mark.parametrize("edit", METADATA_EDITS.values(), ids=METADATA_EDITS.keys())
def test_damaged_metadata_gives_a_clear_value_error(model_file, tmp_path, edit):
    meta, _ = _parts(model_file)
    path = _rewrite(model_file, tmp_path / "edited.tabembed", meta=_edited(meta, edit))
    message = _refused(path)
    assert str(path) in message


def test_metadata_that_is_not_json_text(model_file, tmp_path):
    _, tensors = _parts(model_file)
    for content in (pickle.dumps({"format": "tabembed"}), b"\xff\xfe\x00garbage",
                    b"[1, 2, 3]", b'"tabembed"', b"{" * 100_000):
        path = _write(tmp_path / "meta.tabembed", {"metadata.json": content,
                                                   "weights.safetensors": save_tensors(tensors)})
        _refused(path)


# ------------------------------------------------------------------ damaged weights

def _tensor_edit(edit):
    def apply(tensors):
        tensors = {k: v.clone() for k, v in tensors.items()}
        edit(tensors)
        return tensors
    return apply


def _first(prefix):
    return lambda tensors: next(k for k in tensors if k.startswith(prefix)
                                and tensors[k].is_floating_point())


TENSOR_EDITS = {
    "int8 weights": lambda t: t.update({k: v.to(torch.int8) for k, v in t.items()
                                        if v.is_floating_point()}),
    "float16 weights": lambda t: t.update({k: v.half() for k, v in t.items()
                                           if v.is_floating_point()}),
    "float64 weights": lambda t: t.update({k: v.double() for k, v in t.items()
                                           if v.is_floating_point()}),
    "nan weight": lambda t: t[_first("model.")(t)].view(-1).__setitem__(0, float("nan")),
    "inf snapshot weight": lambda t: t[_first("snapshot0.")(t)].view(-1).__setitem__(
        0, float("inf")),
    "embedding shape": lambda t: t.update({"model.embeddings.embeddings.0.weight":
                                           torch.zeros(2, 2)}),
    "missing tensor": lambda t: t.pop("model.embeddings.embeddings.0.weight"),
    "stray tensor": lambda t: t.update({"model.evil": torch.zeros(1)}),
    "stray snapshot": lambda t: t.update({"snapshot9.x": torch.zeros(1)}),
    "no tensors": lambda t: t.clear(),
}


@pytest.mark.parametrize("edit", TENSOR_EDITS.values(), ids=TENSOR_EDITS.keys())
def test_damaged_weights_give_a_clear_value_error(model_file, tmp_path, edit):
    _, tensors = _parts(model_file)
    path = _rewrite(model_file, tmp_path / "weights.tabembed",
                    tensors=_tensor_edit(edit)(tensors))
    _refused(path)


def test_safetensors_header_damage(model_file, tmp_path):
    meta, tensors = _parts(model_file)
    raw = save_tensors(tensors)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    variants = [
        (10 ** 15).to_bytes(8, "little") + raw[8:],           # header longer than the file
        raw[:8] + b"\xff" * length + raw[8 + length:],        # header not text
        raw[:-100],                                           # data cut short
    ]
    for change in ({"dtype": "PICKLE"}, {"shape": [-1, 3]}, {"shape": [10 ** 12, 10 ** 6]},
                   {"data_offsets": [0, 10 ** 12]}):
        edited = {**header, name: {**header[name], **change}}
        text = json.dumps(edited).encode()
        variants.append(len(text).to_bytes(8, "little") + text + raw[8 + length:])
    for content in variants:
        path = _write(tmp_path / "header.tabembed", {"metadata.json": json.dumps(meta),
                                                     "weights.safetensors": content})
        _refused(path, "weights.safetensors")


def test_recommender_files_are_checked_too(recommender_file, tmp_path):
    meta, tensors = _parts(recommender_file)
    edits = [
        ("seen ids out of range", None, lambda t: t["seen_users"].__setitem__(0, 10 ** 6)),
        ("seen ids float", None, lambda t: t.update(seen_items=t["seen_items"].double())),
        ("no seen ids", None, lambda t: t.pop("seen_users")),
        ("more users than rows", _set(10 ** 7, "model_kwargs", "n_users"), None),
        ("vocabulary larger", lambda m: m["preprocessor"]["categories"]["user"].extend(
            [1000, 1001]), None),
        ("no tables", _pop("recommender", "user_table"), None),
    ]
    for _, meta_edit, tensor_edit in edits:
        path = _rewrite(recommender_file, tmp_path / "rec.tabembed",
                        meta=_edited(meta, meta_edit) if meta_edit else meta,
                        tensors=_tensor_edit(tensor_edit)(tensors) if tensor_edit else tensors)
        _refused(path)


def test_recommender_files_with_bags_are_checked_too(tmp_path):
    # A vocabulary or a bag count that disagrees with the model's bag tables would index
    # past a table at predict.
    source = Path(__file__).resolve().parent / "data" / "padded_bags" / "dot.tabembed"
    meta, tensors = _parts(source)
    edits = [
        lambda m: m["recommender"]["bags"]["vocabulary"][0].extend(["p", "q"]),
        lambda m: m["recommender"]["bags"].update(columns=[], vocabulary=[], lengths=[]),
        lambda m: m["model_kwargs"]["bags"].append([5, 3, "user"]),
    ]
    for edit in edits:
        edited = copy.deepcopy(meta)
        edit(edited)
        _refused(_rewrite(source, tmp_path / "bags.tabembed", meta=edited, tensors=tensors))


# ------------------------------------------------------------------ memory

_PEAK = textwrap.dedent("""
    import resource, sys
    # A regression must fail this test, not swap the machine: cap the address space.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import tabembed
    for path in sys.argv[1:]:
        error = None
        try:
            tabembed.load(path)
        except (ValueError, MemoryError, RuntimeError) as exc:
            error = type(exc).__name__
        print(error, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
""")
# Linux carries ru_maxrss across fork and exec: a process started straight from pytest
# would report pytest's own peak. A small Python process in between starts it afresh.
_LAUNCH = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"

# Peak resident memory of a process that imports tabembed (and torch) and loads a small
# valid model: about 0.45 GB here. No hostile file may push it past this bound, nor add
# more than 150 MB to what the valid file needed.
PEAK_BOUND_KB = 1_200_000


def test_hostile_files_load_in_bounded_memory(model_file, tmp_path):
    """One process loads a valid file, then each hostile one; its peak RSS (ru_maxrss,
    which only grows) is read after each."""
    meta, tensors = _parts(model_file)
    hostile = {
        "huge embedding table in the kwargs": _rewrite(
            model_file, tmp_path / "table.tabembed",
            meta=_edited(meta, METADATA_EDITS["embedding table huge"])),
        "huge hidden layers in the kwargs": _rewrite(
            model_file, tmp_path / "hidden.tabembed",
            meta=_edited(meta, METADATA_EDITS["hidden huge"])),
        "declared 4 GB": tmp_path / "declared.tabembed",
        "zip bomb": _write(tmp_path / "bomb.tabembed", {
            "metadata.json": json.dumps(meta), "weights.safetensors": bytes(600 << 20)}),
        "safetensors header claiming 1e18 elements": _write(
            tmp_path / "header.tabembed", {"metadata.json": json.dumps(meta),
                                           "weights.safetensors": _huge_header(tensors)}),
    }
    hostile["declared 4 GB"].write_bytes(_declare_size(model_file.read_bytes(),
                                                       "weights.safetensors", 0xFFFFFFF0))
    result = subprocess.run([sys.executable, "-c", _LAUNCH, sys.executable, "-c", _PEAK,
                             str(model_file), *map(str, hostile.values())],
                            capture_output=True, text=True, timeout=300)
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 1 + len(hostile), result.stderr[-2000:]
    (baseline_error, baseline), *rest = [(error, int(peak)) for error, peak in lines]
    assert baseline_error == "None"
    for name, (error, peak) in zip(hostile, rest):
        print(f"peak RSS after {name}: {peak} kB (after the valid file: {baseline} kB)")
        assert error == "ValueError", name
        assert peak < PEAK_BOUND_KB, (name, peak)
        assert peak < baseline + 150_000, (name, peak, baseline)


def _huge_header(tensors) -> bytes:
    raw = save_tensors(tensors)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10 ** 9, 10 ** 9]
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + raw[8 + length:]


# ------------------------------------------------------------------ bounded by max_bytes

MAX_BYTES = 64 << 20

# Each path is loaded with max_bytes; the peak RSS is read after each (it only grows).
_BOUNDED = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))   # fail, never swap
    import tabembed
    max_bytes = int(sys.argv[1])
    for path in sys.argv[2:]:
        error = None
        try:
            tabembed.load(path, max_bytes=max_bytes)
        except (ValueError, MemoryError, RuntimeError) as exc:
            error = type(exc).__name__
        print(error, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
""")


def _bomb(path, meta, method, size=200 << 20, declared=1000) -> Path:
    """weights.safetensors of ``size`` zero bytes, compressed by ``method``, declaring
    ``declared`` bytes: zipfile trusted that and decompressed everything at once."""
    _write(path, {"metadata.json": json.dumps(meta), "weights.safetensors": bytes(size)},
           compression=method)
    path.write_bytes(_declare_size(path.read_bytes(), "weights.safetensors", declared))
    return path


def _long_directory(path, n_entries=400_000) -> Path:
    """A zip whose central directory lists ``n_entries`` entries (all at one local header):
    zipfile builds an object for each before anything can be checked."""
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, 6, 0) + b"000000"
    records = b"".join(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0,
                                   0, 6, 0, 0, 0, 0, 0, 0) + b"%06d" % i
                       for i in range(n_entries))
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, len(records), len(local), 0)
    path.write_bytes(local + records + end)
    return path


def _header_bomb(tensors, n_entries=200_000) -> bytes:
    """A safetensors header of ``n_entries`` empty tensors: megabytes of JSON to parse."""
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
              for i in range(n_entries)}
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs and rlimits")
def test_hostile_files_stay_within_twice_max_bytes(model_file, tmp_path):
    """bzip2, LZMA and deflate bombs declaring 1,000 bytes, a count of 10**8 snapshots, 10**5
    embedding tables, a JSON bomb, a zip directory of 400,000 entries, a safetensors header
    of 200,000 tensors, /dev/zero and a FIFO: each is a ValueError, and the process's peak
    memory grows by less than 2 x max_bytes (it grew by gigabytes, or hung)."""
    meta, tensors = _parts(model_file)
    embeddings = _edited(meta, _set([[2, 1]] * 100_000, "model_kwargs", "embedding_sizes"))
    hostile = {
        "bzip2 bomb": _bomb(tmp_path / "bzip2.tabembed", meta, zipfile.ZIP_BZIP2),
        "LZMA bomb": _bomb(tmp_path / "lzma.tabembed", meta, zipfile.ZIP_LZMA),
        "deflate bomb": _bomb(tmp_path / "deflate.tabembed", meta, zipfile.ZIP_DEFLATED),
        "deflate bomb declaring max_bytes": _bomb(
            tmp_path / "deflate_max.tabembed", meta, zipfile.ZIP_DEFLATED,
            declared=MAX_BYTES - 100_000),
        "snapshots 10**8": _rewrite(model_file, tmp_path / "snapshots.tabembed",
                                    meta=_edited(meta, _set(10 ** 8, "snapshots"))),
        "10**5 embedding tables": _rewrite(model_file, tmp_path / "tables.tabembed",
                                           meta=embeddings),
        "JSON bomb": _write(tmp_path / "json.tabembed", {
            "metadata.json": "[" + ",".join(["[]"] * 3_000_000) + "]",
            "weights.safetensors": save_tensors(tensors)}),
        "zip directory of 400,000 entries": _long_directory(tmp_path / "directory.tabembed"),
        "safetensors header of 200,000 tensors": _write(
            tmp_path / "header.tabembed", {"metadata.json": json.dumps(meta),
                                           "weights.safetensors": _header_bomb(tensors)}),
        "/dev/zero": Path("/dev/zero"),
        "FIFO": tmp_path / "fifo.tabembed",
    }
    os.mkfifo(hostile["FIFO"])
    assert all(p.stat().st_size < MAX_BYTES for p in hostile.values() if p.is_file())
    with _unblocking(hostile["FIFO"]):
        result = subprocess.run([sys.executable, "-c", _LAUNCH, sys.executable, "-c", _BOUNDED,
                                 str(MAX_BYTES), str(model_file), *map(str, hostile.values())],
                                capture_output=True, text=True, timeout=300)
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 1 + len(hostile), result.stderr[-2000:]
    (baseline_error, baseline), *rest = [(error, int(peak)) for error, peak in lines]
    assert baseline_error == "None"
    failures = []
    for name, (error, peak) in zip(hostile, rest):
        print(f"{name}: {error}, peak RSS {peak - baseline:+,} kB over the valid file's")
        if error != "ValueError" or peak - baseline >= 2 * MAX_BYTES // 1024:
            failures.append((name, error, peak - baseline))
    assert not failures


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_entries_compressed_otherwise_than_deflate_are_refused_unread(model_file, tmp_path,
                                                                       method):
    meta, tensors = _parts(model_file)
    path = _write(tmp_path / "other.tabembed", {"metadata.json": json.dumps(meta),
                                                "weights.safetensors": save_tensors(tensors)},
                  compression=method)
    _refused(path, "stored or deflate entries only")


def test_an_entry_longer_than_it_declares_is_refused(model_file, tmp_path):
    """Decompression stops at the declared size; the rest is never produced."""
    path = tmp_path / "longer.tabembed"
    path.write_bytes(_declare_size(model_file.read_bytes(), "weights.safetensors", 1000))
    _refused(path, "CRC|damaged|declares")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("kind", ["directory", "FIFO"])
def test_non_regular_files_are_refused_before_reading(tmp_path, kind):
    """(/dev/zero, which a regression reads until memory runs out, is tried in the capped
    process of test_hostile_files_stay_within_twice_max_bytes.)"""
    path = {"directory": tmp_path, "FIFO": tmp_path / "fifo"}[kind]
    if kind == "FIFO":
        os.mkfifo(path)    # opening it to read waits for a writer
    with _unblocking(path) if kind == "FIFO" else contextlib.nullcontext():
        _refused(path, "not a regular file")


@contextlib.contextmanager
def _unblocking(fifo):
    """While the block runs, open ``fifo`` to write (and close it) whenever a reader waits
    on it, so that a regression reading it gets an empty file and fails instead of hanging."""
    done = threading.Event()

    def unblock():
        while not done.wait(0.2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:   # ENXIO: no reader waits, as it should be
                pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_valid_file_still_loads_and_predicts(model_file, data):
    X, _ = data
    loaded = tabembed.load(model_file)
    assert np.isfinite(loaded.predict_proba(X)).all()


# ------------------------------------------------------------------ Parquet sources

@pytest.fixture(scope="module")
def parquet_source(tmp_path_factory):
    """A folder of two Parquet files, and a classifier fitted from it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=400), "c": rng.choice(["x", "y", "z"], 400)})
    frame["target"] = (frame["a"] > 0).astype(int)
    folder = tmp_path_factory.mktemp("parquet") / "good"
    folder.mkdir()
    for i in range(2):
        pq.write_table(pa.Table.from_pandas(frame.iloc[i * 200:(i + 1) * 200],
                                            preserve_index=False),
                       folder / f"part-{i}.parquet", row_group_size=100)
    model = EmbeddingMLPClassifier(**SMALL).fit(folder, y="target")
    return folder, model


def _damaged_source(folder, tmp_path, content: bytes) -> Path:
    damaged = tmp_path / "damaged"
    damaged.mkdir(exist_ok=True)
    (damaged / "part-0.parquet").write_bytes((folder / "part-0.parquet").read_bytes())
    (damaged / "part-1.parquet").write_bytes(content)
    return damaged


def test_damaged_parquet_files_are_a_value_error_naming_the_file(parquet_source, tmp_path):
    """Truncated, empty, garbage, a pickle, a footer alone: fit and predict_to_parquet give a
    ValueError naming the file; no code runs and nothing is written."""
    folder, model = parquet_source
    raw = (folder / "part-1.parquet").read_bytes()
    marker = tmp_path / "executed"
    cases = {"truncated": raw[:len(raw) // 2], "empty": b"", "garbage": b"hello" * 100,
             "pickle": pickle.dumps(_Payload(marker)), "footer alone": b"PAR1" + raw[-200:]}
    for name, content in cases.items():
        damaged = _damaged_source(folder, tmp_path, content)
        with pytest.raises(ValueError, match=r"part-1\.parquet"):
            EmbeddingMLPClassifier(**SMALL).fit(damaged, y="target")
        with pytest.raises(ValueError, match=r"part-1\.parquet"):
            model.predict_to_parquet(damaged, tmp_path / "out.parquet")
        assert not (tmp_path / "out.parquet").exists(), name
    assert not marker.exists()


def test_bit_flips_in_parquet_files_are_named_or_harmless(parquet_source, tmp_path):
    """Flipped bytes in a source file: a ValueError naming the file, or (bytes Parquet does
    not check, such as values) a finished run; never another exception."""
    folder, model = parquet_source
    raw = bytearray((folder / "part-1.parquet").read_bytes())
    rng = np.random.default_rng(0)
    outcomes = {"named": 0, "finished": 0}
    for _ in range(20):
        flipped = bytearray(raw)
        for position in rng.choice(len(raw) - 8, size=8, replace=False):
            flipped[4 + position] ^= 0xFF
        damaged = _damaged_source(folder, tmp_path, bytes(flipped))
        for run, arguments in ((EmbeddingMLPClassifier(**SMALL).fit, (damaged, "target")),
                               (model.predict_to_parquet, (damaged, tmp_path / "out.parquet"))):
            try:
                run(*arguments)
            except ValueError as error:
                assert "part-1.parquet" in str(error), error
                outcomes["named"] += 1
            else:
                outcomes["finished"] += 1
    assert outcomes["named"] > 20


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_predict_to_parquet_never_writes_into_a_fifo_or_device(parquet_source, tmp_path):
    folder, model = parquet_source
    fifo = tmp_path / "out.parquet"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="FIFO"):
        model.predict_to_parquet(folder, fifo)
    assert not fifo.is_file() and fifo.exists()
