"""The reliability table: inputs tried, faults injected and files tried, with the outcome
of each, as a Markdown table (docs/RELIABILITY.md holds its output).

Every row runs here and now; nothing is copied from elsewhere. It takes about a minute
on a 2-core machine.
Run: ``python bench/reliability.py > /tmp/table.md``
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import resource
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

import tabembed
from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    TabularPreprocessor,
)

SMALL = dict(epochs=2, lr=1e-2, hidden=(16,), random_state=0)
ROWS: list[tuple[str, str, str]] = []


def probe(section: str, case: str, action) -> None:
    """Run ``action``; record what happened: its result, warnings, or the exception."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = action()
        except Exception as error:   # the outcome is the point: record any exception
            outcome = f"**{type(error).__name__}**: {_short(str(error))}"
        else:
            outcome = result if isinstance(result, str) else "ok"
            ours = [w for w in caught if "tabembed" in w.filename or "tabembed" in
                    str(w.message) or issubclass(w.category, UserWarning)]
            if ours:
                outcome += f"; warns: {_short(str(ours[0].message))}"
    ROWS.append((section, case, outcome))
    print(f"{section} | {case} | {outcome}", file=sys.stderr, flush=True)


def _short(text: str, limit: int = 150) -> str:
    text = " ".join(text.split()).replace("|", "/")
    for folder in (str(WORK), tempfile.gettempdir()):
        text = text.replace(folder, "…")
    return text if len(text) <= limit else text[: limit - 1] + "…"


WORK = Path(tempfile.mkdtemp(prefix="tabembed-reliability-"))
RNG = np.random.default_rng(0)
X = pd.DataFrame({"a": RNG.normal(size=200), "c": RNG.choice(["x", "y", "z"], 200),
                  "flag": RNG.random(200) < 0.5, "code": RNG.integers(0, 5, 200),
                  "when": pd.date_range("2024-01-01", periods=200, freq="5h",
                                        tz="Europe/Paris")})
Y = ((X["a"] > 0) ^ X["flag"]).astype(int)


def _fitted():
    return EmbeddingMLPClassifier(**SMALL).fit(X, Y)


MODEL = _fitted()
REFERENCE = MODEL.predict_proba(X)


def _same(other) -> str:
    return ("ok: identical predictions" if np.array_equal(other, REFERENCE)
            else f"ok: max difference {np.abs(other - REFERENCE).max():.2g}")


# ------------------------------------------------------------------ inputs

def inputs() -> None:
    s = "input"
    probe(s, "1e39 (beyond float32) in a continuous column, at fit",
          lambda: EmbeddingMLPClassifier(**SMALL).fit(X.assign(a=X["a"].where(X.index != 3,
                                                                                 1e39)), Y))
    probe(s, "1e39 in a continuous column, at predict",
          lambda: MODEL.predict(X.assign(a=1e39)))
    probe(s, "1e30 at predict in a column whose training std is 1e-7",
          lambda: TabularPreprocessor().fit(pd.DataFrame({"t": np.linspace(0, 3e-7, 9)}))
          .transform_arrays(pd.DataFrame({"t": [1e33]})))
    def huge_target():
        predictions = EmbeddingMLPRegressor(**SMALL).fit(X, (X["a"] + 3) * 1e200).predict(X)
        finite = "finite" if np.isfinite(predictions).all() else "NOT FINITE"
        return f"ok: predictions {finite}, largest {np.abs(predictions).max():.2g}"
    probe(s, "regression target ~1e200", huge_target)
    probe(s, "regression target 1.7e308", lambda: EmbeddingMLPRegressor(**SMALL).fit(
        X, np.where(X["a"] > 0, 1.7e308, 0.0)))
    target = pd.Series(Y.astype(object))
    probe(s, "pd.NA in an object-dtype target",
          lambda: EmbeddingMLPClassifier(**SMALL).fit(X, target.where(target.index != 0, pd.NA)))
    probe(s, "inf in an object-dtype regression target",
          lambda: EmbeddingMLPRegressor(**SMALL).fit(X, target.where(target.index != 0,
                                                                     np.inf)))
    probe(s, "a single class", lambda: EmbeddingMLPClassifier(**SMALL).fit(X, np.zeros(200)))
    probe(s, "one row", lambda: EmbeddingMLPClassifier(**SMALL).fit(X.head(1), [1]))
    probe(s, "NaN at predict in a column without NaN in training",
          lambda: "ok: filled with the training median" if np.isfinite(
              MODEL.predict_proba(X.assign(a=np.nan))).all() else "NaN output")
    probe(s, "a string in a continuous column", lambda: MODEL.predict(X.assign(a="12,5")))
    probe(s, "bool column given as 0/1 at predict",
          lambda: MODEL.predict(X.assign(flag=X["flag"].astype(int))) is not None and "ok")
    probe(s, "integer categorical given as strings at predict",
          lambda: MODEL.predict(X.assign(code=X["code"].astype(str))) is not None and "ok")
    probe(s, "integer categorical given as floats at predict",
          lambda: _same(MODEL.predict_proba(X.assign(code=X["code"].astype(float)))))
    probe(s, "an extra column at predict (warns once per model)",
          lambda: MODEL.predict(X.assign(extra=1)) is not None and "ok")
    probe(s, "a missing column at predict", lambda: MODEL.predict(X.drop(columns="c")))
    probe(s, "columns reordered at predict",
          lambda: _same(MODEL.predict_proba(X[X.columns[::-1]])))
    probe(s, "tz-aware dates given in another timezone",
          lambda: _same(MODEL.predict_proba(X.assign(when=X["when"].dt.tz_convert("UTC")))))
    probe(s, "tz-aware training dates given naive",
          lambda: MODEL.predict(X.assign(when=X["when"].dt.tz_localize(None))))
    probe(s, "ISO date strings in an undeclared column",
          lambda: TabularPreprocessor().fit(X.assign(when=X["when"].dt.strftime("%Y-%m-%d")))
          and "ok: categorical")

    def column_transformer():
        from sklearn.compose import ColumnTransformer
        from sklearn.preprocessing import StandardScaler
        array = ColumnTransformer([("s", StandardScaler(), ["a", "code"]),
                                   ("p", "passthrough", ["c"])]).fit_transform(X)
        fitted = TabularPreprocessor().fit(array)
        return (f"ok: {array.dtype} array -> continuous {fitted.cont_names_}, "
                f"categorical {fitted.cat_names_}")
    probe(s, "ColumnTransformer numpy output (object array of numbers and strings)",
          column_transformer)
    import pyarrow as pa
    import pyarrow.dataset as ds
    probe(s, "pyarrow.Table", lambda: _same(MODEL.predict_proba(pa.Table.from_pandas(X))))
    X.to_parquet(WORK / "data.parquet")
    probe(s, "pyarrow.dataset.Dataset to predict",
          lambda: MODEL.predict(ds.dataset(WORK / "data.parquet")))
    probe(s, "lr='bogus'", lambda: EmbeddingMLPClassifier(lr="bogus").fit(X, Y))

    def int_names():
        named = X.drop(columns="when").set_axis([0, 1.5, 2, 3], axis=1)
        model = EmbeddingMLPClassifier(**SMALL).fit(named, Y)
        loaded = tabembed.load(model.save(WORK / "names.tabembed"))
        same = np.array_equal(loaded.predict_proba(named), model.predict_proba(named))
        return "ok: identical predictions after save/load" if same else "differ"
    probe(s, "int and float column names through save/load", int_names)

    def recommender_int_columns():
        ratings = pd.DataFrame({0: RNG.integers(0, 20, 300), 1: RNG.integers(0, 30, 300)})
        r = EmbeddingRecommender(user_column=0, item_column=1, epochs=1, random_state=0)
        r.fit(ratings, RNG.integers(1, 6, 300).astype(float))
        loaded = tabembed.load(r.save(WORK / "rec.tabembed"))
        return ("ok: identical predictions after save/load"
                if np.array_equal(loaded.predict(ratings), r.predict(ratings)) else "differ")
    probe(s, "recommender with user_column=0 through save/load", recommender_int_columns)
    probe(s, "MultiIndex column names at fit", lambda: EmbeddingMLPClassifier(**SMALL).fit(
        X.set_axis(pd.MultiIndex.from_tuples([("g", c) for c in X.columns]), axis=1), Y))
    probe(s, "recommend(user, k=-1)", lambda: _recommender().recommend(1, k=-1))
    probe(s, "ratings of 1e200", lambda: EmbeddingRecommender(epochs=1).fit(
        pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3]}), [1.0, 2.0, 1e200]))


def parquet() -> None:
    """Parquet sources: files whose columns differ, damaged files."""
    s = "parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = X.drop(columns="when").assign(target=Y)
    streamed = EmbeddingMLPClassifier(**SMALL).fit(_parts("good", frame), y="target")

    def fit(folder):
        EmbeddingMLPClassifier(**SMALL).fit(folder, y="target")
        return "ok: fitted"

    def predict(folder):
        return _written(streamed.predict_to_parquet(folder, WORK / "p.parquet"))

    lacking = _parts("lacking", frame, edit=lambda t: t.drop_columns(["a"]))
    probe(s, "a file lacking a feature column, at fit", lambda: fit(lacking))
    probe(s, "a file lacking a feature column, at predict_to_parquet", lambda: predict(lacking))
    later = _parts("later", frame, edit=lambda t: t.append_column("late", pa.array(
        np.ones(t.num_rows))))
    probe(s, "a column only in a later file, at fit", lambda: fit(later))
    retyped = _parts("retyped", frame, edit=lambda t: t.set_column(
        t.schema.get_field_index("a"), "a", pa.array([f"{v:.2f} kg" for v in
                                                     t["a"].to_pylist()])))
    probe(s, "a column of text where the first file has numbers", lambda: fit(retyped))
    single = WORK / "one.parquet"
    pq.write_table(pa.Table.from_pandas(frame.drop(columns="c"), preserve_index=False), single)
    probe(s, "a single source file lacking a feature, at predict_to_parquet",
          lambda: predict(single))
    truncated = _parts("truncated", frame)
    (truncated / "part-1.parquet").write_bytes((truncated / "part-1.parquet").read_bytes()[:300])
    probe(s, "a truncated file, at fit", lambda: fit(truncated))

    def flipped():
        raw = (WORK / "good" / "part-1.parquet").read_bytes()
        rng = np.random.default_rng(2)
        outcomes = {"named the file": 0, "finished": 0, "other": 0}
        for _ in range(40):
            damaged = bytearray(raw)
            for position in rng.choice(len(raw) - 8, 8, replace=False):
                damaged[4 + position] ^= 0xFF
            folder = _parts("flip", frame)
            (folder / "part-1.parquet").write_bytes(bytes(damaged))
            try:
                predict(folder)
            except ValueError as error:
                outcomes["named the file" if "part-1.parquet" in str(error) else "other"] += 1
            else:
                outcomes["finished"] += 1
        return "ok: " + ", ".join(f"{n} {k}" for k, n in outcomes.items())
    probe(s, "40 files with 8 flipped bytes each, at predict_to_parquet", flipped)
    source = WORK / "good" / "part-0.parquet"
    probe(s, "predict_to_parquet with the destination its source file",
          lambda: _written(streamed.predict_to_parquet(source, source)))
    probe(s, "predict_to_parquet with the destination inside the source folder",
          lambda: _written(streamed.predict_to_parquet(WORK / "good",
                                                       WORK / "good" / "p.parquet")))
    own = WORK / "own.parquet"
    pq.write_table(pa.Table.from_pandas(frame.assign(prediction=-1), preserve_index=False), own)
    probe(s, "keep_columns=['prediction'] on a source with its own 'prediction' column",
          lambda: _written(streamed.predict_to_parquet(own, WORK / "p.parquet",
                                                       keep_columns=["prediction"])))


def _parts(name: str, frame: pd.DataFrame, edit=None) -> Path:
    """``frame`` in two Parquet files in WORK/name; ``edit(table)`` changes the second."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for i, part in enumerate((frame.iloc[:100], frame.iloc[100:])):
        table = pa.Table.from_pandas(part, preserve_index=False)
        pq.write_table(edit(table) if edit and i == 1 else table, folder / f"part-{i}.parquet",
                       row_group_size=50)
    return folder


def _written(path) -> str:
    return f"ok: wrote {len(pd.read_parquet(path))} rows"


def _recommender():
    ratings = pd.DataFrame({"user": RNG.integers(0, 20, 300), "item": RNG.integers(0, 30, 300)})
    return EmbeddingRecommender(epochs=1, random_state=0).fit(
        ratings, RNG.integers(1, 6, 300).astype(float))


# ------------------------------------------------------------------ recommenders (issue 31)

def recommenders() -> None:
    import torch

    from tabembed.recommenders import ImplicitRecommender
    from tabembed.recommenders.interaction_data import encode

    s = "recommender"

    def big_bag():
        tags = "|".join(f"tag{i}" for i in range(20_000))
        items = np.concatenate([RNG.integers(0, 50, 600), np.full(3_000, 50)])
        frame = pd.DataFrame({"user": RNG.integers(0, 300, len(items)), "item": items,
                              "tags": [tags if i == 50 else f"t{i % 7}" for i in items]})
        start = time.perf_counter()
        r = EmbeddingRecommender(epochs=1, ranking="rating", random_state=0).fit(
            frame, RNG.integers(1, 6, len(frame)).astype(float))
        seconds = time.perf_counter() - start
        codes, _ = encode(r.preprocessor_, r.bags_, r.bags_.canonical(frame))
        tokens, _ = r.bags_.table("tags")
        return (f"ok: fit {seconds:.1f} s; codes {tuple(codes.shape)}, {len(tokens):,} tokens "
                "in the bag table (padded per row: 3,600 x 20,002 codes)")
    probe(s, "one item with 20,000 tags in 3,000 of 3,600 ratings", big_bag)

    genres = pd.DataFrame({"user": [0, 0, 1, 1], "item": [0, 1, 0, 1],
                           "genres": ["a|b", "b", "a|b", "b"]})
    with_bags = EmbeddingRecommender(epochs=1, ranking="rating", random_state=0).fit(
        genres, [1.0, 2.0, 3.0, 4.0])
    probe(s, "predict on a frame without the multi-valued column",
          lambda: with_bags.predict(genres.drop(columns="genres")))
    probe(s, "similar_items of a new item whose tags are all unknown",
          lambda: with_bags.similar_items("new", item_features={"genres": "zz|yy"}))

    def vocabulary_edit():
        path = with_bags.save(WORK / "bags.tabembed")
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
            weights = archive.read("weights.safetensors")
        meta["recommender"]["bags"]["vocabulary"][0].extend(["p", "q"])
        edited = WORK / "bags-edited.tabembed"
        with zipfile.ZipFile(edited, "w") as archive:
            archive.writestr("metadata.json", json.dumps(meta))
            archive.writestr("weights.safetensors", weights)
        return tabembed.load(edited)
    probe(s, "file: a bag vocabulary longer than its table", vocabulary_edit)

    def later_column():
        folder = WORK / "rec-later"
        folder.mkdir()
        pd.DataFrame({"user": [0, 1], "item": [0, 1], "rating": [1.0, 2.0]}).to_parquet(
            folder / "part-0.parquet")
        pd.DataFrame({"user": [0, 1], "item": [1, 0], "rating": [1.0, 2.0],
                      "late": 1.5}).to_parquet(folder / "part-1.parquet")
        return EmbeddingRecommender(epochs=1, ranking="rating").fit(folder, y="rating")
    probe(s, "Parquet fit: a column only in a later file", later_column)
    probe(s, "ids 1 and '1' in one column", lambda: EmbeddingRecommender(epochs=1).fit(
        pd.DataFrame({"user": pd.Series([1, "1", 2, 3], dtype=object),
                      "item": [1, 2, 3, 1]}), [1.0, 2.0, 3.0, 4.0]))
    probe(s, "ImplicitRecommender with no positive rows", lambda: ImplicitRecommender(
        epochs=1).fit(pd.DataFrame({"user": [1, 2], "item": [1, 2]}), [0.0, 0.0]))

    def global_rng():
        state = torch.get_rng_state()
        r = _recommender()
        r.predict(pd.DataFrame({"user": [1], "item": [2]}))
        tabembed.load(r.save(WORK / "rng.tabembed")).recommend(1, k=3)
        same = torch.equal(state, torch.get_rng_state())
        return f"ok: torch's global random state unchanged: {same}"
    probe(s, "fit, predict, save, load and recommend", global_rng)

    def failed_implicit_refit():
        ratings = pd.DataFrame({"user": RNG.integers(0, 20, 1000),
                                "item": RNG.integers(0, 30, 1000)})
        r = ImplicitRecommender(epochs=1, random_state=0).fit(ratings)
        before = r.recommend(1, k=5)
        try:
            r.set_params(lr=1e30).fit(pd.concat([ratings, ratings.assign(item=99)]))
        except Exception as error:
            kind = type(error).__name__
        else:
            kind = "nothing"
        same = r.recommend(1, k=5).equals(before)
        return f"ok: refit raised {kind}; recommend unchanged: {same}"
    probe(s, "ImplicitRecommender refit diverging (lr=1e30) on more rows", failed_implicit_refit)

    def warm_twice():
        frame = pd.DataFrame({"x": RNG.normal(size=500), "c": RNG.choice(list("abc"), 500)})
        target = frame["x"] + (frame["c"] == "a")
        model = EmbeddingMLPRegressor(epochs=3, warm_start=True, random_state=0)
        model.fit(frame, target).fit(frame, target)
        return f"ok: second fit trained, lr {model.lr_:.2g}"
    probe(s, "(MLP) warm_start with lr='auto', fitted twice on 500 rows", warm_twice)
    probe(s, "(MLP) class_weight with a negative weight", lambda: EmbeddingMLPClassifier(
        **SMALL, class_weight={0: -1.0, 1: 1.0}).fit(X, Y))
    probe(s, "(MLP) a 2-column regression target", lambda: EmbeddingMLPRegressor(
        **SMALL).fit(X, np.c_[X["a"], X["a"]]))
    probe(s, "(MLP) partial_fit with labels missing from classes",
          lambda: EmbeddingMLPClassifier(**SMALL).partial_fit(X, Y, classes=[0]))

    def one_row_refit():
        model = EmbeddingMLPClassifier(**SMALL, warm_start=True).fit(X, Y)
        return model.fit(X.iloc[:1], Y.iloc[:1])
    probe(s, "(MLP) warm_start refit on one row", one_row_refit)
    probe(s, "(MLP) partial_fit with string labels after integer classes",
          lambda: EmbeddingMLPClassifier(**SMALL).partial_fit(X, Y, classes=[0, 1])
          .partial_fit(X, Y.astype(str)))

    def far_targets():
        model = EmbeddingMLPRegressor(**SMALL).fit(X, X["a"])
        return model.partial_fit(X, X["a"].where(X.index != 5, 1e200))
    probe(s, "(MLP) partial_fit on a target of 1e200 after targets near 0", far_targets)


# ------------------------------------------------------------------ faults

def faults() -> None:
    s = "fault"
    from tabembed._io import atomic_write

    path = WORK / "precious.bin"

    def sigkill_mid_write():
        path.write_bytes(b"old")
        script = textwrap.dedent(f"""
            import time
            from tabembed._io import atomic_write
            def slow(stream):
                stream.write(b"x" * 50_000_000); stream.flush(); print("go", flush=True)
                time.sleep(60)
            atomic_write({str(path)!r}, slow)
        """)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 text=True)
        child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        left = len(list(WORK.glob(".precious.bin.*.tmp")))
        time.sleep(0.2)
        atomic_write(path, lambda stream: stream.write(b"new"))
        after = len(list(WORK.glob(".precious.bin.*.tmp")))
        return (f"ok: old file intact ({path.read_bytes() == b'new'} after rewrite); "
                f"{left} orphan temp (50 MB) left, {after} after the next write")
    probe(s, "SIGKILL during an atomic write (a 50 MB checkpoint)", sigkill_mid_write)

    def failing_write():
        path.write_bytes(b"old")

        def broken(stream):
            stream.write(b"half")
            raise OSError("disk full")
        try:
            atomic_write(path, broken)
        except OSError:
            pass
        return (f"ok: old file intact: {path.read_bytes() == b'old'}; temp files left: "
                f"{len(list(WORK.glob('.precious.bin.*.tmp')))}")
    probe(s, "OSError half-way through a write", failing_write)

    def umask():
        previous = os.umask(0o027)
        try:
            saved = MODEL.save(WORK / "umask.tabembed")
        finally:
            os.umask(previous)
        return f"ok: mode {oct(stat.S_IMODE(saved.stat().st_mode))} under umask 027"
    probe(s, "save under umask 027", umask)

    def failed_refit():
        model = _fitted()
        before = model.predict_proba(X)
        model.set_params(lr=1e30, epochs=1, schedule="constant", averaging=None)
        try:
            model.fit(X, Y)
        except Exception as error:
            kind = type(error).__name__
        else:
            kind = "nothing"
        same = np.array_equal(model.predict_proba(X), before)
        return f"ok: refit raised {kind}; previous model untouched: {same}"
    probe(s, "refit diverging (lr=1e30)", failed_refit)

    fifo = WORK / "fifo"
    os.mkfifo(fifo)
    probe(s, "save() to a FIFO", lambda: MODEL.save(fifo))
    device = WORK / "null"
    try:    # a device node like /dev/null (root may make one); else /dev/null itself
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        what = "a character device (mknod 1,3)"
    except OSError:
        os.symlink("/dev/null", device)
        what = "a symlink to /dev/null"
    probe(s, f"save() to {what}", lambda: MODEL.save(device))
    probe(s, "save() to a directory", lambda: MODEL.save(WORK))

    def through_symlink():
        target = WORK / "v1.tabembed"
        target.write_bytes(b"old")
        link = WORK / "current.tabembed"
        os.symlink(target.name, link)
        MODEL.save(link)
        return (f"ok: written through: link kept {os.path.islink(link)}, target is the new "
                f"model {_same(tabembed.load(target).predict_proba(X))[4:]}")
    probe(s, "save() to a symlink", through_symlink)

    def full_disk():
        checkpoint = WORK / "run.ckpt"
        checkpoint.write_bytes(b"previous")
        script = textwrap.dedent("""
            import resource, signal, sys, torch
            from tabembed.batches import TensorBatches
            from tabembed.training.learner import Learner
            model = torch.nn.Linear(512, 1024)
            data = TensorBatches((torch.randn(64, 512), torch.randn(64, 1024)), batch_size=16)
            learner = Learner(model, torch.nn.functional.mse_loss, data, device="cpu")
            learner.fit(1, 1e-3)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past 1 MB fail (EFBIG)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
            learner.save_checkpoint(sys.argv[1])
        """)
        done = subprocess.run([sys.executable, "-c", script, str(checkpoint)],
                              capture_output=True, text=True, timeout=300)
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no error"
        left = [p.name for p in WORK.glob(".run.ckpt.*")]
        return _short(f"{last}; previous file intact: {checkpoint.read_bytes() == b'previous'}"
                      f"; temporary files left: {len(left)}", limit=400)
    probe(s, "save_checkpoint on a full disk (a 1 MB file-size limit)", full_disk)

    import torch

    from tabembed.training.checkpoint import read_checkpoint
    checkpoint = WORK / "whole.ckpt"
    torch.save({"version": 2, "model": {"w": torch.zeros(1000, 100)}}, checkpoint)
    data = checkpoint.read_bytes()
    (WORK / "truncated.ckpt").write_bytes(data[: len(data) // 10])
    probe(s, "a checkpoint truncated at 10%",
          lambda: read_checkpoint(WORK / "truncated.ckpt", "cpu"))
    (WORK / "empty.ckpt").write_bytes(b"")
    probe(s, "an empty checkpoint", lambda: read_checkpoint(WORK / "empty.ckpt", "cpu"))

    from tabembed.native import build
    shared = WORK / "native-cache"
    shared.mkdir()
    shared.chmod(0o775)
    probe(s, "native kernel cache writable by its group",
          lambda: build.build("dot_bias", shared) and "loaded")

    def private_cache():
        previous = os.umask(0o002)
        try:
            folder = WORK / "home" / ".cache" / "tabembed" / "native"
            library = build.load_trusted(build.build("dot_bias", folder))
        finally:
            os.umask(previous)
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in (folder, *folder.iterdir())}
        return f"ok: modes {modes}; loaded as {library._name.rsplit('/', 1)[0]}/N"
    probe(s, "native kernel cache created under umask 002", private_cache)


# ------------------------------------------------------------------ files

def files() -> None:
    s = "file"
    good = MODEL.save(WORK / "good.tabembed")
    with zipfile.ZipFile(good) as archive:
        meta = json.loads(archive.read("metadata.json"))
        weights = archive.read("weights.safetensors")
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors
    tensors = load_tensors(weights)
    marker = WORK / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    def write(name, entries):
        target = WORK / name
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry, content in entries.items():
                archive.writestr(entry, content)
        return target

    def load(target):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tabembed.load(target)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        return f"ok: loaded (peak RSS +{grown / 1024:.0f} MB)"

    def edited(edit):
        changed = copy.deepcopy(meta)
        edit(changed)
        return write("edited.tabembed", {"metadata.json": json.dumps(changed),
                                         "weights.safetensors": weights})

    probe(s, "a valid model file", lambda: _same(tabembed.load(good).predict_proba(X)))
    raw = WORK / "raw.pkl"
    raw.write_bytes(pickle.dumps(Payload()))
    probe(s, "a pickle (code on unpickling)", lambda: load(raw))
    for entry in ("metadata.json", "weights.safetensors", "data.pkl"):
        entries = {"metadata.json": json.dumps(meta), "weights.safetensors": weights,
                   entry: pickle.dumps(Payload())}
        probe(s, f"pickle payload as {entry}", lambda e=entries: load(write("p.tabembed", e)))
    probe(s, "entry named ../../etc/evil", lambda: load(write("t.tabembed", {
        "metadata.json": json.dumps(meta), "weights.safetensors": weights,
        "../../etc/evil": b"x"})))
    content = good.read_bytes()
    (WORK / "half.tabembed").write_bytes(content[: len(content) // 2])
    probe(s, "truncated at 50%", lambda: load(WORK / "half.tabembed"))

    def bit_flips():
        rng = np.random.default_rng(1)
        refused = harmless = other = 0
        for position in rng.choice(len(content), 100, replace=False):
            flipped = bytearray(content)
            flipped[position] ^= 1 << int(rng.integers(8))
            (WORK / "flip.tabembed").write_bytes(bytes(flipped))
            try:
                loaded = tabembed.load(WORK / "flip.tabembed")
            except ValueError:
                refused += 1
                continue
            if np.array_equal(loaded.predict_proba(X), REFERENCE):
                harmless += 1
            else:
                other += 1
        return (f"ok: {refused} refused (ValueError), {harmless} in ignored bytes (identical "
                f"predictions), {other} other")
    probe(s, "100 single-bit flips", bit_flips)

    def declared_huge():
        data = bytearray(content)
        start = data.find(b"PK\x01\x02")
        while start >= 0:
            struct.pack_into("<I", data, start + 24, 0xFFFFFFF0)
            start = data.find(b"PK\x01\x02", start + 4)
        (WORK / "declared.tabembed").write_bytes(bytes(data))
        return load(WORK / "declared.tabembed")
    probe(s, "entries declaring 4 GB", declared_huge)
    probe(s, "zip bomb: 1 GB of zeros as weights (1 MB file)", lambda: load(write(
        "bomb.tabembed", {"metadata.json": json.dumps(meta),
                          "weights.safetensors": bytes(1 << 30)})))
    probe(s, "metadata: embedding table 1e9 x 50 (the file holds 4 x 2)", lambda: load(edited(
        lambda m: m["model_kwargs"]["embedding_sizes"].__setitem__(0, [10 ** 9, 50]))))
    probe(s, "metadata: hidden=(1e8, 1e8)", lambda: load(edited(
        lambda m: m["model_kwargs"].__setitem__("hidden", [10 ** 8, 10 ** 8]))))
    probe(s, "metadata: version '1' (a string)", lambda: load(edited(
        lambda m: m.__setitem__("version", "1"))))
    probe(s, "metadata: version null", lambda: load(edited(
        lambda m: m.__setitem__("version", None))))
    probe(s, "metadata: no 'preprocessor'", lambda: load(edited(
        lambda m: m.pop("preprocessor"))))
    probe(s, "metadata: a vocabulary larger than its embedding table", lambda: load(edited(
        lambda m: m["preprocessor"]["categories"]["c"].extend(["p", "q", "r"]))))
    probe(s, "metadata.json holding pickle bytes", lambda: load(write("pm.tabembed", {
        "metadata.json": pickle.dumps(meta), "weights.safetensors": weights})))
    probe(s, "weights as int8", lambda: load(write("i8.tabembed", {
        "metadata.json": json.dumps(meta), "weights.safetensors": save_tensors(
            {k: v.to(__import__("torch").int8) if v.is_floating_point() else v
             for k, v in tensors.items()})})))

    def nan_weights():
        damaged = {k: v.clone() for k, v in tensors.items()}
        key = next(k for k, v in damaged.items() if v.is_floating_point())
        damaged[key].view(-1)[0] = float("nan")
        return load(write("nan.tabembed", {"metadata.json": json.dumps(meta),
                                           "weights.safetensors": save_tensors(damaged)}))
    probe(s, "a NaN weight", nan_weights)

    capped = 64 << 20

    def load_capped(target):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            tabembed.load(target, max_bytes=capped)
        finally:
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            print(f"  peak RSS +{grown / 1024:.0f} MB", file=sys.stderr)
        return f"ok: loaded (peak RSS +{grown / 1024:.0f} MB)"

    def bomb(name, method, size=200 << 20):
        target = WORK / name
        with zipfile.ZipFile(target, "w", method) as archive:
            archive.writestr("metadata.json", json.dumps(meta))
            archive.writestr("weights.safetensors", bytes(size))
        data = bytearray(target.read_bytes())
        for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
            start = data.find(signature)
            while start >= 0:   # the weights' entry declares 1,000 bytes
                header = 46 if signature == b"PK\x01\x02" else 30
                if data[start + header: start + header + 19] == b"weights.safetensors":
                    struct.pack_into("<I", data, start + offset, 1000)
                start = data.find(signature, start + 4)
        target.write_bytes(bytes(data))
        return target

    for method, label in ((zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA"),
                          (zipfile.ZIP_DEFLATED, "deflate")):
        probe(s, f"{label} entry of 200 MB declaring 1,000 bytes (max_bytes=64 MiB)",
              lambda m=method, n=label: load_capped(bomb(f"{n}.tabembed", m)))
    probe(s, "metadata: snapshots 10**8", lambda: load_capped(edited(
        lambda m: m.__setitem__("snapshots", 10 ** 8))))
    probe(s, "metadata: 100,000 embedding tables", lambda: load_capped(edited(
        lambda m: m["model_kwargs"].__setitem__("embedding_sizes", [[2, 1]] * 100_000))))
    probe(s, "metadata.json a JSON bomb (9 MB of '[],', max_bytes=64 MiB)",
          lambda: load_capped(write("json.tabembed", {
              "metadata.json": "[" + ",".join(["[]"] * 3_000_000) + "]",
              "weights.safetensors": weights})))
    probe(s, "/dev/zero", lambda: load_capped(Path("/dev/zero")))
    fifo = WORK / "fifo.tabembed"
    os.mkfifo(fifo)
    probe(s, "a FIFO", lambda: load_capped(fifo))
    probe(s, "(no file above ran code)", lambda: "ok: no code ran" if not marker.exists()
          else "CODE RAN")


def main() -> None:
    # A regression (a bomb decompressed whole, /dev/zero read) must fail, not swap.
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    inputs()
    parquet()
    recommenders()
    faults()
    files()
    print("| kind | case | outcome |")
    print("|---|---|---|")
    for section, case, outcome in ROWS:
        print(f"| {section} | {case} | {outcome} |")


if __name__ == "__main__":
    main()
