"""Column names of any type a DataFrame allows round-trip through save and load (JSON turns
dict keys into strings), or are refused with a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tabembed
from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    EntityEmbeddingTransformer,
    TabularPreprocessor,
)

SMALL = dict(epochs=1, lr=1e-2, hidden=(8,), random_state=0)


def _frame(names, n=120, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=n), rng.choice(["a", "b", "c"], n), rng.integers(0, 4, n),
              np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))]
    return pd.DataFrame(dict(zip(names, values)))


NAMES = {
    "ints": [0, 1, 2, 3],
    "floats": [0.5, 1.5, 2.0, -3.25],
    "mixed": [0, "b", 2.5, "d"],
    "numpy ints": list(np.arange(4)),
}


@pytest.mark.parametrize("names", NAMES.values(), ids=NAMES.keys())
@pytest.mark.parametrize("cls", [EmbeddingMLPClassifier, EmbeddingMLPRegressor,
                                 EntityEmbeddingTransformer])
def test_mlp_estimators_round_trip_non_string_names(cls, names, tmp_path):
    X = _frame(names)
    y = (X[names[0]] > 0).astype(int) if cls is not EmbeddingMLPRegressor else X[names[0]] * 2
    model = cls(**SMALL).fit(X, y)
    loaded = tabembed.load(model.save(tmp_path / "model.tabembed"))
    if cls is EntityEmbeddingTransformer:
        np.testing.assert_allclose(loaded.transform(X), model.transform(X), rtol=1e-6)
    else:
        np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)
    assert list(loaded.feature_names_in_) == list(model.feature_names_in_)


def test_preprocessor_state_round_trips_non_string_names():
    X = _frame([0, 1.5, 2, 3])
    fitted = TabularPreprocessor(embedding_sizes={1.5: 3}).fit(X)
    restored = TabularPreprocessor.from_dict(fitted.to_dict())
    for a, b in zip(fitted.transform_arrays(X), restored.transform_arrays(X)):
        np.testing.assert_array_equal(a, b)
    assert restored.embedding_sizes_ == fitted.embedding_sizes_
    assert restored.cat_names_ == fitted.cat_names_ and 1.5 in restored.categories_


@pytest.mark.parametrize("model", ["dot", "neural"])
def test_recommender_with_integer_id_columns_round_trips(model, tmp_path):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 12, 300)
    X = pd.DataFrame({0: users, 1: rng.integers(0, 15, 300), 2: users % 3})  # 2: user feature
    y = rng.integers(1, 6, 300).astype(float)
    fitted = EmbeddingRecommender(user_column=0, item_column=1, epochs=1, random_state=0,
                                  model=model).fit(X, y)
    loaded = tabembed.load(fitted.save(tmp_path / "r.tabembed"))
    np.testing.assert_allclose(loaded.predict(X), fitted.predict(X), rtol=1e-6)
    pd.testing.assert_frame_equal(loaded.recommend(3, k=4), fitted.recommend(3, k=4))


def test_names_that_collide_as_text_or_have_no_json_form_are_refused_at_save(tmp_path):
    X = pd.DataFrame({1: [1.0, 2.0, 3.0, 4.0], "1": ["a", "b", "a", "b"]})
    model = EmbeddingMLPClassifier(**SMALL).fit(X, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="same name as text"):
        model.save(tmp_path / "m.tabembed")
    assert not list(tmp_path.iterdir())


def _multi_index(n=120):
    X = _frame(["a", "b", "c", "d"], n)
    X.columns = pd.MultiIndex.from_tuples([("num", "a"), ("cat", "b"), ("int", "c"),
                                           ("num", "d")])
    return X


@pytest.mark.parametrize("kind", ["MultiIndex", "tuple"])
def test_multi_index_or_tuple_names_are_refused_at_fit_with_the_fix(kind):
    """They crashed at fit with "unhashable type: 'list'" (a 2-D array of names)."""
    X = _multi_index()
    if kind == "tuple":
        X.columns = [*[tuple(c) for c in X.columns][:2], "c", "d"]
        assert not isinstance(X.columns, pd.MultiIndex)
    y = (X.iloc[:, 0] > 0).astype(int)
    flatten = rf"{kind} column names \(e\.g\. \('num', 'a'\)\).*flatten them"
    for estimator in (EmbeddingMLPClassifier(**SMALL), EntityEmbeddingTransformer(**SMALL),
                      TabularPreprocessor()):
        with pytest.raises(ValueError, match=flatten):
            estimator.fit(X, y)
    ratings = pd.DataFrame({("id", "user"): [1, 2, 3, 1], ("id", "item"): [5, 6, 5, 7]})
    with pytest.raises(ValueError, match="flatten them"):
        EmbeddingRecommender(epochs=1).fit(ratings, [1.0, 2.0, 3.0, 4.0])
    flat = X.copy()
    flat.columns = ["_".join(map(str, c)) if isinstance(c, tuple) else c for c in X.columns]
    model = EmbeddingMLPClassifier(**SMALL).fit(flat, y)     # the fix the message gives
    assert model.feature_names_in_.tolist()[:2] == ["num_a", "cat_b"]
    with pytest.raises(ValueError, match="flatten them"):
        model.predict(X)
