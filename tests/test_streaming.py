"""Parquet streams: every row once per epoch across ranks, seeded orders, exact resume."""

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from tabembed.batches import TensorBatches, steps_per_epoch
from tabembed.datasets import make_synthetic
from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.preprocessing import TabularPreprocessor
from tabembed.streaming import (
    ParquetBatches,
    Part,
    RowGroups,
    TableTransform,
    ValidationSplit,
    fit_preprocessor,
    fit_target,
    open_dataset,
    predict_to_parquet,
    train_valid_sources,
)
from tabembed.streaming.prediction import _dictionary_columns
from tabembed.targets import TargetTransformer
from tabembed.training.learner import Learner

N_ROWS = 10_007


class RowIds:
    """A transform yielding each row's id (and its key), to check which rows a stream gives."""

    columns = ("row", "key")
    has_target = False

    def __call__(self, table):
        return (table["row"].to_numpy().astype(np.int64),
                table["key"].to_numpy().astype(np.int64))


def _write(folder, frame, cuts, row_group_size):
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, (start, stop) in enumerate(itertools.pairwise(cuts)):
        pq.write_table(table.slice(start, stop - start), folder / f"part-{i}.parquet",
                       row_group_size=row_group_size)
    return folder


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    """10,007 rows in 3 files of uneven size, row groups of 700 rows (the last ones shorter)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"row": np.arange(N_ROWS), "key": rng.integers(0, 500, N_ROWS)})
    return _write(tmp_path_factory.mktemp("ids"), frame, [0, 2500, 2501, N_ROWS], 700)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    X, y = make_synthetic(6000, task="classification", n_classes=3, cardinalities=(5, 30),
                          n_continuous=2, noise=0.3, random_state=1)
    frame = X.assign(target=np.array(["low", "mid", "high"])[y.to_numpy()],
                     row=np.arange(len(X)))
    folder = _write(tmp_path_factory.mktemp("table"), frame, [0, 1000, 3500, 6000], 400)
    return frame, folder


def _epoch(source):
    return [tuple(t.clone() for t in batch) for batch in source]


def _rows(batches):
    return torch.cat([b[0] for b in batches]).numpy()


# ------------------------------------------------------------------ the dataset

def test_row_groups_come_from_metadata(ids):
    groups = RowGroups(open_dataset(ids))
    assert groups.n_rows == N_ROWS
    assert groups.counts.tolist() == [700] * 3 + [400] + [1] + [700] * 10 + [506]
    assert groups.offsets[4] == 2500
    assert open_dataset(ids.as_uri()).files == open_dataset(ids).files     # a file:// URI
    assert open_dataset(open_dataset(ids)).files == open_dataset(ids).files
    with pytest.raises(TypeError, match="path or URI"):
        open_dataset(42)


def test_csv_is_refused_with_the_fix(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(TypeError, match="not Parquet"):
        RowGroups(ds.dataset(tmp_path, format="csv"))


# ------------------------------------------------------------------ every row once

@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_row_once_per_epoch_across_ranks(ids, world_size, shuffle):
    sources = [ParquetBatches(ids, RowIds(), batch_size=256, shuffle=shuffle, buffer_rows=1500,
                              rank=r, world_size=world_size, random_state=7)
               for r in range(world_size)]
    lengths = {len(s) for s in sources}
    assert lengths == {steps_per_epoch(N_ROWS, 256, world_size)}     # same steps on every rank
    orders = []
    for _ in range(2):
        epoch = [_epoch(s) for s in sources]
        assert {len(e) for e in epoch} == lengths
        sizes = [len(b[0]) for e in epoch for b in e]
        assert max(sizes) <= 256 and max(sizes) - min(sizes) <= 1
        rows = np.concatenate([_rows(e) for e in epoch])
        assert len(rows) == N_ROWS and np.array_equal(np.sort(rows), np.arange(N_ROWS))
        orders.append(rows)
    if shuffle:
        assert not np.array_equal(orders[0], orders[1])        # a fresh order each epoch
        assert not np.array_equal(orders[0], np.sort(orders[0]))
    else:
        assert np.array_equal(orders[0], np.arange(N_ROWS))    # ranks in order give file order


def test_a_window_mixes_row_groups_and_reads_stay_per_rank(ids):
    source = ParquetBatches(ids, RowIds(), batch_size=100, shuffle=True, buffer_rows=1400,
                            rank=1, world_size=2, random_state=3)
    first = _rows(_epoch(source)[:10])
    groups = np.searchsorted(RowGroups(open_dataset(ids)).offsets, first, side="right")
    assert len(np.unique(groups)) >= 2         # a window spans whole row groups, shuffled
    windows, _ = source._plan(0)
    read = sum(last - first for window in windows for _, first, last in window)
    assert read == source.rank_rows[1] - source.rank_rows[0]


def test_same_seed_same_batches_other_seed_other_batches(ids):
    def run(seed, prefetch):
        source = ParquetBatches(ids, RowIds(), batch_size=128, shuffle=True, buffer_rows=2000,
                                random_state=seed, prefetch=prefetch)
        return [_rows(_epoch(source)) for _ in range(2)]

    first, again, sync = run(5, 1), run(5, 3), run(5, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(np.array_equal(a, b) for a, b in zip(first, sync))   # threads change nothing
    assert not np.array_equal(first[0], run(6, 1)[0])


def test_shuffling_over_ranks_needs_a_shared_seed_and_enough_rows(ids):
    with pytest.raises(ValueError, match="random_state, the same on every rank"):
        ParquetBatches(ids, RowIds(), shuffle=True, rank=0, world_size=2)
    with pytest.raises(ValueError, match="cannot be shared by"):
        ParquetBatches(ids, RowIds(), rank=0, world_size=N_ROWS + 1)
    with pytest.raises(ValueError, match="both rank and world_size"):
        ParquetBatches(ids, RowIds(), rank=1)


@pytest.mark.parametrize("world_size", [1, 3])
def test_tensor_batches_shard_a_shared_permutation(world_size):
    n = 1001
    sources = [TensorBatches([torch.arange(n)], batch_size=64, shuffle=True, has_target=False,
                             random_state=4, rank=r, world_size=world_size)
               for r in range(world_size)]
    assert len({len(s) for s in sources}) == 1
    for _ in range(2):
        epoch = [_epoch(s) for s in sources]
        rows = np.concatenate([_rows(e) for e in epoch])
        assert np.array_equal(np.sort(rows), np.arange(n))
        assert min(len(b[0]) for e in epoch for b in e) > 1
    with pytest.raises(ValueError, match="random_state"):
        TensorBatches([torch.arange(n)], shuffle=True, rank=0, world_size=2)
    ordered = [TensorBatches([torch.arange(n)], batch_size=64, has_target=False, rank=r,
                             world_size=2) for r in range(2)]
    assert np.array_equal(np.concatenate([_rows(_epoch(s)) for s in ordered]), np.arange(n))


# ------------------------------------------------------------------ resume

def _resumed_matches(make, stop_after):
    """Batches after ``stop_after`` batches of epoch 2, resumed from a state, vs uninterrupted."""
    uninterrupted = make()
    expected = [_epoch(uninterrupted) for _ in range(3)]
    interrupted = make()
    _epoch(interrupted)
    for i, _ in enumerate(interrupted):
        if i + 1 == stop_after:
            break
    state = interrupted.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = _epoch(resumed)
    after = _epoch(resumed)
    tail = expected[1][stop_after:]
    assert len(rest) == len(tail)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rest, tail))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(after, expected[2]))


@pytest.mark.parametrize("stop_after", [1, 7, 19])
def test_parquet_stream_resumes_mid_epoch_exactly(ids, stop_after):
    split = ValidationSplit(0.2, key="key", seed=1)
    for rank in range(2):
        _resumed_matches(lambda rank=rank: ParquetBatches(
            ids, RowIds(), batch_size=200, shuffle=True, buffer_rows=1500, validation=split,
            rank=rank, world_size=2, random_state=11), stop_after)


def test_tensor_batches_resume_mid_epoch_exactly():
    for world_size in (1, 2):
        _resumed_matches(lambda world_size=world_size: TensorBatches(
            [torch.arange(999)], batch_size=50, shuffle=True, has_target=False, random_state=2,
            rank=world_size - 1, world_size=world_size), 6)


def test_state_survives_a_weights_only_checkpoint_and_guards_the_layout(ids, tmp_path):
    source = ParquetBatches(ids, RowIds(), batch_size=300, shuffle=True, random_state=1,
                            rank=0, world_size=2)
    batches = iter(source)
    next(batches)
    torch.save({"data": source.state_dict()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)["data"]
    assert state["position"] == 1
    other = ParquetBatches(ids, RowIds(), batch_size=300, shuffle=True, random_state=1)
    with pytest.raises(ValueError, match="same data, batch size and number of processes"):
        other.load_state_dict(state)
    other.load_state_dict({**state, "position": 0})   # an epoch boundary is always fine


def test_an_abandoned_pass_starts_a_new_epoch_and_seeding_restarts(ids):
    source = ParquetBatches(ids, RowIds(), batch_size=500, shuffle=True, random_state=9)
    first = next(iter(source))[0]
    second = next(iter(source))[0]
    assert not torch.equal(first, second)
    source.manual_seed(9)
    assert torch.equal(next(iter(source))[0], first)


# ------------------------------------------------------------------ validation split

@pytest.mark.parametrize("split", [ValidationSplit(0.2, seed=3), ValidationSplit(0.2, key="key"),
                                   ValidationSplit(0.2, whole_row_groups=True, seed=1)])
def test_validation_split_is_disjoint_complete_and_stable(ids, split):
    train, valid = train_valid_sources(ids, RowIds(), split, batch_size=256, random_state=0,
                                       valid_batch_size=1000)
    train_rows = [_rows(_epoch(train)) for _ in range(2)]
    valid_rows = _rows(_epoch(valid))
    assert np.array_equal(np.sort(train_rows[0]), np.sort(train_rows[1]))   # stable over epochs
    assert np.intersect1d(train_rows[0], valid_rows).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_rows[0], valid_rows])),
                          np.arange(N_ROWS))
    assert train.n_rows + valid.n_rows == N_ROWS
    assert np.array_equal(valid_rows, np.sort(valid_rows))       # validation keeps file order
    # 0.2 of 10,007 rows: the binomial std is 40 rows; 500 keys: a key holds ~20 rows.
    assert abs(valid.n_rows - 0.2 * N_ROWS) < (900 if split.key or split.whole_row_groups
                                               else 200)
    if split.key:
        keys = pd.read_parquet(ids).set_index("row")["key"]
        assert not set(keys[train_rows[0]]) & set(keys[valid_rows])
    if split.whole_row_groups:
        offsets = RowGroups(open_dataset(ids)).offsets
        held = np.unique(np.searchsorted(offsets, valid_rows, side="right"))
        trained = np.unique(np.searchsorted(offsets, train_rows[0], side="right"))
        assert not set(held) & set(trained)


def test_validation_split_checks_its_arguments(ids):
    with pytest.raises(ValueError, match="fraction"):
        ValidationSplit(1.5)
    with pytest.raises(ValueError, match="not both"):
        ValidationSplit(0.1, key="key", whole_row_groups=True)
    with pytest.raises(ValueError, match="'user' is not in the dataset"):
        Part(RowGroups(open_dataset(ids)), ValidationSplit(0.1, key="user"))


# ------------------------------------------------------------------ transforming

def test_stream_tensors_equal_the_in_memory_preprocessor(table):
    frame, folder = table
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    assert "target" not in pre.feature_names_in_ and "row" not in pre.feature_names_in_
    target = fit_target(folder, "target")
    source = ParquetBatches(folder, TableTransform(pre, "target", target), batch_size=700)
    codes, continuous, y = (torch.cat(t) for t in zip(*_epoch(source)))
    expected_codes, expected_continuous = pre.to_tensors(frame.drop(columns=["target", "row"]))
    assert torch.equal(codes, expected_codes)
    torch.testing.assert_close(continuous, expected_continuous, rtol=0, atol=0)
    assert torch.equal(y, torch.as_tensor(target.transform(frame["target"]), dtype=torch.int64))
    with pytest.raises(ValueError, match="not fitted"):
        TableTransform(TabularPreprocessor())


def test_a_bad_value_names_its_file_and_row_group(table, tmp_path):
    frame, folder = table
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    bad = frame.assign(num_0=frame["num_0"].astype(object))
    bad.loc[3, "num_0"] = "oops"
    bad.astype({"num_0": str}).to_parquet(tmp_path / "bad.parquet")
    source = ParquetBatches(tmp_path, TableTransform(pre), batch_size=1000)
    with pytest.raises(ValueError, match=r"num_0.*bad\.parquet \(row group 0\)"):
        _epoch(source)


# ------------------------------------------------------------------ targets and batch size

@pytest.mark.parametrize("make", [
    lambda n: pd.Series(np.where(np.arange(n) % 3, "yes", "no")),
    lambda n: pd.Series(np.arange(n) % 4),
    lambda n: pd.Series(np.arange(n) % 3 * 1.0),
    lambda n: pd.Series(np.random.default_rng(0).normal(3, 2, n)),
    lambda n: pd.Series(np.arange(n) % 2 == 0),
])
def test_fit_target_streams_what_target_transformer_fits(tmp_path, make):
    y = make(300_000)       # more rows than one record batch
    pq.write_table(pa.table({"y": y}), tmp_path / "y.parquet", row_group_size=50_000)
    streamed = fit_target(tmp_path, "y")
    expected = TargetTransformer().fit(y)
    assert streamed.task_ == expected.task_
    if expected.task_ == "regression":
        assert streamed.mean_ == pytest.approx(expected.mean_, rel=1e-12)
        assert streamed.std_ == pytest.approx(expected.std_, rel=1e-9)
    else:
        assert np.array_equal(streamed.classes_, expected.classes_)
        assert np.array_equal(streamed.transform(y), expected.transform(y))
    if pd.api.types.is_numeric_dtype(y):
        assert fit_target(tmp_path, "y", task="regression").mean_ == pytest.approx(y.mean())
    else:
        with pytest.raises(ValueError, match="regression target must be numeric"):
            fit_target(tmp_path, "y", task="regression")


def test_fit_target_errors_name_the_column_and_the_fix(tmp_path):
    pq.write_table(pa.table({"y": [1.0, None, 2.0], "z": [1, 1, 1], "w": np.arange(3) * 1.0}),
                   tmp_path / "y.parquet")
    with pytest.raises(ValueError, match="'y' has missing values"):
        fit_target(tmp_path, "y")
    with pytest.raises(ValueError, match="single class"):
        fit_target(tmp_path, "z")
    with pytest.raises(ValueError, match="more than 2 distinct labels"):
        fit_target(tmp_path, "w", max_classes=2)
    with pytest.raises(ValueError, match="'v' is not in the dataset"):
        fit_target(tmp_path, "v")


# ------------------------------------------------------------------ training and prediction

def test_learner_trains_from_a_stream_as_well_as_from_memory(table):
    frame, folder = table
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    target = fit_target(folder, "target")
    transform = TableTransform(pre, "target", target)
    split = ValidationSplit(0.2, seed=0)
    scores = {}
    for kind in ("stream", "memory"):
        train, valid = train_valid_sources(folder, transform, split, batch_size=128,
                                           random_state=0)
        if kind == "memory":
            train = TensorBatches([torch.cat(t) for t in zip(*_epoch(train))], batch_size=128,
                                  shuffle=True, random_state=0)
        torch.manual_seed(0)
        model = EntityEmbeddingMLP(embedding_sizes=list(pre.embedding_sizes_.values()),
                                   n_continuous=len(pre.cont_columns_), d_out=3,
                                   task="multiclass", hidden=(32, 16))
        accuracy = {"accuracy": lambda out, y: float((out.argmax(1) == y).float().mean())}
        learner = Learner(model, loss_for_task("multiclass"), train, valid, metrics=accuracy,
                          random_state=0)
        learner.fit(4, 3e-3)
        scores[kind] = learner.history.records[-1]["accuracy"]
    majority = frame["target"].value_counts(normalize=True).max()
    assert scores["stream"] > majority + 0.2
    assert abs(scores["stream"] - scores["memory"]) < 0.03


def _streamed_classifier(folder):
    """A preprocessor fitted by streaming ``folder`` and a small three-class network."""
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=list(pre.embedding_sizes_.values()),
                               n_continuous=len(pre.cont_columns_), d_out=3, task="multiclass",
                               hidden=(16,)).eval()
    return pre, model


def test_predict_to_parquet_keeps_order_and_matches_memory(table, tmp_path):
    frame, folder = table
    pre, model = _streamed_classifier(folder)

    def predict(codes, continuous):
        return torch.softmax(model(codes, continuous), dim=1)

    path = predict_to_parquet(folder, tmp_path / "out" / "p.parquet", predict, pre,
                              batch_size=333, keep_columns=["row"],
                              output_names=["low", "mid", "high"])
    written = pd.read_parquet(path)
    assert list(written.columns) == ["row", "low", "mid", "high"]
    assert np.array_equal(written["row"], np.arange(len(frame)))
    with torch.inference_mode():
        expected = predict(*pre.to_tensors(frame.drop(columns=["target", "row"]))).numpy()
    np.testing.assert_allclose(written[["low", "mid", "high"]].to_numpy(), expected, rtol=1e-5,
                               atol=1e-6)
    parts = [predict_to_parquet(folder, tmp_path / "parts", predict, pre, rank=r, world_size=2,
                                keep_columns=["row"]) for r in range(2)]
    assert [p.name for p in parts] == ["part-00000-of-00002.parquet",
                                       "part-00001-of-00002.parquet"]
    together = pd.read_parquet(tmp_path / "parts")
    assert np.array_equal(together["row"], np.arange(len(frame)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p.parquet"]   # no temp


def test_predict_to_parquet_column_major_inputs(table, tmp_path):
    _, folder = table
    pre, model = _streamed_classifier(folder)
    layouts = []

    def predict(codes, continuous):
        layouts.append((codes.is_contiguous(), continuous.is_contiguous()))
        return torch.softmax(model(codes, continuous), dim=1)

    written = {order: pd.read_parquet(predict_to_parquet(
        folder, tmp_path / f"{order}.parquet", predict, pre, batch_size=333, order=order))
        for order in ("C", "F")}
    n_calls = len(layouts) // 2
    assert all(layout == (True, True) for layout in layouts[:n_calls])
    assert all(layout == (False, False) for layout in layouts[n_calls:])
    pd.testing.assert_frame_equal(written["F"], written["C"], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"order must be 'C'.*order='row'"):
        predict_to_parquet(folder, tmp_path / "x.parquet", predict, pre, order="row")
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("failing", ["second", "last"])
def test_predict_to_parquet_surfaces_a_failed_write_and_leaves_nothing(table, tmp_path,
                                                                       failing):
    # Row groups are written in a thread while the next is predicted: a write that fails
    # (here a column changing type, which Parquet's writer refuses) must still raise and
    # leave no file, whether more groups follow it or it is the last.
    _, folder = table
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    groups = sum(pq.ParquetFile(f).num_row_groups for f in folder.glob("*.parquet"))
    failing_call = 2 if failing == "second" else groups
    calls = []

    def predict(codes, continuous):
        calls.append(1)
        values = np.zeros(len(codes))
        return values.astype(np.int64) if len(calls) == failing_call else values

    with pytest.raises((ValueError, pa.ArrowInvalid), match="schema"):
        predict_to_parquet(folder, tmp_path / "p.parquet", predict, pre)
    assert len(calls) == groups if failing == "last" else len(calls) < groups
    assert list(tmp_path.iterdir()) == []


def test_predict_to_parquet_dictionary_encodes_all_but_float_columns(table, tmp_path):
    # Probabilities are nearly all distinct: a dictionary for them only cost time.
    frame, folder = table
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])

    def predict(codes, continuous):
        probabilities = torch.rand(len(codes), generator=torch.Generator().manual_seed(0))
        return {"label": np.where(probabilities.numpy() > 0.5, "yes", "no"),
                "probability": probabilities}

    path = predict_to_parquet(folder, tmp_path / "p.parquet", predict, pre,
                              keep_columns=["row", "target"])
    metadata = pq.ParquetFile(path).metadata
    encodings = {metadata.schema.column(i).name: metadata.row_group(0).column(i).encodings
                 for i in range(metadata.num_columns)}
    dictionary = {name for name, used in encodings.items()
                  if any("DICTIONARY" in encoding for encoding in used)}
    assert dictionary == {"row", "target", "label"}
    written = pd.read_parquet(path)
    assert np.array_equal(written["target"], frame["target"])
    assert set(written["label"]) == {"yes", "no"}
    nested = pa.table({"s": pa.array([{"x": 1.5, "y": "a"}]), "l": pa.array([["b"]]),
                       "m": pa.array([[("k", 2.0)]], pa.map_(pa.string(), pa.float64())),
                       "f": pa.array([0.5], pa.float32())})
    assert _dictionary_columns(nested) == ["s.y", "l.list.element", "m.key_value.key"]


def test_predict_to_parquet_leaves_nothing_when_prediction_fails(table, tmp_path):
    _, folder = table
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    calls = []

    def failing(codes, continuous):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("out of memory")
        return torch.zeros(len(codes))

    with pytest.raises(RuntimeError, match="out of memory"):
        predict_to_parquet(folder, tmp_path / "p.parquet", failing, pre, batch_size=100)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="keep_columns not in the dataset"):
        predict_to_parquet(folder, tmp_path / "p.parquet", failing, pre, keep_columns=["id"])


def test_fit_preprocessor_streams_what_a_dataframe_fit_learns(table, tmp_path):
    frame, folder = table
    streamed = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    expected = TabularPreprocessor().fit(frame.drop(columns=["target", "row"]))
    got, want = streamed.to_dict(), expected.to_dict()
    assert got["categories"] == want["categories"] and got["medians"] == want["medians"]
    for name in ("means", "stds"):
        assert got[name] == pytest.approx(want[name], rel=1e-12)
    # Hive partition folders become columns, read one row group at a time.
    pq.write_to_dataset(pa.Table.from_pandas(frame.assign(region=frame["row"] % 3),
                                             preserve_index=False),
                        tmp_path / "hive", partition_cols=["region"], row_group_size=500)
    pre = fit_preprocessor(tmp_path / "hive", TabularPreprocessor(cat_names=["region"]),
                           exclude=["target", "row"])
    assert pre.categories_["region"] == [0, 1, 2]
    dataset = RowGroups(open_dataset(tmp_path / "hive")).sequential(exclude=["target"])
    assert dataset.to_table().num_rows == len(frame) and "target" not in dataset.schema.names


def test_read_ahead_only_with_a_core_to_spare(monkeypatch):
    import os

    from tabembed.streaming.source import auto_prefetch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert auto_prefetch({}) == 1                              # one process, two cores
    assert auto_prefetch({"LOCAL_WORLD_SIZE": "2"}) == 0       # torchrun fills the cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert auto_prefetch({"LOCAL_WORLD_SIZE": "2"}) == 1


# ------------------------------------------------------------------ careless paths, mixed files

def test_predict_to_parquet_refuses_to_write_over_its_source(table, tmp_path):
    """The source file itself (by path, through a symlink or a hard link), or a file in the
    source folder: refused before anything is read, and the source is left as it was."""
    frame, folder = table
    pre, model = _streamed_classifier(folder)

    def predict(codes, continuous):
        return torch.softmax(model(codes, continuous), dim=1)

    single = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), single)
    content = single.read_bytes()
    link, hard = tmp_path / "link.parquet", tmp_path / "hard.parquet"
    link.symlink_to(single)
    hard.hardlink_to(single)
    for destination in (single, tmp_path / "." / "data.parquet", link, hard):
        with pytest.raises(ValueError, match="is the source file"):
            predict_to_parquet(single, destination, predict, pre)
    for source in (link, [str(single)], ds.dataset(single)):
        with pytest.raises(ValueError, match="is the source file"):
            predict_to_parquet(source, single, predict, pre)
    assert single.read_bytes() == content
    listing = sorted(p.name for p in folder.iterdir())
    for destination in (folder / "predictions.parquet", folder / "sub" / "p.parquet"):
        with pytest.raises(ValueError, match="inside the source folder"):
            predict_to_parquet(folder, destination, predict, pre)
    with pytest.raises(ValueError, match="inside the source folder"):
        predict_to_parquet(folder, folder, predict, pre, rank=0, world_size=2)
    assert sorted(p.name for p in folder.iterdir()) == listing
    beside = predict_to_parquet(single, tmp_path / "predictions.parquet", predict, pre)
    assert len(pd.read_parquet(beside)) == len(frame)     # beside the source file: fine


def test_predict_to_parquet_never_replaces_a_kept_column(table, tmp_path):
    """A kept column named like an output column was silently dropped: an error naming it."""
    frame, folder = table
    pre, model = _streamed_classifier(folder)
    source = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pandas(frame.assign(prediction=frame["row"] * 2),
                                        preserve_index=False), source)

    def predict(codes, continuous):
        return model(codes, continuous).argmax(dim=1)

    with pytest.raises(ValueError, match=r"keep_columns \['prediction'\].*rename"):
        predict_to_parquet(source, tmp_path / "p.parquet", predict, pre,
                           keep_columns=["row", "prediction"])
    assert not (tmp_path / "p.parquet").exists()
    written = pd.read_parquet(predict_to_parquet(source, tmp_path / "p.parquet", predict, pre,
                                                 keep_columns=["row", "prediction"],
                                                 output_names=["label"]))
    assert np.array_equal(written["prediction"], frame["row"] * 2)


def _mixed(folder, frame, drop=None, add=None):
    """``frame`` in three files; the second lacks column ``drop``, the third alone has
    ``add``."""
    folder.mkdir()
    cuts = np.linspace(0, len(frame), 4).astype(int)
    for i in range(3):
        part = frame.iloc[cuts[i]:cuts[i + 1]]
        if i == 1 and drop:
            part = part.drop(columns=[drop])
        if i == 2 and add:
            part = part.assign(**{add: np.arange(len(part), dtype=float)})
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                       folder / f"part-{i}.parquet", row_group_size=400)
    return folder


def test_files_lacking_a_feature_are_an_error_naming_the_file_and_column(table, tmp_path):
    """A file without a feature read as nulls (trained as missing values, silently) or
    failed with ArrowInvalid: now a ValueError naming the file and the column, for the
    preprocessor's fit, the target's, the stream and predict_to_parquet."""
    frame, folder = table
    pre, model = _streamed_classifier(folder)
    feature = pre.cont_names_[0]
    mixed = _mixed(tmp_path / "mixed", frame, drop=feature)
    where = rf"part-1\.parquet lacks the column\(s\) \['{feature}'\]"
    with pytest.raises(ValueError, match=where):
        fit_preprocessor(mixed, TabularPreprocessor(), exclude=["target", "row"])
    with pytest.raises(ValueError, match=where):
        predict_to_parquet(mixed, tmp_path / "p.parquet", lambda c, x: model(c, x), pre)
    transform = TableTransform(pre)
    with pytest.raises(ValueError, match=where):
        ParquetBatches(mixed, transform)
    without_target = _mixed(tmp_path / "no_target", frame, drop="target")
    with pytest.raises(ValueError, match=r"part-1\.parquet lacks the column\(s\) \['target'\]"):
        fit_target(without_target, "target")
    only_features = tmp_path / "features.parquet"
    pq.write_table(pa.Table.from_pandas(frame.drop(columns=[feature]), preserve_index=False),
                   only_features)
    with pytest.raises(ValueError, match=rf"features\.parquet lacks the column\(s\) "
                                         rf"\['{feature}'\]"):
        predict_to_parquet(only_features, tmp_path / "p.parquet", lambda c, x: model(c, x), pre)
    assert not (tmp_path / "p.parquet").exists()


def test_a_column_only_in_later_files_is_an_error_where_features_are_inferred(table, tmp_path):
    frame, _ = table
    mixed = _mixed(tmp_path / "mixed", frame, add="late")
    with pytest.raises(ValueError, match=r"'late' of .*part-2\.parquet is not in the "
                                         r"dataset's schema"):
        fit_preprocessor(mixed, TabularPreprocessor(), exclude=["target", "row"])
    named = TabularPreprocessor(cat_names=["cat_0"], cont_names=["num_0"], date_names=[])
    fitted = fit_preprocessor(mixed, named, exclude=["target", "row"])
    assert fitted.cat_names_ == ["cat_0"] and fitted.cont_names_ == ["num_0"]


def test_a_column_whose_type_differs_between_files_names_the_file(table, tmp_path):
    """Text where the schema has numbers: refused before reading, naming the file and the
    column. Numbers that do not convert (1.5 into the schema's int64): named at the read."""
    frame, folder = table
    pre, model = _streamed_classifier(folder)
    frame = frame.assign(count=np.arange(len(frame)))
    cases = {"text": ("num_0", lambda f: f["num_0"].map("{:.3f} kg".format)),
             "fraction": ("count", lambda f: f["count"] + 0.5)}
    for name, (column, change) in cases.items():
        mixed = tmp_path / name
        mixed.mkdir()
        pq.write_table(pa.Table.from_pandas(frame.iloc[:3000], preserve_index=False),
                       mixed / "part-0.parquet")
        later = frame.iloc[3000:].assign(**{column: change})
        pq.write_table(pa.Table.from_pandas(later, preserve_index=False),
                       mixed / "part-1.parquet")
        if name == "text":
            where = r"the column 'num_0' of the Parquet file .*part-1\.parquet holds"
            with pytest.raises(ValueError, match=where):
                predict_to_parquet(mixed, tmp_path / "p.parquet", lambda c, x: model(c, x), pre)
            with pytest.raises(ValueError, match=where):
                fit_preprocessor(mixed, TabularPreprocessor(), exclude=["target", "row"])
        else:
            with pytest.raises(ValueError, match=r"reading .*part-1\.parquet \(row group 0\) "
                                                 r"failed.*'count': 'double'"):
                predict_to_parquet(mixed, tmp_path / "p.parquet", lambda c, x: model(c, x), pre,
                                   keep_columns=["count"])
        assert not (tmp_path / "p.parquet").exists()
