"""Property-based fuzzing of TabularPreprocessor and every estimator (hypothesis).

Random frames mix every column type a user meets: floats with NaN, +-inf, huge and tiny
values; integers; nullable integers with pd.NA; booleans; pandas 3 strings with unicode,
empty strings and None; object columns of mixed values; categoricals whose categories
differ between fit and predict; datetimes with and without a timezone. They have 1 to 6
rows, one class or several, and names that are strings, ints or floats; the frame given
at predict may have its columns reordered, an extra column, a missing column or another
type. Every example must end in a correct result (finite outputs of the right shape) or
a clear ``ValueError``/``TypeError`` that names the column (or the target), raised by
tabembed, never from inside torch; the caller's data is never modified.

The default example counts keep this file well under a minute; set
``TABEMBED_FUZZ_EXAMPLES`` (examples per property) for a longer, randomised run:
``TABEMBED_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import traceback
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    EntityEmbeddingTransformer,
    TabularPreprocessor,
)

_EXAMPLES = os.environ.get("TABEMBED_FUZZ_EXAMPLES")


def fuzz_settings(default: int):
    """A small fixed (derandomised) run in CI; a larger random one on request."""
    return settings(max_examples=int(_EXAMPLES) if _EXAMPLES else default,
                    derandomize=not _EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


TINY = dict(epochs=1, hidden=(4,), batch_size=4, lr=1e-2, random_state=0, device="cpu",
            continuous_encoding=None)

# ------------------------------------------------------------------ strategies

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e39, -1e39, 1e300, -1e300, 1e-300, 5e-324, 3.4e38,
                     float("nan"), float("inf"), -float("inf")]),
    st.floats(-100, 100),
)
TEXT = st.one_of(st.text(max_size=4), st.sampled_from(["", " ", "é", "日本", "😀", "a\x00b",
                                                       "None", "nan", "2024-01-31"]))
KINDS = ("float", "int", "nullable_int", "bool", "string", "object", "category", "datetime",
         "datetime_tz")
NAMES = st.one_of(st.text(min_size=1, max_size=3), st.integers(-3, 50),
                  st.sampled_from([0.5, 1.0, -2.25]))


def _column(draw, kind: str, n: int) -> pd.Series:
    if kind == "float":
        return pd.Series(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype="float64")
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-10 ** 6, 10 ** 6), min_size=n,
                                       max_size=n)), dtype="int64")
    if kind == "nullable_int":
        values = draw(st.lists(st.one_of(st.integers(-5, 5), st.just(pd.NA)), min_size=n,
                               max_size=n))
        return pd.Series(values, dtype="Int64")
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "string":
        values = draw(st.lists(st.one_of(TEXT, st.none()), min_size=n, max_size=n))
        return pd.Series(values, dtype="str")
    if kind == "object":
        values = draw(st.lists(st.one_of(st.integers(-3, 3), TEXT, FLOATS, st.none(),
                                         st.booleans()), min_size=n, max_size=n))
        return pd.Series(values, dtype=object)
    if kind == "category":
        pool = draw(st.lists(TEXT, min_size=1, max_size=4, unique=True))
        values = draw(st.lists(st.one_of(st.sampled_from(pool), st.none()), min_size=n,
                               max_size=n))
        extra = draw(st.lists(TEXT, max_size=2))   # unused categories, differing by frame
        return pd.Series(pd.Categorical(values, categories=list(dict.fromkeys(pool + extra))))
    stamps = draw(st.lists(st.one_of(
        st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
        st.none()), min_size=n, max_size=n))
    series = pd.Series(pd.to_datetime(stamps))
    if kind == "datetime_tz":
        series = series.dt.tz_localize("UTC").dt.tz_convert(
            draw(st.sampled_from(["Europe/Paris", "Asia/Kolkata", "UTC"])))
    return series


@st.composite
def frames(draw, min_rows=1, max_rows=6, kinds=KINDS):
    """``(spec, frame)``: ``spec`` maps each column name to its kind."""
    n = draw(st.integers(min_rows, max_rows))
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique_by=lambda v: (type(v), v)))
    names = list(dict.fromkeys(names))      # 1 and 1.0 are the same column
    spec = {name: draw(st.sampled_from(kinds)) for name in names}
    frame = pd.DataFrame({name: _column(draw, kind, n) for name, kind in spec.items()})
    return spec, frame


@st.composite
def prediction_frames(draw, spec):
    """A frame for predict: same kinds, other values, perhaps reordered, an extra column,
    a missing column, or one column of another type."""
    n = draw(st.integers(1, 5))
    names = list(spec)
    frame = pd.DataFrame({name: _column(draw, kind, n) for name, kind in spec.items()})
    change = draw(st.sampled_from(["none", "reorder", "extra", "missing", "retype"]))
    if change == "reorder":
        frame = frame[draw(st.permutations(names))]
    elif change == "extra":
        frame["zz_extra"] = 1.0
    elif change == "missing" and len(names) > 1:
        frame = frame.drop(columns=[draw(st.sampled_from(names))])
    elif change == "retype":
        name = draw(st.sampled_from(names))
        frame[name] = _column(draw, draw(st.sampled_from(KINDS)), n)
    return frame


# ------------------------------------------------------------------ what counts as clear

_TARGET_WORDS = ("target", "y ", "y has", "label", "class", "sample", "rows", "Input y",
                 "rating")


def check_clear(error: BaseException, columns, *, target: bool = False) -> None:
    """A ValueError/TypeError raised by tabembed (not from inside torch) that names a
    column of the data (or the target, when ``target``)."""
    frames_ = traceback.extract_tb(error.__traceback__)
    inner = frames_[-1].filename if frames_ else ""
    assert isinstance(error, ValueError | TypeError), repr(error)
    assert f"{os.sep}torch{os.sep}" not in inner, f"error from inside torch: {error!r}"
    message = str(error)
    named = any(repr(c) in message or f"'{c}'" in message for c in columns)
    generic = any(w in message for w in ("empty frame", "duplicate column", "0 sample",
                                         "minimum of", "0 feature", "the model needs"))
    if target:
        generic = generic or any(w in message for w in _TARGET_WORDS)
    assert named or generic, f"error names no column: {error!r}"


def check_unchanged(before: pd.DataFrame, after: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(before, after, check_exact=True)


def _copy(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.copy(deep=True)


# ------------------------------------------------------------------ the preprocessor

@fuzz_settings(default=60)
@given(data=st.data())
def test_preprocessor_fit_transform_and_state(data):
    spec, X = data.draw(frames())
    snapshot = _copy(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pre = TabularPreprocessor().fit(X)
        except (ValueError, TypeError) as error:
            check_clear(error, X.columns)
            check_unchanged(snapshot, X)
            return
        check_unchanged(snapshot, X)
        codes, conts = pre.transform_arrays(X)
        _check_arrays(pre, codes, conts, len(X))
        check_unchanged(snapshot, X)
        try:
            state = pre.to_dict()
        except (ValueError, TypeError) as error:
            check_clear(error, X.columns)
        else:
            restored = TabularPreprocessor.from_dict(state)
            for a, b in zip(restored.transform_arrays(X), (codes, conts)):
                np.testing.assert_array_equal(a, b)
        other = data.draw(prediction_frames(spec))
        other_snapshot = _copy(other)
        try:
            codes, conts = pre.transform_arrays(other)
        except (ValueError, TypeError) as error:
            check_clear(error, list(X.columns) + list(other.columns))
        else:
            _check_arrays(pre, codes, conts, len(other))
        check_unchanged(other_snapshot, other)


def _check_arrays(pre, codes, conts, n) -> None:
    assert codes.shape == (n, len(pre.cat_columns_)) and codes.dtype == np.int64
    assert conts.shape == (n, len(pre.cont_columns_)) and conts.dtype == np.float32
    assert np.isfinite(conts).all()
    cardinalities = np.array([pre.embedding_sizes_[c][0] for c in pre.cat_columns_])
    assert (codes >= 0).all() and (codes < cardinalities).all()


# ------------------------------------------------------------------ the estimators

@st.composite
def targets(draw, n: int, task: str):
    if task == "classification":
        labels = draw(st.sampled_from([[0, 1], ["a", "b", "c"], [True, False], [2.5],
                                       ["x"], [1, 2, 3, 4]]))
        return pd.Series(draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n)))
    values = draw(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from(
        [1e200, -1e200, 1e-300, 0.0, float("nan"), float("inf")])), min_size=n, max_size=n))
    return pd.Series(values, dtype="float64")


ENCODINGS = st.sampled_from([None, "auto", "piecewise_linear", "plr_lite"])


def _fit_predict(make, data, task: str) -> None:
    encoding = data.draw(ENCODINGS)
    make_default = make

    def make():
        return make_default().set_params(continuous_encoding=encoding)

    spec, X = data.draw(frames(min_rows=1, max_rows=6))
    y = data.draw(targets(len(X), task))
    snapshots = _copy(X), y.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = make().fit(X, y)
        except (ValueError, TypeError) as error:
            check_clear(error, X.columns, target=True)
            check_unchanged(snapshots[0], X)
            pd.testing.assert_series_equal(snapshots[1], y)
            return
        check_unchanged(snapshots[0], X)
        pd.testing.assert_series_equal(snapshots[1], y)
        for frame in (X, data.draw(prediction_frames(spec))):
            before = _copy(frame)
            try:
                output = (model.transform(frame) if hasattr(model, "transform")
                          else model.predict_proba(frame) if hasattr(model, "predict_proba")
                          else model.predict(frame))
            except (ValueError, TypeError) as error:
                check_clear(error, list(X.columns) + list(frame.columns))
            else:
                assert len(output) == len(frame)
                if output.dtype.kind == "f":
                    assert np.isfinite(output).all()
                if hasattr(model, "predict_proba"):
                    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
                    assert set(model.predict(frame)) <= set(model.classes_)
            check_unchanged(before, frame)


@fuzz_settings(default=12)
@given(data=st.data())
def test_classifier(data):
    _fit_predict(lambda: EmbeddingMLPClassifier(**TINY), data, "classification")


@fuzz_settings(default=12)
@given(data=st.data())
def test_regressor(data):
    _fit_predict(lambda: EmbeddingMLPRegressor(**TINY), data, "regression")


@fuzz_settings(default=8)
@given(data=st.data())
def test_transformer(data):
    task = data.draw(st.sampled_from(["classification", "regression"]))
    _fit_predict(lambda: EntityEmbeddingTransformer(**TINY), data, task)


@st.composite
def ratings(draw):
    n = draw(st.integers(1, 8))
    ids = st.one_of(st.integers(0, 4), st.sampled_from(["u", "v", "é", ""]), st.none())
    id_kind = draw(st.sampled_from(["int", "str", "mixed"]))

    def column():
        if id_kind == "int":
            return draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        if id_kind == "str":
            return draw(st.lists(st.sampled_from(["u", "v", "é", ""]), min_size=n,
                                 max_size=n))
        return draw(st.lists(ids, min_size=n, max_size=n))

    X = pd.DataFrame({"user": column(), "item": column()})
    if draw(st.booleans()):
        X["side"] = _column(draw, draw(st.sampled_from(["float", "string", "bool"])), n)
    y = pd.Series(draw(st.lists(st.one_of(st.floats(0, 5), st.sampled_from(
        [float("nan"), 1e200, -1.0])), min_size=n, max_size=n)))
    return X, y


@fuzz_settings(default=12)
@given(data=st.data())
def test_recommender(data):
    X, y = data.draw(ratings())
    snapshots = _copy(X), y.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = EmbeddingRecommender(epochs=1, n_factors=2, batch_size=4, lr=1e-2,
                                     random_state=0, device="cpu")
        try:
            model.fit(X, y)
        except (ValueError, TypeError) as error:
            check_clear(error, X.columns, target=True)
            return
        finally:
            check_unchanged(snapshots[0], X)
            pd.testing.assert_series_equal(snapshots[1], y)
        other, _ = data.draw(ratings())
        for frame in (X, other):
            before = _copy(frame)
            try:
                predicted = model.predict(frame)
            except (ValueError, TypeError) as error:
                check_clear(error, list(X.columns) + list(frame.columns))
            else:
                assert predicted.shape == (len(frame),) and np.isfinite(predicted).all()
            check_unchanged(before, frame)
        user = data.draw(st.sampled_from([*list(X["user"]), "unknown user"]))
        try:
            top = model.recommend(user, k=data.draw(st.integers(1, 4)))
        except (ValueError, TypeError) as error:
            check_clear(error, [*list(X.columns), "user", "k"])
        else:
            assert np.isfinite(top.filter(like="score").to_numpy(dtype=float)).all()


# ------------------------------------------------------------------ Parquet fits and predictions

PARQUET_KINDS = ("float", "int", "nullable_int", "bool", "string", "category", "datetime",
                 "datetime_tz")   # what Parquet stores (not object columns of mixed values)


def _parquet_column(draw, n: int) -> pd.Series:
    """A column of a kind Parquet stores; floats mostly moderate (extreme values are the
    in-memory properties' business)."""
    kind = draw(st.sampled_from(PARQUET_KINDS))
    if kind == "float" and draw(st.booleans()):
        return pd.Series(draw(st.lists(st.one_of(st.floats(-100, 100), st.just(float("nan"))),
                                       min_size=n, max_size=n)), dtype="float64")
    return _column(draw, kind, n)


def _parquet_files(draw, folder, frame, n_files: int) -> dict:
    """``frame`` as ``n_files`` files in ``folder``, perhaps with one file lacking a column,
    holding one more, or holding a column of another type. Returns what was changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    cuts = np.linspace(0, len(frame), n_files + 1).astype(int)
    change = draw(st.sampled_from(["none", "none", "none", "drop", "add", "retype"]))
    changed = {"kind": "none"}
    for i in range(n_files):
        part = frame.iloc[cuts[i]:cuts[i + 1]]
        if i == n_files - 1 and n_files > 1 and change != "none":
            column = draw(st.sampled_from(list(frame.columns)))
            if change == "drop":
                part = part.drop(columns=[column])
            elif change == "add":
                part = part.assign(zz_late=1.5)
            else:
                part = part.assign(**{column: part[column].astype(str) + "_x"})
            changed = {"kind": change, "column": column, "file": f"part-{i}.parquet"}
        table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
        pq.write_table(table, folder / f"part-{i}.parquet",
                       row_group_size=draw(st.integers(1, 8)))
    return changed


def _check_clear_parquet(error, columns, changed, destination=None) -> None:
    """A clear error: for a changed file, one naming that file and the column; for a
    careless destination, one naming it; otherwise as :func:`check_clear`."""
    message = str(error)
    if changed["kind"] != "none":
        assert isinstance(error, ValueError) and changed["file"] in message, repr(error)
        if changed["kind"] == "add":
            assert "'zz_late'" in message, repr(error)
        else:
            assert repr(changed["column"]) in message, repr(error)
    elif destination is not None and ("is the source file" in message
                                      or "inside the source folder" in message):
        assert str(destination) in message
    elif "keep_columns ['prediction']" not in message:
        check_clear(error, columns, target=True)


def _digest(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@fuzz_settings(default=10)
@given(data=st.data())
def test_parquet_fit_and_predict_to_parquet(data, tmp_path_factory):
    """A classifier fitted from Parquet files (1 to 3, perhaps one lacking a column, one
    more column or a column of another type), then predict_to_parquet to a destination
    that may be a source file or inside the source folder, keeping columns that may be
    named like an output. Each run ends in a clear error or a correct file; a file lacking
    a feature is never trained or predicted as missing values; no source file changes."""
    import pyarrow as pa

    root = tmp_path_factory.mktemp("fuzz")
    names = data.draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), min_size=1,
                               max_size=3, unique=True))
    n = data.draw(st.integers(2, 12))
    frame = pd.DataFrame({name: _parquet_column(data.draw, n) for name in names})
    frame["target"] = np.arange(n) % 2 if data.draw(st.booleans()) else data.draw(
        st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    if data.draw(st.booleans()):   # the source's own column named like an output
        frame["prediction"] = np.arange(n)
    n_files = data.draw(st.integers(1, 3))
    try:
        changed = _parquet_files(data.draw, root / "train", frame, n_files)
    except (pa.ArrowException, ValueError, TypeError):
        return     # a frame Arrow cannot store: nothing of tabembed's to check
    before = _digest(root / "train")
    columns = [*names, "target", "zz_late", "prediction"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = EmbeddingMLPClassifier(**TINY).fit(root / "train", y="target")
        except (ValueError, TypeError) as error:
            _check_clear_parquet(error, columns, changed)
            model = None
        else:
            assert changed["kind"] == "none", f"fitted despite {changed}"
        assert _digest(root / "train") == before
        if model is None:
            return
        source = root / "train"
        single = source / "part-0.parquet"
        destination = data.draw(st.sampled_from(
            [root / "out.parquet"] * 3 + [single, source / "predictions.parquet"]))
        keep = data.draw(st.lists(st.sampled_from(list(frame.columns)), max_size=2,
                                  unique=True))
        try:
            path = model.predict_to_parquet(source, destination, keep_columns=keep)
        except (ValueError, TypeError) as error:
            _check_clear_parquet(error, columns, changed, destination)
            assert not (root / "out.parquet").exists()
        else:
            assert destination == root / "out.parquet" and "prediction" not in keep
            written = pd.read_parquet(path)
            assert len(written) == n and list(written.columns)[:len(keep)] == keep
            probabilities = written.filter(like="probability_").to_numpy()
            assert np.isfinite(probabilities).all()
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert _digest(source) == before


# ------------------------------------------------------------------ what the fuzzer found
# Each failure it found is kept here as a plain test, so that it always runs.

@pytest.mark.parametrize("name", [0, 1.5, "naïve", ""])
def test_found_date_columns_with_non_string_names(name):
    """A date column named 0 failed with KeyError: '0' (its elapsed column's name was
    sliced back into the date's as text)."""
    X = pd.DataFrame({name: pd.date_range("2020-01-01", periods=6, freq="D"),
                      "a": np.arange(6.0)})
    _codes, conts = TabularPreprocessor().fit(X).transform_arrays(X)
    assert conts.shape == (6, 2) and np.isfinite(conts).all()
    model = EmbeddingMLPClassifier(**TINY).fit(X, [0, 1] * 3)
    assert np.isfinite(model.predict_proba(X)).all()


def test_found_date_column_without_dates_names_the_date_column():
    with pytest.raises(ValueError, match=r"date column 'when' has no non-missing value"):
        TabularPreprocessor().fit(pd.DataFrame({"when": pd.Series([pd.NaT, pd.NaT])}))


def test_found_values_that_are_not_dates_at_predict():
    X = pd.DataFrame({"when": pd.date_range("2020-01-01", periods=4), "a": np.arange(4.0)})
    pre = TabularPreprocessor().fit(X)
    for bad in (["x", "y", ":", "1"], [True, False, True, False], ["2020-02-30"] * 4):
        with pytest.raises(ValueError, match=r"date column 'when' holds values that are not"):
            pre.transform_arrays(X.assign(when=bad))


def test_found_constant_target_on_a_few_rows_is_not_divergence():
    """A zero target on six rows: the loss rose from 1e-4 to 2e-3, and the divergence check
    (final loss above twice the initial one plus 1e-3) called that divergence."""
    X = pd.DataFrame({"a": [0, 0, 0, 0, 0, 0], "b": [0, 0, 0, 1, -1, 2]})
    model = EmbeddingMLPRegressor(**TINY).fit(X, np.zeros(6))
    assert np.isfinite(model.predict(X)).all()


def test_found_missing_target_of_the_transformer_names_the_target():
    X = pd.DataFrame({"a": [0, 0, 0, 0]})
    with pytest.raises(ValueError, match="the target has 1 missing value"):
        EntityEmbeddingTransformer(**TINY).fit(X, [0.0, 0.0, 0.0, np.nan])


def test_found_huge_ratings_are_an_error_not_a_divergence():
    X = pd.DataFrame({"user": [0] * 6, "item": [0] * 6})
    with pytest.raises(ValueError, match="ratings must be within"):
        EmbeddingRecommender(epochs=1, random_state=0).fit(X, [0, 0, 0, 0, 0, 1e200])


def test_found_all_missing_column_of_another_type_is_filled():
    """An all-NaT column given for a float column raised IndexError (no value to quote)."""
    pre = TabularPreprocessor().fit(pd.DataFrame({"a": [0.0, 1.0, 2.0]}))
    _, conts = pre.transform_arrays(pd.DataFrame({"a": pd.Series([pd.NaT, pd.NaT])}))
    np.testing.assert_array_equal(conts, 0.0)      # the median, standardised


def test_found_an_input_overflowing_the_network_is_named():
    """3.2e38 (inside float32) in a column that was constant in training overflowed the
    network; the error named only the row."""
    X = pd.DataFrame({"a": [0.0, 0.0, np.nan]})
    # Standard scaling: robust scaling clips smoothly and never overflows (checked below).
    model = EmbeddingMLPClassifier(**TINY, continuous_scaling="standard").fit(X, [0, 0, 1])
    with pytest.raises(ValueError, match=r"column 'a' is 3.228e\+38 there"):
        model.predict_proba(pd.DataFrame({"a": [3.22822e38]}))
    robust = EmbeddingMLPClassifier(**TINY, continuous_scaling="robust").fit(X, [0, 0, 1])
    assert np.isfinite(robust.predict_proba(pd.DataFrame({"a": [3.22822e38]}))).all()


def test_found_a_loss_rising_on_six_rows_is_not_divergence():
    """Six rows, one outlier target: two Adam steps took the loss from 1.5 to 3.7 and the
    'worse than it started' check called it divergence (with PLR inputs)."""
    when = pd.Series([pd.NaT, pd.NaT, pd.Timestamp("2000-01-01 01:00", tz="Europe/Paris"),
                      pd.NaT, pd.NaT, pd.NaT])
    y = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1e200])
    model = EmbeddingMLPRegressor(**{**TINY, "continuous_encoding": "auto"})
    model.fit(pd.DataFrame({"0": when}), y)
    assert np.isfinite(model.predict(pd.DataFrame({"0": when}))).all()


def test_found_a_missing_item_id_in_training_does_not_break_recommend():
    """A NaN item id (code 0, the unknown item) made the seen-items matrix index -1."""
    X = pd.DataFrame({"user": [0, 0, 1], "item": [np.nan, 0.0, 1.0]})
    model = EmbeddingRecommender(epochs=1, n_factors=2, random_state=0).fit(X, [1.0, 2.0, 3.0])
    top = model.recommend(0, k=2)
    assert 0.0 not in set(top["item"])        # seen, so excluded
