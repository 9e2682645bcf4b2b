"""Inputs that used to give silent garbage: each is now a correct result, a warning naming
the column and both types, or a clear error naming the column and the value."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import torch

import tabembed
from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    TabularPreprocessor,
)
from tabembed.targets import TargetTransformer

SMALL = dict(epochs=1, lr=1e-2, hidden=(8,), random_state=0)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=120), "c": rng.choice(["x", "y", "z"], 120),
                      "flag": rng.random(120) < 0.5, "code": rng.integers(0, 5, 120)})
    return X, (X["a"] + X["flag"] > 0.5).astype(int)


# ------------------------------------------------------------------ numbers beyond float32

def test_values_beyond_float32_are_an_error_naming_column_and_value(frame):
    X, y = frame
    huge = X.copy()
    huge.loc[7, "a"] = 1e39
    with pytest.raises(ValueError, match=r"column 'a' .*1e\+39.*row 7"):
        EmbeddingMLPClassifier(**SMALL).fit(huge, y)
    model = EmbeddingMLPClassifier(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match=r"column 'a' .*1e\+39"):
        model.predict_proba(huge)
    with pytest.raises(ValueError, match=r"column 'a' .*-1e\+200"):
        model.predict(huge.assign(a=-1e200))


def test_a_value_whose_scaled_form_overflows_is_an_error_naming_the_column():
    X = pd.DataFrame({"tiny": np.linspace(0, 1e-6, 50)})
    pre = TabularPreprocessor().fit(X)
    with pytest.raises(ValueError, match=r"column 'tiny' .*row 1.*overflows float32"):
        pre.transform_arrays(pd.DataFrame({"tiny": [0.0, 1e33]}))


@pytest.mark.parametrize("magnitude", [1e200, 1e290])
def test_huge_regression_targets_give_finite_predictions_in_their_units(frame, magnitude):
    X, _ = frame
    y = (X["a"] * 2 + 10) * magnitude
    model = EmbeddingMLPRegressor(**{**SMALL, "epochs": 3}, early_stopping=True).fit(X, y)
    predictions = model.predict(X)
    assert np.isfinite(predictions).all()
    assert np.all(np.abs(predictions) < 100 * magnitude)
    assert np.abs(predictions).max() > magnitude   # in the target's units, not scaled ones
    assert np.isfinite(model.history_["rmse"]).all()
    target = TargetTransformer(task="regression", scale="standard").fit(y.to_numpy())
    assert np.isfinite([target.mean_, target.std_]).all() and target.std_ > 0


def test_targets_too_large_to_decode_are_an_error_naming_the_value(frame):
    X, _ = frame
    with pytest.raises(ValueError, match=r"target reaches 1.7e\+308"):
        EmbeddingMLPRegressor(**SMALL).fit(X, np.where(X["a"] > 0, 1.7e308, -1.0))


def test_constant_huge_target_does_not_divide_by_zero():
    target = TargetTransformer(task="regression", scale="standard").fit(np.full(5, 3e250))
    assert target.std_ == pytest.approx(3e250)
    np.testing.assert_allclose(target.inverse_transform(target.transform(np.full(5, 3e250))),
                               3e250)


@pytest.mark.parametrize("cls", [EmbeddingMLPClassifier, EmbeddingMLPRegressor])
@pytest.mark.parametrize("bad, match", [(pd.NA, "missing value"), (None, "missing value"),
                                        (np.inf, "infinity"), (-np.inf, "infinity")])
def test_missing_or_infinite_values_in_object_targets(frame, cls, bad, match):
    X, y = frame
    target = pd.Series(y.astype(float).astype(object))
    target[3] = bad
    with pytest.raises(ValueError, match=match):
        cls(**SMALL).fit(X, target)


# ------------------------------------------------------------------ parameters and types

@pytest.mark.parametrize("make", [
    lambda: EmbeddingMLPClassifier(lr="bogus"),
    lambda: EmbeddingRecommender(lr="bogus"),
])
def test_an_unknown_lr_lists_every_accepted_value(make):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"user": rng.integers(0, 5, 40), "item": rng.integers(0, 5, 40)})
    with pytest.raises(ValueError) as info:
        make().fit(X, rng.integers(0, 2, 40))
    message = str(info.value)
    for accepted in ("'auto'", "'valley'", "'steepest'", "'minimum'", "positive number",
                     "list of numbers", "slice", "'bogus'"):
        assert accepted in message


def test_a_pyarrow_dataset_points_to_the_streaming_entry_points(frame, tmp_path):
    X, y = frame
    X.assign(y=y).to_parquet(tmp_path / "data.parquet")
    dataset = ds.dataset(tmp_path / "data.parquet")
    model = EmbeddingMLPClassifier(**SMALL).fit(X, y)
    with pytest.raises(TypeError, match="predict_to_parquet"):
        model.predict(dataset)
    with pytest.raises(TypeError, match=r"fit\(source, y='column'\); got y of type Series"):
        EmbeddingMLPClassifier(**SMALL).fit(dataset, y)
    streamed = EmbeddingMLPClassifier(**SMALL).fit(dataset, "y")
    assert streamed.predict(X).shape == (len(X),)


def test_a_pyarrow_table_keeps_names_and_types(frame):
    X, y = frame
    model = EmbeddingMLPClassifier(**SMALL).fit(pa.Table.from_pandas(X), y)
    assert list(model.feature_names_in_) == list(X.columns)
    assert model.preprocessor_.cont_names_ == ["a"]
    assert set(model.preprocessor_.cat_names_) == {"c", "flag", "code"}
    np.testing.assert_array_equal(model.predict(pa.Table.from_pandas(X)), model.predict(X))


# ------------------------------------------------------------------ type drift at predict

def _warnings_of(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught]


def test_a_change_of_column_type_at_predict_warns_naming_column_and_types(frame, tmp_path):
    X, y = frame
    model = EmbeddingMLPClassifier(**SMALL).fit(X, y)
    assert _warnings_of(lambda: model.predict(X)) == []
    as_ints = X.assign(flag=X["flag"].astype(int))
    messages = _warnings_of(lambda: model.predict(as_ints))
    assert any("'flag' held bool values at fit but holds integer" in m for m in messages)
    as_strings = X.assign(code=X["code"].astype(str))
    messages = _warnings_of(lambda: model.predict(as_strings))
    assert any("'code' held integer values at fit but holds string" in m for m in messages)
    # Integers given as floats index the same vocabulary: no warning, same predictions.
    assert _warnings_of(lambda: model.predict(X.assign(c=np.nan))) == []   # all missing
    as_floats = X.assign(code=X["code"].astype(float))
    assert _warnings_of(lambda: model.predict(as_floats)) == []
    np.testing.assert_array_equal(model.predict(as_floats), model.predict(X))
    loaded = tabembed.load(model.save(tmp_path / "m.tabembed"))
    messages = _warnings_of(lambda: loaded.predict(as_ints))
    assert any("'flag' held bool values" in m for m in messages)


def test_timezone_aware_dates_remember_their_timezone(tmp_path):
    rng = np.random.default_rng(0)
    when = pd.Series(pd.date_range("2024-01-01 20:00", periods=200, freq="7h",
                                   tz="Europe/Paris"))
    X = pd.DataFrame({"when": when, "a": rng.normal(size=200)})
    y = (when.dt.day_of_week >= 5).astype(int)
    model = EmbeddingMLPClassifier(**SMALL).fit(X, y)
    reference = model.predict_proba(X)
    same_instants = X.assign(when=X["when"].dt.tz_convert("America/New_York"))
    np.testing.assert_array_equal(model.predict_proba(same_instants), reference)
    codes = model.preprocessor_.transform_arrays(same_instants)[0]
    np.testing.assert_array_equal(codes, model.preprocessor_.transform_arrays(X)[0])
    with pytest.raises(ValueError, match=r"'when' was in timezone Europe/Paris .*tz_localize"):
        model.predict(X.assign(when=X["when"].dt.tz_localize(None)))
    loaded = tabembed.load(model.save(tmp_path / "m.tabembed"))
    np.testing.assert_array_equal(loaded.predict_proba(same_instants), reference)
    naive = TabularPreprocessor().fit(X.assign(when=X["when"].dt.tz_localize(None)))
    with pytest.raises(ValueError, match=r"'when' was timezone-naive at fit"):
        naive.transform_arrays(X)


def test_object_arrays_of_numbers_are_continuous_column_transformer_case():
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"income": rng.lognormal(10, 1, 300), "age": rng.integers(18, 90, 300),
                      "city": rng.choice(["a", "b", "c"], 300)})
    y = (X["income"] > np.median(X["income"])).astype(int)
    columns = ColumnTransformer([("scaled", StandardScaler(), ["income", "age"]),
                                 ("raw", "passthrough", ["city"])])
    assert columns.fit_transform(X).dtype == object      # numpy output: one object array
    pipeline = make_pipeline(columns, EmbeddingMLPClassifier(**SMALL)).fit(X, y)
    preprocessor = pipeline[-1].preprocessor_
    assert preprocessor.cont_names_ == ["x0", "x1"] and preprocessor.cat_names_ == ["x2"]
    assert pipeline.predict(X).shape == (300,)
    integers = pd.DataFrame({"n": pd.Series([1, 2, 3, 1, 2] * 10, dtype=object)})
    assert TabularPreprocessor().fit(integers).cat_names_ == ["n"]   # few integers: categories


def test_iso_date_strings_warn_naming_date_names():
    X = pd.DataFrame({"day": pd.date_range("2020-01-01", periods=60).strftime("%Y-%m-%d"),
                      "a": np.arange(60.0)})
    with pytest.warns(UserWarning, match=r"'day' holds ISO date strings.*date_names=\['day'\]"):
        TabularPreprocessor().fit(X)
    assert _warnings_of(lambda: TabularPreprocessor(date_names=["day"]).fit(X)) == []
    parts = TabularPreprocessor(date_names=["day"]).fit(X)
    assert "day_dayofweek" in parts.cat_columns_
    assert _warnings_of(lambda: TabularPreprocessor().fit(
        pd.DataFrame({"code": ["2020-01-01x", "b"], "a": [1.0, 2.0]}))) == []


def test_an_extra_column_at_predict_warns_once(frame):
    X, y = frame
    model = EmbeddingMLPClassifier(**SMALL).fit(X, y)
    extra = X.assign(unused=1)
    first = _warnings_of(lambda: model.predict(extra))
    assert len(first) == 1 and "['unused']" in first[0] and "ignored" in first[0]
    assert _warnings_of(lambda: model.predict(extra)) == []
    np.testing.assert_array_equal(model.predict(extra), model.predict(X))


# ------------------------------------------------------------------ third reliability round

@pytest.mark.parametrize(("weights", "message"), [
    ({0: -1.0, 1: 1.0}, "finite numbers >= 0; got {0: -1.0}"),
    ({0: float("nan"), 1: 1.0}, "finite numbers >= 0"),
    ({0: 0.0, 1: 0.0}, "every row of y weight 0"),
])
def test_class_weight_values_are_checked(weights, message):
    X, _ = _classification()
    y = (X["a"] > 0).astype(int)
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        EmbeddingMLPClassifier(class_weight=weights, **SMALL).fit(X, y)


def _classification():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "c": rng.choice(["x", "y", "z"], 200)})
    return X, np.array(["p", "q"] * 100)


def test_targets_of_several_columns_are_errors_with_the_fix():
    X, labels = _classification()
    with pytest.raises(ValueError, match=r"2 columns; the regressor predicts one target.*"
                                         r"MultiOutputRegressor"):
        EmbeddingMLPRegressor(**SMALL).fit(X, np.c_[X["a"], 2 * X["a"]])
    with pytest.raises(ValueError, match=r"2 columns of class labels.*MultiOutputClassifier"):
        EmbeddingMLPClassifier(**SMALL).fit(X, np.c_[labels, labels[::-1]])


def test_partial_fit_names_labels_missing_from_classes():
    X, labels = _classification()
    with pytest.raises(ValueError, match=r"labels \['q'\] that classes=\['p'\] does not list"):
        EmbeddingMLPClassifier(**SMALL).partial_fit(X, labels, classes=["p"])


def test_ids_of_mixed_types_that_print_alike_are_an_error():
    X = pd.DataFrame({"user": [1, "1", 2, "2"] * 10, "item": [1, 2, 3, 4] * 10})
    with pytest.raises(ValueError, match=r"'user' column mixes types.*\[1, '1', 2, '2'\].*"
                                         "astype\\(str\\)"):
        EmbeddingRecommender(epochs=1).fit(X, np.full(40, 3.0))
    # Mixed types that cannot be confused stay allowed.
    mixed = X.assign(user=[1, "a", 2, "b"] * 10)
    assert len(EmbeddingRecommender(epochs=1, ranking="rating").fit(
        mixed, np.full(40, 3.0)).preprocessor_.categories_["user"]) == 4


def test_an_implicit_target_with_no_positive_row_says_so():
    from tabembed import ImplicitRecommender

    X = pd.DataFrame({"user": [1, 2, 3, 4], "item": [1, 2, 3, 1]})
    with pytest.raises(ValueError, match="no positive value among its 4 rows"):
        ImplicitRecommender(epochs=1).fit(X, [0, 0, 0, 0])


def test_fits_loads_and_predictions_leave_the_global_generator_alone(tmp_path):
    from tabembed import ImplicitRecommender

    rng = np.random.default_rng(0)
    R = pd.DataFrame({"user": rng.integers(0, 30, 400), "item": rng.integers(0, 20, 400)})
    ratings = rng.integers(1, 6, 400).astype(float)
    X, labels = _classification()
    steps = [
        lambda: EmbeddingRecommender(epochs=1, random_state=0).fit(R, ratings),
        lambda: ImplicitRecommender(epochs=1, random_state=0).fit(R),
        lambda: EmbeddingMLPClassifier(**SMALL).fit(X, labels),
    ]
    for make in steps:
        state = torch.get_rng_state()
        model = make()
        assert torch.equal(torch.get_rng_state(), state), model
        path = model.save(tmp_path / "model.tabembed")
        state = torch.get_rng_state()
        loaded = tabembed.load(path)
        loaded.predict(R if hasattr(loaded, "recommend") else X)
        assert torch.equal(torch.get_rng_state(), state), model


def test_an_all_missing_categorical_column_fits_with_a_warning():
    # A 500-row sample of a wide table (ames) left a column all missing; LightGBM fits.
    X, labels = _classification()
    X = X.assign(empty=pd.Series([None] * len(X), dtype=object))
    with pytest.warns(UserWarning, match=r"'empty' has no non-missing value"):
        model = EmbeddingMLPClassifier(**SMALL).fit(X, labels)
    assert model.preprocessor_.embedding_sizes_["empty"] == (1, 1)
    probabilities = model.predict_proba(X.assign(empty="a value never seen"))
    np.testing.assert_allclose(probabilities, model.predict_proba(X), rtol=1e-6)
