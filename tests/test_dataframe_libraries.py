"""pandas, polars and Arrow tables in, with names and types kept: the same data gives the
same model and the same predictions whichever library holds it (tabembed._validation)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    EntityEmbeddingTransformer,
    ImplicitRecommender,
    TabularPreprocessor,
)
from tabembed._validation import arrow_table, as_frame, has_feature_names

pl = pytest.importorskip("polars")

FAST = {"epochs": 2, "lr": 0.01, "random_state": 0}


def _table(n=240, seed=0) -> pd.DataFrame:
    """Every column type the preprocessor reads: a categorical, strings with missing values,
    dates, small integers (categorical), large integers and floats (continuous), booleans."""
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 600, n), unit="D")
    return pd.DataFrame({
        "shop": pd.Categorical(rng.choice(["north", "south", "east"], n)),
        "city": pd.Series(rng.choice(["Lyon", "Oslo", None], n), dtype="str"),
        "opened": days.astype("datetime64[ms]"),
        "floor": rng.integers(0, 4, n),
        "visits": rng.integers(0, 10_000, n),
        "price": np.where(rng.random(n) < 0.05, np.nan, rng.normal(10.0, 2.0, n)),
        "promo": rng.random(n) < 0.3,
    })


def _libraries(frame: pd.DataFrame) -> dict:
    return {"pandas": frame, "polars": pl.from_pandas(frame),
            "arrow": pa.Table.from_pandas(frame, preserve_index=False)}


def _target(values: np.ndarray) -> dict:
    return {"pandas": pd.Series(values, name="y"), "polars": pl.Series("y", values),
            "arrow": pa.chunked_array([pa.array(values)])}


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_same_predictions_from_pandas_polars_and_arrow(kind):
    X, X_new = _table(), _table(60, seed=1)
    signal = (X["shop"] == "north").to_numpy() + X["price"].fillna(10).to_numpy() / 10
    if kind == "classifier":
        cls, y, method = EmbeddingMLPClassifier, np.where(signal > 1.3, "yes", "no"), \
            "predict_proba"
    else:
        cls, y, method = EmbeddingMLPRegressor, signal, "predict"
    inputs, targets, new = _libraries(X), _target(y), _libraries(X_new)
    models = {name: cls(**FAST).fit(inputs[name], targets[name]) for name in inputs}
    expected = getattr(models["pandas"], method)(X_new)
    for name, model in models.items():
        assert list(model.feature_names_in_) == list(X.columns), name
        assert model.preprocessor_.date_names_ == ["opened"], name
        assert model.preprocessor_.cat_names_ == ["shop", "city", "promo", "floor"], name
        for given in new:
            # Fitted from one library, predicting from each: the same numbers.
            np.testing.assert_array_equal(getattr(model, method)(new[given]), expected,
                                          err_msg=f"fitted from {name}, given {given}")
    if kind == "classifier":
        np.testing.assert_array_equal(models["polars"].predict(new["polars"]),
                                      models["pandas"].predict(X_new))


def test_polars_names_reach_the_model_and_a_renamed_frame_is_refused():
    X, y = _table(), np.arange(240.0) % 7
    model = EmbeddingMLPRegressor(**FAST).fit(pl.from_pandas(X), y)
    assert list(model.feature_names_in_) == list(X.columns)     # not x0 .. x6
    renamed = pl.from_pandas(X).rename({"price": "cost"})
    with pytest.raises(ValueError, match="price"):
        model.predict(renamed)


def test_polars_categorical_enum_string_are_categories_and_dates_stay_dates():
    import datetime as dt

    frame = pl.DataFrame({
        "colour": pl.Series(["red", "blue", "red", None], dtype=pl.Categorical),
        "size": pl.Series(["S", "L", "S", "S"], dtype=pl.Enum(["S", "M", "L"])),
        "name": ["a", "b", None, "a"],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 2, 29), None, dt.date(2025, 7, 4)],
        "at": [dt.datetime(2024, 1, 1, 8), None, dt.datetime(2024, 3, 1), None],
        "amount": [1.5, 2.5, None, 4.0],
    })
    converted = as_frame(frame)
    assert list(converted.columns) == frame.columns
    assert isinstance(converted["colour"].dtype, pd.CategoricalDtype)
    # An Enum's declared values are its categories, as a pandas categorical's are.
    assert list(converted["size"].cat.categories) == ["S", "M", "L"]
    assert pd.api.types.is_datetime64_dtype(converted["day"])
    assert pd.api.types.is_datetime64_dtype(converted["at"])
    pre = TabularPreprocessor().fit(frame)
    assert pre.cat_names_ == ["colour", "size", "name"]
    assert pre.date_names_ == ["day", "at"]
    assert pre.cont_names_ == ["amount"]
    assert pre.categories_["size"] == ["L", "M", "S"]      # M declared, never seen: kept
    same = frame.to_pandas()
    for a, b in zip(pre.transform_arrays(frame), pre.transform_arrays(same)):
        np.testing.assert_array_equal(a, b)


def test_arrow_dates_are_dates_in_memory_and_from_parquet(tmp_path):
    """A date32 column is a date whether the table is in memory or streamed from Parquet,
    so a model fitted one way predicts the other way on the same columns."""
    frame = _table()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(2, "opened", table.column("opened").cast(pa.date32()))
    pq.write_table(table, tmp_path / "part.parquet")
    in_memory = TabularPreprocessor().fit(table)
    streamed = TabularPreprocessor().fit(tmp_path / "part.parquet")
    assert in_memory.date_names_ == streamed.date_names_ == ["opened"]
    assert in_memory.categories_ == streamed.categories_
    for a, b in zip(in_memory.transform_arrays(table), streamed.transform_table(table)):
        np.testing.assert_array_equal(a, b)


def test_record_batches_and_capsule_tables_are_tables():
    frame = _table(20)
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    assert arrow_table(batch).num_rows == 20
    assert arrow_table(pl.from_pandas(frame)).column_names == list(frame.columns)
    assert arrow_table(np.zeros((2, 2))) is None and arrow_table(frame) is None
    assert has_feature_names(pl.from_pandas(frame)) and has_feature_names(batch)
    assert not has_feature_names(np.zeros((2, 2)))


def test_lazy_frames_and_series_get_a_clear_error():
    frame = pl.from_pandas(_table(20))
    with pytest.raises(TypeError, match=r"collect\(\)"):
        as_frame(frame.lazy())
    with pytest.raises(TypeError, match="one-column DataFrame"):
        as_frame(frame["price"])


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_set_output_for_the_transformers(output):
    X = _table()
    y = (X["shop"] == "north").to_numpy() * 2.0 + X["floor"].to_numpy()
    transformer = EntityEmbeddingTransformer(**FAST).fit(pl.from_pandas(X), y)
    plain = transformer.transform(X)
    transformer.set_output(transform=output)
    for given in _libraries(X).values():
        result = transformer.transform(given)
        assert type(result).__module__.split(".")[0] == output
        assert list(result.columns) == list(transformer.get_feature_names_out())
        np.testing.assert_array_equal(result.to_numpy(), plain)
    preprocessor = TabularPreprocessor().set_output(transform=output)
    result = preprocessor.fit_transform(pl.from_pandas(X))
    assert type(result).__module__.split(".")[0] == output
    assert list(result.columns) == list(preprocessor.get_feature_names_out())
    np.testing.assert_array_equal(result.to_numpy(), preprocessor.transform(X).to_numpy())
    if output == "pandas":
        # A pandas input's index is kept.
        shifted = X.set_axis(X.index + 100)
        assert list(transformer.transform(shifted).index[:2]) == [100, 101]


def test_polars_frame_through_a_pipeline():
    X = _table()
    y = (X["shop"] == "north").to_numpy() * 2.0 + X["floor"].to_numpy()
    pipeline = make_pipeline(EntityEmbeddingTransformer(**FAST), Ridge())
    pipeline.set_output(transform="polars").fit(pl.from_pandas(X), y)
    predictions = pipeline.predict(pa.Table.from_pandas(X, preserve_index=False))
    np.testing.assert_allclose(predictions, pipeline.predict(X))
    assert np.corrcoef(predictions, y)[0, 1] > 0.5


def _ratings():
    rng = np.random.default_rng(0)
    n = 1500
    genres = {i: rng.choice(["Action", "Drama", "Action|Drama", "Comedy"]) for i in range(60)}
    items = rng.integers(0, 60, n)
    return pd.DataFrame({"user": rng.integers(0, 80, n), "item": items,
                         "genres": [genres[i] for i in items]}), \
        rng.integers(1, 6, n).astype(np.float64)


def test_recommenders_from_pandas_polars_and_arrow():
    X, y = _ratings()
    inputs, targets = _libraries(X), _target(y)
    options = {"epochs": 1, "random_state": 0}
    explicit = {name: EmbeddingRecommender(**options).fit(inputs[name], targets[name])
                for name in inputs}
    implicit = {name: ImplicitRecommender(**options).fit(inputs[name]) for name in inputs}
    new_item = {"item": [999], "genres": ["Action|Comedy"]}
    expected_vectors = explicit["pandas"].item_vectors(pd.DataFrame(new_item))
    expected_similar = explicit["pandas"].similar_items(999, 5, item_features={
        "genres": "Action|Comedy"})
    for name in inputs:
        model = explicit[name]
        assert list(model.feature_names_in_) == ["user", "item", "genres"]
        np.testing.assert_array_equal(model.predict(inputs["pandas"]),
                                      explicit["pandas"].predict(X))
        pd.testing.assert_frame_equal(model.recommend(3, 5), explicit["pandas"].recommend(3, 5))
        for given in _libraries(pd.DataFrame(new_item)).values():
            pd.testing.assert_frame_equal(model.item_vectors(given), expected_vectors)
            one_row = (given[["genres"]] if isinstance(given, pd.DataFrame)
                       else given.select(["genres"]))
            pd.testing.assert_frame_equal(
                model.similar_items(999, 5, item_features=one_row), expected_similar)
        pd.testing.assert_frame_equal(implicit[name].recommend(3, 5),
                                      implicit["pandas"].recommend(3, 5))
