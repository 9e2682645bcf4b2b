import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline

from tabembed import preprocessing
from tabembed.preprocessing import DATE_PARTS, TabularPreprocessor, embedding_size
from tabembed.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def adult_x(adult):
    train, test = adult
    return train.drop(columns="income"), test.drop(columns="income")


@pytest.fixture(scope="module")
def fitted(adult_x):
    return TabularPreprocessor().fit(adult_x[0])


# ------------------------------------------------------------- embedding sizes

@pytest.mark.parametrize("cardinality, width", [(1, 1), (2, 1), (3, 2), (8, 4), (99, 50), (100, 50),
                                                (1000, 50)])
def test_embedding_size_rule(cardinality, width):
    assert embedding_size(cardinality) == width


def test_embedding_size_rejects_zero():
    with pytest.raises(ValueError, match="cardinality"):
        embedding_size(0)


def test_embedding_sizes_count_the_unknown_token(fitted, adult_x):
    # sex has 2 values + unknown = 3 codes -> width 2; workclass 8 + 1 = 9 -> 5.
    assert fitted.embedding_sizes_["sex"] == (3, 2)
    assert fitted.embedding_sizes_["workclass"] == (9, 5)
    assert fitted.embedding_sizes_["native_country"] == (42, 21)
    weekday = pd.DataFrame({"day": pd.Categorical(list("MTWRFSU") * 3)})
    assert TabularPreprocessor().fit(weekday).embedding_sizes_["day"] == (8, 4)


def test_embedding_size_overrides_and_rule(adult_x):
    custom = TabularPreprocessor(embedding_sizes={"education": 3},
                                 embedding_rule=lambda c: c).fit(adult_x[0])
    assert custom.embedding_sizes_["education"] == (17, 3)
    assert custom.embedding_sizes_["race"] == (6, 6)
    with pytest.raises(ValueError, match="not categorical outputs"):
        TabularPreprocessor(embedding_sizes={"age": 3}).fit(adult_x[0])


# ------------------------------------------------------------- roles

def test_roles_inferred_on_adult(fitted):
    assert fitted.cat_names_ == ["workclass", "education", "marital_status", "occupation",
                                 "relationship", "race", "sex", "native_country",
                                 "education_num"]   # 16 integer values <= 20: categorical
    assert fitted.cont_names_ == ["age", "fnlwgt", "capital_gain", "capital_loss",
                                  "hours_per_week"]
    assert fitted.date_names_ == []


def test_roles_explicit_and_partially_inferred(adult_x):
    explicit = TabularPreprocessor(cat_names=["sex"], cont_names=["age"]).fit(adult_x[0])
    assert explicit.cat_columns_ == ["sex"] and explicit.cont_columns_ == ["age"]
    only_cats = TabularPreprocessor(cat_names=["sex", "race"]).fit(adult_x[0])
    # Unnamed numeric columns become continuous, never binned into categories.
    assert only_cats.cat_names_ == ["sex", "race"]
    assert "education_num" in only_cats.cont_names_
    frame = pd.DataFrame({"f": [0.5, 1.5, 2.5] * 10, "b": [True, False, True] * 10,
                          "i": np.arange(30), "s": ["x", "y", "z"] * 10})
    roles = TabularPreprocessor(max_integer_categories=20).fit(frame)
    assert roles.cat_names_ == ["b", "s"] and roles.cont_names_ == ["f", "i"]


# ------------------------------------------------------------- categorify

def test_unknown_token_for_missing_and_unseen():
    train = pd.DataFrame({"c": ["b", "a", "c", "a"]})
    pre = TabularPreprocessor().fit(train)
    assert pre.categories_["c"] == ["a", "b", "c"]
    test = pd.DataFrame({"c": ["a", None, "zzz", "c", np.nan]})
    codes, _ = pre.transform_arrays(test)
    assert codes[:, 0].tolist() == [1, 0, 0, 3, 0]
    assert list(pre.decode("c", [0, 1, 3])) == [None, "a", "c"]


def test_categorical_dtype_is_mapped_by_value_not_codes():
    train = pd.DataFrame({"c": pd.Categorical(["a", "b", "c"], categories=["a", "b", "c"])})
    pre = TabularPreprocessor().fit(train)
    # Same values, different category order and an extra unseen category.
    test = pd.DataFrame({"c": pd.Categorical(["c", "a", "q", None], categories=["q", "c", "a"])})
    codes, _ = pre.transform_arrays(test)
    assert codes[:, 0].tolist() == [3, 1, 0, 0]
    # A plain string column with the same values gives the same codes.
    strings, _ = pre.transform_arrays(pd.DataFrame({"c": ["c", "a", "q", None]}))
    np.testing.assert_array_equal(codes, strings)


def test_adult_test_codes_decode_to_the_original_values(fitted, adult_x):
    _, test = adult_x
    codes, _ = fitted.transform_arrays(test)
    for j, column in enumerate(fitted.cat_names_):
        decoded = pd.Series(fitted.decode(column, codes[:, j]), dtype=object)
        original = test[column].astype(object).where(test[column].notna(), None)
        known = original.isin(fitted.categories_[column])
        assert (decoded[known.to_numpy()].to_numpy() == original[known].to_numpy()).all()
        assert decoded[~known.to_numpy()].isna().all()
    # Holand-Netherlands appears once in train: with min_frequency=2 it folds to unknown.
    rare = TabularPreprocessor(min_frequency=2).fit(adult_x[0])
    assert "Holand-Netherlands" not in rare.categories_["native_country"]
    assert "Holand-Netherlands" in fitted.categories_["native_country"]


def test_min_frequency_fraction():
    frame = pd.DataFrame({"c": ["a"] * 90 + ["b"] * 9 + ["c"]})
    assert TabularPreprocessor(min_frequency=0.05).fit(frame).categories_["c"] == ["a", "b"]


def test_integer_categories_match_float_values_at_inference():
    pre = TabularPreprocessor().fit(pd.DataFrame({"k": [1, 2, 3, 1]}))
    assert pre.cat_names_ == ["k"]
    codes, _ = pre.transform_arrays(pd.DataFrame({"k": [3.0, np.nan, 2.0, 7.0]}))
    assert codes[:, 0].tolist() == [3, 0, 2, 0]


# ------------------------------------------------------------- continuous

def test_median_fill_indicator_and_standardisation():
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0, 100.0], "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    pre = TabularPreprocessor().fit(train)
    assert pre.medians_["x"] == 3.0
    assert pre.na_names_ == ["x"] and pre.cat_columns_ == ["x_na"]
    assert pre.embedding_sizes_["x_na"] == (3, 2)
    filled = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert pre.means_["x"] == pytest.approx(filled.mean())
    assert pre.stds_["x"] == pytest.approx(filled.std())
    codes, conts = pre.transform_arrays(train)
    # Filled column-major, handed over row-major (the network reads rows).
    assert codes.flags.c_contiguous and conts.flags.c_contiguous and conts.dtype == np.float32
    assert codes[:, 0].tolist() == [1, 1, 2, 1, 1]
    np.testing.assert_allclose(conts[:, 0], (filled - filled.mean()) / filled.std(), rtol=1e-6)
    assert np.isnan(train.loc[2, "x"])      # the caller's frame is left unfilled
    np.testing.assert_allclose(conts.mean(0), 0, atol=1e-6)
    # y had no missing value in training; at inference a NaN is filled, not an error.
    _, conts = pre.transform_arrays(pd.DataFrame({"x": [np.nan], "y": [np.nan]}))
    assert conts[0, 1] == pytest.approx((3.0 - 3.0) / pre.stds_["y"])


def test_constant_column_does_not_divide_by_zero():
    pre = TabularPreprocessor().fit(pd.DataFrame({"x": [2.5] * 10}))
    _, conts = pre.transform_arrays(pd.DataFrame({"x": [2.5, 3.5]}))
    assert np.isfinite(conts).all() and conts[:, 0].tolist() == [0.0, 1.0]


def test_robust_scaling_centers_on_the_median_and_clips_outliers_smoothly():
    rng = np.random.default_rng(0)
    income = rng.lognormal(10, 1, 4001)
    mostly_zero = np.r_[np.zeros(3601), rng.normal(5, 1, 400)]     # quartiles tie at 0
    train = pd.DataFrame({"income": income, "gain": mostly_zero, "constant": 7.0})
    pre = TabularPreprocessor(continuous_scaling="robust").fit(train)
    low, high = np.quantile(income, [0.25, 0.75])
    assert pre.means_["income"] == float(np.median(income))
    assert pre.stds_["income"] == pytest.approx(high - low, rel=1e-3)   # histogram quartiles
    assert pre.stds_["gain"] == pytest.approx(np.ptp(mostly_zero) / 2, rel=1e-6)
    assert pre.stds_["constant"] == 1.0
    _, conts = pre.transform_arrays(train)
    z = (income - pre.means_["income"]) / pre.stds_["income"]
    np.testing.assert_allclose(conts[:, 0], z / np.sqrt(1 + (z / 3) ** 2), rtol=1e-5)
    # Bounded, order kept, near the identity around the median.
    assert np.abs(conts).max() < 3 and np.median(conts[:, 0]) == 0.0
    order = np.argsort(income)
    assert (np.diff(conts[order, 0]) >= 0).all()
    # The non-zero values of the mostly-zero column stay apart (not all clipped to one value).
    assert len(np.unique(conts[3601:, 1])) > 300
    far = pre.transform_arrays(pd.DataFrame({"income": [1e12], "gain": [0.0],
                                             "constant": [7.0]}))[1]
    assert 2.99 < far[0, 0] <= 3.0     # float32 rounds the limit itself
    # Bin edges are in the same scale as the values, and the state survives JSON.
    edges = pre.bin_edges(8)[0]
    assert edges[0] == pytest.approx(conts[:, 0].min(), abs=1e-3)
    assert edges[-1] == pytest.approx(conts[:, 0].max(), abs=1e-3)
    restored = TabularPreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_array_equal(restored.transform_arrays(train)[1], conts)


def test_robust_scaling_from_parquet_matches_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.standard_t(2, 5000), "y": rng.exponential(3, 5000)})
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 4)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False),
                       tmp_path / f"part-{i}.parquet")
    memory = TabularPreprocessor(continuous_scaling="robust").fit(frame)
    streamed = TabularPreprocessor(continuous_scaling="robust").fit(str(tmp_path))
    assert streamed.means_ == memory.means_ and streamed.stds_ == memory.stds_
    np.testing.assert_array_equal(streamed.transform(frame), memory.transform(frame))


def test_unknown_scaling_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="'robust'"):
        TabularPreprocessor(continuous_scaling="minmax").fit(pd.DataFrame({"x": [1.0, 2.0]}))


def test_infinite_values_are_an_error_naming_column_and_count():
    frame = pd.DataFrame({"x": [1.0, np.inf, -np.inf, 2.0]})
    with pytest.raises(ValueError, match=r"'x' has 2 infinite"):
        TabularPreprocessor().fit(frame)
    pre = TabularPreprocessor().fit(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"'x' has 1 infinite"):
        pre.transform_arrays(pd.DataFrame({"x": [np.inf]}))


def test_string_in_continuous_column_names_column_and_value():
    pre = TabularPreprocessor(cont_names=["x"], cat_names=[]).fit(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"'x'.*'oops'"):
        pre.transform_arrays(pd.DataFrame({"x": [1.0, "oops", 3.0]}, dtype=object))
    with pytest.raises(ValueError, match=r"'x'.*'abc'"):
        TabularPreprocessor(cont_names=["x"]).fit(pd.DataFrame({"x": ["1", "abc"]}))
    # Python numbers in an object column are fine.
    _, conts = pre.transform_arrays(pd.DataFrame({"x": [1, 2.0, None]}, dtype=object))
    assert np.isfinite(conts).all()


# ------------------------------------------------------------- dates

def test_dates_expand_into_parts_and_elapsed():
    dates = pd.to_datetime(["2024-01-01", "2024-03-31", "2024-12-31", None, "2025-02-14"])
    frame = pd.DataFrame({"when": dates, "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    pre = TabularPreprocessor().fit(frame)
    assert pre.date_names_ == ["when"]
    assert pre.cat_columns_[:len(DATE_PARTS)] == [f"when_{p}" for p in DATE_PARTS]
    assert pre.cont_columns_ == ["v", "when_elapsed"]
    assert "when_elapsed_na" in pre.cat_columns_
    codes, conts = pre.transform_arrays(frame)
    decoded = {p: pre.decode(f"when_{p}", codes[:, pre.cat_columns_.index(f"when_{p}")])
               for p in DATE_PARTS}
    assert decoded["year"].tolist() == [2024, 2024, 2024, None, 2025]
    assert decoded["dayofweek"][0] == 0            # 2024-01-01 is a Monday
    assert decoded["dayofyear"][2] == 366           # leap year
    assert decoded["is_quarter_end"][1] is True
    assert decoded["is_year_end"][2] is True and decoded["is_year_start"][0] is True
    assert decoded["week"][0] == 1 and decoded["month"][4] == 2
    seconds = pd.Series(dates).dropna().astype("datetime64[ns]").astype("int64") / 1e9
    median = float(np.median(seconds))   # midway between 2024-03-31 and 2024-12-31
    assert pre.medians_["when_elapsed"] == pytest.approx(median)
    assert np.isfinite(conts).all()


# ------------------------------------------------------------- outputs

def test_to_tensors_and_sklearn_output(fitted, adult_x):
    codes, conts = fitted.to_tensors(adult_x[1])
    assert codes.dtype == torch.int64 and codes.shape == (16281, 9)
    assert conts.dtype == torch.float32 and conts.shape == (16281, 5)
    out = fitted.transform(adult_x[1])
    assert out.shape == (16281, 14)
    names = fitted.get_feature_names_out()
    assert list(names) == fitted.cat_columns_ + fitted.cont_columns_
    frame = TabularPreprocessor().set_output(transform="pandas").fit_transform(adult_x[0])
    assert list(frame.columns) == list(names)
    pipe = make_pipeline(TabularPreprocessor()).fit(adult_x[0])
    assert pipe.transform(adult_x[1]).shape == (16281, 14)
    column = ColumnTransformer([("pre", TabularPreprocessor(), ["age", "sex"])]).fit(adult_x[0])
    assert column.transform(adult_x[1]).shape == (16281, 2)


def test_column_major_arrays_hold_the_same_values(fitted, adult_x):
    codes, conts = fitted.transform_arrays(adult_x[1])
    assert codes.flags.c_contiguous and conts.flags.c_contiguous
    codes_f, conts_f = fitted.transform_arrays(adult_x[1], order="F")
    assert codes_f.flags.f_contiguous and conts_f.flags.f_contiguous
    assert not codes_f.flags.c_contiguous
    np.testing.assert_array_equal(codes_f, codes)
    np.testing.assert_array_equal(conts_f, conts)
    tensors = fitted.to_tensors(adult_x[1].iloc[:100], order="F")
    assert tensors[0].stride() == (1, 100) and tensors[1].stride() == (1, 100)
    assert torch.equal(tensors[0], torch.from_numpy(codes[:100]))
    with pytest.raises(ValueError, match=r"order must be 'C'.*order='K'"):
        fitted.transform_arrays(adult_x[1], order="K")


def _same_arrays(pre, table, order="C"):
    expected = pre.transform_arrays(table.to_pandas(), order=order)
    got = pre.transform_table(table, order=order)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(have, want)
        assert have.dtype == want.dtype and have.flags.f_contiguous == want.flags.f_contiguous


def test_arrow_tables_transform_as_their_pandas_frames(fitted, adult_x, tmp_path,
                                                       monkeypatch):
    # Categories as dictionary columns, integers as int64: Parquet written by pandas.
    adult_x[1].to_parquet(tmp_path / "adult.parquet", row_group_size=5000)
    table = pq.read_table(tmp_path / "adult.parquet")
    assert pa.types.is_dictionary(table.schema.field("workclass").type)
    for order in ("C", "F"):
        _same_arrays(fitted, table, order)
    # Only the integer-coded categorical column goes through pandas; nothing numeric does.
    encoded, numeric = [], []
    monkeypatch.setattr(Vocabulary, "codes", lambda self, series, column: (
        encoded.append(column), np.zeros(len(series), dtype=np.int64))[1])
    monkeypatch.setattr(preprocessing, "numeric_values",
                        lambda series, column: numeric.append(column))
    fitted.transform_table(table)
    assert encoded == ["education_num"] and numeric == []
    monkeypatch.undo()
    _same_arrays(fitted, pq.ParquetFile(tmp_path / "adult.parquet").read_row_group(1))
    _same_arrays(fitted, table.slice(0, 0))


def test_arrow_columns_of_every_kind_transform_as_in_pandas():
    rng = np.random.default_rng(0)
    n = 200
    colours = rng.choice(["red", "green", "blue"], n)
    frame = pd.DataFrame({
        "colour": colours, "shade": colours, "size": rng.choice([1, 2, 3], n),
        "grade": rng.choice(["a", "b"], n),
        "x": rng.normal(size=n), "count": rng.integers(0, 9, n), "small": rng.integers(0, 9, n),
        "flag": rng.random(n) < 0.5,
        "when": pd.date_range("2024-01-01", periods=n, freq="D"),
    })
    frame.loc[::7, "x"] = np.nan
    pre = TabularPreprocessor(cat_names=["colour", "shade", "size", "grade"],
                              cont_names=["x", "count", "small", "flag"]).fit(frame)
    assert pre.date_names_ == ["when"]
    table = pa.table({
        # a dictionary with unseen and missing values; split in two chunks with their own
        # dictionaries; a plain string column
        "colour": pa.array(["red", "violet", None, "blue"] * 50).dictionary_encode(),
        "shade": pa.chunked_array([pa.array(["blue", "red"] * 50).dictionary_encode(),
                                   pa.array(["green", "pink"] * 50).dictionary_encode()]),
        "size": pa.array(["1", "2", "3", "9"] * 50).dictionary_encode(),  # trained as integers
        "grade": pa.array(["a", "b", None, "c"] * 50, pa.large_string()),
        "x": pa.array(np.r_[rng.normal(size=199), np.nan]),          # NaN, no null
        "count": pa.array([1, None, 3, 4] * 50, pa.int64()),          # nulls
        "small": pa.array(np.arange(200) % 7, pa.uint8()),
        "flag": pa.array([True, False] * 100),
        "when": pa.array(pd.date_range("2025-01-01", periods=n, freq="h")),
    })
    with pytest.warns(UserWarning, match="'size' held integer values"):
        expected = pre.transform_arrays(table.to_pandas())
    with pytest.warns(UserWarning, match="'size' held integer values"):
        got = pre.transform_table(table)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(have, want)
    assert (got[0][1::4, pre.cat_columns_.index("colour")] == 0).all()   # unseen: unknown
    assert (got[0][:, pre.cat_columns_.index("size")] == 0).all()
    float32 = table.set_column(table.schema.get_field_index("x"), "x",
                               pa.array(rng.normal(size=n).astype(np.float32)))
    _same_arrays(pre, float32.drop_columns(["size"]).append_column("size", pa.array(
        rng.choice([1, 2, 3], n))))


def test_arrow_table_errors_name_the_column(fitted, adult_x):
    table = pa.Table.from_pandas(adult_x[1].iloc[:50], preserve_index=False)
    with pytest.raises(ValueError, match=r"columns missing from the frame: \['age'\]"):
        fitted.transform_table(table.drop_columns(["age"]))
    huge = table.set_column(table.schema.get_field_index("fnlwgt"), "fnlwgt",
                            pa.array([np.inf] + [1.0] * 49))
    with pytest.raises(ValueError, match="'fnlwgt' has 1 infinite value"):
        fitted.transform_table(huge)
    with pytest.raises(TypeError, match=r"pyarrow\.Table"):
        fitted.transform_table(adult_x[1])
    with pytest.raises(ValueError, match=r"order must be 'C'.*order='A'"):
        fitted.transform_table(table, order="A")


# ------------------------------------------------------------- streaming fit

def test_streaming_fit_from_parquet_matches_in_memory(adult_x, tmp_path):
    frame = adult_x[0].copy()
    frame.loc[::7, "age"] = np.nan   # give a continuous column missing values
    folder = tmp_path / "adult"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 5)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=3000)
    memory = TabularPreprocessor().fit(frame)
    streamed = TabularPreprocessor().fit(str(folder))
    assert streamed.cat_names_ == memory.cat_names_
    assert streamed.cont_names_ == memory.cont_names_
    assert streamed.categories_ == memory.categories_
    assert streamed.embedding_sizes_ == memory.embedding_sizes_
    assert streamed.medians_ == memory.medians_    # exact, not approximate
    assert memory.medians_["age"] == float(np.nanmedian(frame["age"]))
    for column in memory.means_:
        assert streamed.means_[column] == pytest.approx(memory.means_[column], rel=1e-12)
        assert streamed.stds_[column] == pytest.approx(memory.stds_[column], rel=1e-12)
    np.testing.assert_array_equal(streamed.transform(frame), memory.transform(frame))


def test_exact_median_with_even_count_and_ties():
    values = np.array([5.0, 1.0, 1.0, 1.0, 2.0, 9.0, 9.0, np.nan, 1e9, -3.0])
    pre = TabularPreprocessor().fit(pd.DataFrame({"x": values}))
    assert pre.medians_["x"] == float(np.nanmedian(values))


# ------------------------------------------------------------- state

def test_pickle_and_json_state_round_trip(fitted, adult_x):
    expected = fitted.transform(adult_x[1])
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(adult_x[1]), expected)
    state = json.loads(json.dumps(fitted.to_dict()))
    restored = TabularPreprocessor.from_dict(state)
    np.testing.assert_array_equal(restored.transform(adult_x[1]), expected)
    assert restored.embedding_sizes_ == fitted.embedding_sizes_
    with pytest.raises(ValueError, match="newer tabembed"):
        TabularPreprocessor.from_dict({**state, "version": 99})


def test_continuous_values_are_the_transformed_training_values_of_few_valued_columns():
    from tabembed.preprocessing import FEW_VALUES

    rng = np.random.default_rng(0)
    n = 4000
    frame = pd.DataFrame({
        "age": rng.integers(17, 90, n).astype(float),          # few values, some missing
        "income": rng.lognormal(10, 1, n),                       # many values
        "rating": rng.choice([1.0, 2.5, 4.0], n),
        "when": pd.date_range("2020-01-01", periods=n, freq="D"),   # elapsed: many
    })
    frame.loc[::7, "age"] = np.nan
    pre = TabularPreprocessor(continuous_scaling="quantile").fit(frame)
    assert set(pre.few_values_) == {"age", "rating"}
    assert pre.few_values_["rating"] == [1.0, 2.5, 4.0]
    _, continuous = pre.transform_arrays(frame)
    values = dict(zip(pre.cont_columns_, pre.continuous_values(), strict=True))
    assert values["income"] is None and values["when_elapsed"] is None
    for column in ("age", "rating"):
        j = pre.cont_columns_.index(column)
        seen = continuous[:, j][~frame[column].isna().to_numpy()]
        # Exactly the float32 numbers transform gives, each once, sorted.
        np.testing.assert_array_equal(values[column], np.unique(seen))
    restored = TabularPreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    for got, want in zip(restored.continuous_values(), pre.continuous_values(), strict=True):
        assert (got is None and want is None) or np.array_equal(got, want)
    too_many = {**pre.to_dict(), "few_values": {"age": list(range(FEW_VALUES + 1))}}
    with pytest.raises(ValueError, match="damaged TabularPreprocessor state"):
        TabularPreprocessor.from_dict(too_many)
    older = {k: v for k, v in pre.to_dict().items() if k != "few_values"}
    assert TabularPreprocessor.from_dict(older).continuous_values() == [None] * 4


def test_few_values_are_bounded_over_all_columns(monkeypatch):
    from tabembed import preprocessing

    monkeypatch.setattr(preprocessing, "FEW_VALUES_TOTAL", 150)
    frame = pd.DataFrame({f"x{j}": np.tile(np.arange(60.0) + 0.5, 5) for j in range(4)})
    pre = TabularPreprocessor().fit(frame)
    assert list(pre.few_values_) == ["x0", "x1"]          # 60 + 60, then 180 > 150


# ------------------------------------------------------------- bad input

def test_missing_columns_are_all_named_and_extra_columns_ignored(fitted, adult_x):
    with pytest.raises(ValueError, match=r"\['age', 'sex'\]|\['sex', 'age'\]"):
        fitted.transform_arrays(adult_x[1].drop(columns=["age", "sex"]))
    extra = adult_x[1].assign(something_else=1)
    np.testing.assert_array_equal(fitted.transform(extra), fitted.transform(adult_x[1]))


def test_empty_all_missing_duplicate_and_unhashable():
    with pytest.raises(ValueError, match="empty"):
        TabularPreprocessor().fit(pd.DataFrame({"a": pd.Series([], dtype=float)}))
    with pytest.warns(UserWarning, match=r"'c' has no non-missing.*unknown token"):
        empty = TabularPreprocessor().fit(pd.DataFrame({"c": [None, None], "x": [1.0, 2.0]},
                                                       dtype=object))
    assert empty.categories_["c"] == [] and empty.embedding_sizes_["c"] == (1, 1)
    codes, _ = empty.transform_arrays(pd.DataFrame({"c": ["seen later", None], "x": [1.0, 2.0]}))
    assert codes[:, 0].tolist() == [0, 0]
    assert TabularPreprocessor.from_dict(empty.to_dict()).categories_["c"] == []
    with pytest.raises(ValueError, match=r"'x' has no non-missing"):
        TabularPreprocessor().fit(pd.DataFrame({"x": [np.nan, np.nan]}))
    duplicated = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(ValueError, match="duplicate column names"):
        TabularPreprocessor().fit(duplicated)
    with pytest.raises(ValueError, match=r"'tags' holds unhashable"):
        TabularPreprocessor().fit(pd.DataFrame({"tags": [[1], [2]]}))
    pre = TabularPreprocessor().fit(pd.DataFrame({"tags": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"'tags' holds unhashable"):
        pre.transform_arrays(pd.DataFrame({"tags": [["a"], {"b": 1}]}))


def test_caller_frame_is_never_modified(adult_x):
    train = adult_x[0].copy()
    train.loc[::5, "age"] = np.nan
    train["when"] = pd.date_range("2020-01-01", periods=len(train), freq="h")
    snapshot = train.copy(deep=True)
    pre = TabularPreprocessor().fit(train)
    pre.transform(train)
    pd.testing.assert_frame_equal(train, snapshot)


# ------------------------------------------------------------- properties

_values = st.one_of(
    st.none(), st.just(""), st.text(max_size=5), st.integers(-3, 3),
    st.sampled_from(["é", "日本", "🙂", "a b", "NaN"]),
)


@st.composite
def _frames(draw):
    n = draw(st.integers(1, 25))
    cats = draw(st.lists(_values, min_size=n, max_size=n))
    cats = [str(v) if isinstance(v, int) else v for v in cats]
    nums = draw(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=n, max_size=n))
    flags = draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n))
    frame = pd.DataFrame({"cat": pd.Series(cats, dtype=object),
                          "num": pd.Series(nums, dtype=float),
                          "flag": pd.Series(flags, dtype=object)})
    if draw(st.booleans()):
        frame["cat"] = frame["cat"].astype("category")
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train=_frames(), test=_frames())
def test_transform_never_crashes_and_codes_stay_in_range(train, test):
    roles = {"cat_names": ["cat", "flag"], "cont_names": ["num"]}
    if train["num"].isna().all():
        with pytest.raises(ValueError, match="no non-missing"):
            TabularPreprocessor(**roles).fit(train)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # an all-missing categorical column: a warning
        pre = TabularPreprocessor(**roles).fit(train)
    codes, conts = pre.transform_arrays(test)
    assert codes.shape == (len(test), len(pre.cat_columns_))
    for j, column in enumerate(pre.cat_columns_):
        assert codes[:, j].min() >= 0
        assert codes[:, j].max() < pre.embedding_sizes_[column][0]
    assert np.isfinite(conts).all()
    # Training rows round-trip through decode.
    train_codes, _ = pre.transform_arrays(train)
    decoded = pre.decode("cat", train_codes[:, 0])
    present = train["cat"].notna().to_numpy()
    assert list(decoded[present]) == list(train["cat"].astype(object)[present])


def test_few_rows_encode_exactly_as_many_rows():
    """A few rows of a string column take a dictionary path (fast one-row prediction);
    it must give the codes the general path gives, unknown and missing values included."""
    train = pd.DataFrame({"colour": ["red", "green", "blue", "green"] * 5,
                          "size": pd.Categorical(["s", "m", "l", "m"] * 5)})
    preprocessor = TabularPreprocessor(cat_names=["colour", "size"]).fit(train)
    probe = pd.DataFrame({
        "colour": pd.array(["green", "purple", None, "red", ""], dtype="string"),
        "size": pd.Categorical(["l", "xl", None, "s", "m"], categories=["xl", "s", "m", "l"]),
    })
    many = pd.concat([probe] * 10, ignore_index=True)      # over the 16-row limit
    assert len(many) > 16
    codes_few, _ = preprocessor.transform_arrays(probe)
    codes_many, _ = preprocessor.transform_arrays(many)
    np.testing.assert_array_equal(codes_many[: len(probe)], codes_few)
    assert codes_few[:, 0].tolist()[1:3] == [0, 0] and codes_few[:, 1].tolist()[1:3] == [0, 0]
    # Values of other types fall back to the general path: 1 is not the string "1".
    mixed = pd.DataFrame({"colour": pd.Series(["red", 1], dtype=object),
                          "size": ["s", "m"]})
    assert preprocessor.transform_arrays(mixed)[0][:, 0].tolist() == [
        preprocessor.encode("colour", ["red"])[0], 0]


def test_few_rows_of_integer_and_repeated_categorical_columns_encode_as_many_rows():
    train = pd.DataFrame({"level": [1, 2, 3, 2, 10] * 4,
                          "size": pd.Categorical(["s", "m", "l", "m", "s"] * 4)})
    preprocessor = TabularPreprocessor(cat_names=["level", "size"]).fit(train)
    probe = pd.DataFrame({
        "level": np.array([10, 7, 1, -3, 2], dtype=np.int64),
        "size": pd.Categorical(["l", "xl", None, "s", "m"], categories=["xl", "s", "m", "l"]),
    })
    many = pd.concat([probe] * 10, ignore_index=True)
    _, _ = preprocessor.transform_arrays(probe.iloc[[0]])     # fills the category cache
    codes_many, _ = preprocessor.transform_arrays(many)
    for row in range(len(probe)):         # one-row frames share the probe's dtypes
        codes_one, _ = preprocessor.transform_arrays(probe.iloc[[row]])
        np.testing.assert_array_equal(codes_one[0], codes_many[row])
    assert codes_many[1].tolist() == [0, 0] and codes_many[3, 0] == 0
    # Another categorical dtype (other categories) is mapped afresh, not from the cache.
    other = pd.DataFrame({"level": [3], "size": pd.Categorical(["m"], categories=["m", "x"])})
    assert preprocessor.transform_arrays(other)[0][0].tolist() == [
        preprocessor.encode("level", [3])[0], preprocessor.encode("size", ["m"])[0]]
