"""Top-k through the approximate nearest-neighbour index (issue 32): the same lists as the
exact search on catalogues small enough for the graph search to be exhaustive, seen items
excluded exactly, biases folded into the inner product, the index rebuilt after loading and
never pickled, and recommend_all streamed to Parquet.

Tests that build an index skip without faiss (``pip install tabembed[ann]``); the exact path
and the ``index="auto"`` switch are tested either way."""

import os
import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import tabembed
from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender
from tabembed.recommenders import nearest_neighbours as nn_module

N_USERS, N_ITEMS, N_FACTORS = 40, 300, 8


def _interactions(seed=0):
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.arange(N_USERS), rng.integers(0, N_USERS, 1500)])
    items = np.concatenate([np.arange(N_ITEMS), rng.integers(0, N_ITEMS, 1540 - N_ITEMS)])
    X = pd.DataFrame({"user": [f"u{u}" for u in users], "item": items})
    return X, rng.uniform(1, 5, len(X))


def _plant(model, seed=1, scale=0.5):
    """Well-separated random factors and biases (no near-ties): the quality of the fit is
    irrelevant, the test compares two searches of the same scores."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for table in (model.user_factors, model.item_factors):
            weights = torch.tensor(rng.normal(0, scale, tuple(table.weight.shape)),
                                   dtype=torch.float32)
            weights[0] = 0
            table.weight.copy_(weights)
        bias = torch.tensor(rng.normal(0, 0.5, tuple(model.item_bias.weight.shape)),
                            dtype=torch.float32)
        bias[0] = 0
        model.item_bias.weight.copy_(bias)


def _fitted(ranking="rating", **options):
    X, y = _interactions()
    recommender = EmbeddingRecommender(n_factors=N_FACTORS, epochs=1, ranking=ranking,
                                       random_state=0, **options).fit(X, y)
    _plant(recommender.model_)
    if recommender.ranker_ is not None:
        _plant(recommender.ranker_.model_, seed=2)
    recommender._scorer_cache = None
    return recommender, X


@pytest.fixture(scope="module")
def rating():
    return _fitted(ranking_shrinkage=0, min_support=0)


@pytest.fixture(scope="module")
def shrunk():
    """Support shrinkage and a minimum support: both change the folded bias."""
    return _fitted(ranking_shrinkage=5, min_support=3)


@pytest.fixture(scope="module")
def hybrid():
    return _fitted(ranking="hybrid")


def _users(X):
    return [*pd.unique(X["user"])[:12], "someone new"]


def _assert_same_lists(ann, exact):
    assert ann[ann.columns[:-1]].equals(exact[exact.columns[:-1]])
    np.testing.assert_allclose(ann["score"], exact["score"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- without faiss too

def test_auto_ranks_exactly_below_the_threshold_or_without_faiss(rating, monkeypatch):
    recommender, X = rating
    recommender._index_cache = None
    exact = recommender.recommend(_users(X), k=5, index="exact")
    # Below ANN_MIN_ITEMS: exact, no index built.
    _assert_same_lists(recommender.recommend(_users(X), k=5), exact)
    assert not recommender._index_cache
    # Above it without faiss: exact too.
    monkeypatch.setattr(nn_module, "ANN_MIN_ITEMS", 10)
    monkeypatch.setattr(nn_module, "available", lambda: False)
    _assert_same_lists(recommender.recommend(_users(X), k=5, index="auto"), exact)
    assert not recommender._index_cache


def test_ann_without_faiss_is_a_clear_error(rating, monkeypatch):
    recommender, _ = rating
    monkeypatch.setattr(nn_module, "available", lambda: False)
    with pytest.raises(ImportError, match=r"tabembed\[ann\]"):
        recommender.recommend("u1", index="ann")
    with pytest.raises(ImportError, match=r"tabembed\[ann\]"):
        recommender.similar_items(0, index="ann")
    with pytest.raises(ValueError, match="index must be one of"):
        recommender.recommend("u1", index="fast")


def test_recommend_all_to_parquet_equals_recommend(rating, tmp_path):
    recommender, _ = rating
    path = recommender.recommend_all(k=4, path=tmp_path / "lists.parquet", batch_users=7,
                                     index="exact")
    written = pq.read_table(path).to_pandas()
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-N_USERS // 7)
    expected = recommender.recommend_all(k=4, index="exact")
    assert written[["user", "item"]].equals(expected[["user", "item"]])
    np.testing.assert_allclose(written["score"], expected["score"])
    for user in ("u0", "u17"):
        one = recommender.recommend(user, k=4, index="exact")
        assert written.loc[written["user"] == user, "item"].tolist() == one["item"].tolist()


def test_recommend_all_to_parquet_leaves_nothing_on_failure(rating, tmp_path, monkeypatch):
    recommender, _ = rating
    path = tmp_path / "lists.parquet"
    path.write_bytes(b"the user's file")
    calls = []
    real = type(recommender)._top_k

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(recommender), "_top_k", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        recommender.recommend_all(k=3, path=path, batch_users=10, index="exact")
    assert path.read_bytes() == b"the user's file"
    assert sorted(os.listdir(tmp_path)) == ["lists.parquet"]


def test_recommend_all_refuses_a_directory(rating, tmp_path):
    recommender, _ = rating
    with pytest.raises(IsADirectoryError, match="not a regular file"):
        recommender.recommend_all(path=tmp_path)
    with pytest.raises(ValueError, match="batch_users"):
        recommender.recommend_all(path=tmp_path / "x.parquet", batch_users=0)


# ---------------------------------------------------------------- with faiss

@pytest.fixture
def faiss():
    return pytest.importorskip("faiss")


@pytest.mark.parametrize("name", ["rating", "shrunk", "hybrid"])
def test_ann_lists_equal_exact_lists(name, request, faiss):
    recommender, X = request.getfixturevalue(name)
    for options in ({}, {"exclude_seen": False}, {"filter_items": [0, 5, 7, 9]}):
        exact = recommender.recommend(_users(X), k=10, index="exact", **options)
        ann = recommender.recommend(_users(X), k=10, index="ann", **options)
        _assert_same_lists(ann, exact)
    # The index is the ranking's order itself unless the ranking mixes a squashed rating in.
    assert recommender._index_cache["ranking"].exact == (name != "hybrid")


def test_hybrid_candidates_are_rescored_exactly(hybrid, faiss, monkeypatch):
    recommender, X = hybrid
    recommender._index_cache = None
    monkeypatch.setattr(nn_module, "CANDIDATES", 40)
    exact = recommender.recommend(_users(X), k=10, index="exact")
    _assert_same_lists(recommender.recommend(_users(X), k=10, index="ann"), exact)


def test_seen_items_are_excluded(rating, faiss):
    recommender, X = rating
    lists = recommender.recommend(_users(X)[:-1], k=20, index="ann")
    seen = set(zip(X["user"], X["item"]))
    assert not any((u, i) in seen for u, i in zip(lists["user"], lists["item"]))
    assert (lists.groupby("user").size() == 20).all()


def test_a_huge_item_bias_ranks_first(faiss):
    recommender, _ = _fitted(ranking_shrinkage=0, min_support=0)
    with torch.no_grad():
        recommender.model_.item_bias.weight[1 + 123] = 1e3   # item 123 (code 124)
    lists = recommender.recommend(["u0", "u1", "someone new"], k=3, index="ann",
                                  exclude_seen=False)
    assert (lists.groupby("user")["item"].first() == 123).all()


def test_auto_uses_the_index_above_the_threshold(rating, faiss, monkeypatch):
    recommender, X = rating
    recommender._index_cache = None
    monkeypatch.setattr(nn_module, "ANN_MIN_ITEMS", 10)
    _assert_same_lists(recommender.recommend(_users(X), k=5),
                       recommender.recommend(_users(X), k=5, index="exact"))
    assert recommender._index_cache["ranking"] is not None


def test_similar_items_through_the_index(rating, hybrid, faiss):
    for recommender, _ in (rating, hybrid):
        for item in (0, 42, 299):
            exact = recommender.similar_items(item, k=8, index="exact")
            ann = recommender.similar_items(item, k=8, index="ann")
            assert ann["item"].tolist() == exact["item"].tolist()
            np.testing.assert_allclose(ann["similarity"], exact["similarity"], rtol=1e-5,
                                       atol=1e-6)


def test_neural_model_has_no_index(faiss):
    X, y = _interactions()
    recommender = EmbeddingRecommender(model="neural", n_factors=4, hidden=(8,), epochs=1,
                                       ranking="rating", random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="model='dot'"):
        recommender.recommend("u1", index="ann")


def test_implicit_recommender_through_the_index(faiss):
    X, _ = _interactions()
    recommender = ImplicitRecommender(n_factors=N_FACTORS, epochs=1, random_state=0).fit(X)
    _plant(recommender.model_)
    recommender._scorer_cache = None
    _assert_same_lists(recommender.recommend(_users(X), k=10, index="ann"),
                       recommender.recommend(_users(X), k=10, index="exact"))


def test_index_is_rebuilt_after_loading_and_never_pickled(rating, tmp_path, faiss):
    recommender, X = rating
    recommender.build_index(similar=True)
    assert set(recommender._index_cache) == {"ranking", "similar"}
    before = recommender.recommend(_users(X), k=5, index="ann")
    copy = pickle.loads(pickle.dumps(recommender))
    assert copy._index_cache is None
    recommender.save(tmp_path / "model")
    loaded = tabembed.load(tmp_path / "model")
    assert loaded._index_cache is None
    _assert_same_lists(loaded.recommend(_users(X), k=5, index="ann"), before)
    assert loaded._index_cache["ranking"] is not None
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(loaded._index_cache["ranking"])


def test_refit_and_new_parameters_drop_the_index(faiss):
    recommender, X = _fitted(ranking_shrinkage=0, min_support=0)
    recommender.build_index()
    first = recommender._index_cache["ranking"]
    recommender.set_params(ranking_shrinkage=50)
    recommender.recommend("u0", index="ann")
    assert recommender._index_cache["ranking"] is not first
    recommender.fit(X, _interactions()[1])
    assert recommender._index_cache is None


def test_a_failed_build_leaves_the_old_index(faiss, monkeypatch):
    recommender, X = _fitted(ranking_shrinkage=0, min_support=0)
    recommender.build_index()
    first = recommender._index_cache["ranking"]
    before = recommender.recommend(_users(X), k=5, index="ann")

    def broken(*args, **kwargs):
        raise MemoryError("no room for the graph")

    monkeypatch.setattr(nn_module, "build_ranking_index", broken)
    recommender.set_params(ranking_shrinkage=50)
    with pytest.raises(MemoryError):
        recommender.recommend("u0", index="ann")
    assert recommender._index_cache["ranking"] is first
    recommender.set_params(ranking_shrinkage=0)
    _assert_same_lists(recommender.recommend(_users(X), k=5, index="ann"), before)


def test_recommend_all_to_parquet_through_the_index(rating, tmp_path, faiss):
    recommender, _ = rating
    path = recommender.recommend_all(k=6, path=tmp_path / "lists.parquet", batch_users=9,
                                     index="ann")
    written = pq.read_table(path).to_pandas()
    expected = recommender.recommend_all(k=6, index="exact")
    assert written[["user", "item"]].equals(expected[["user", "item"]])
    np.testing.assert_allclose(written["score"], expected["score"], rtol=1e-5, atol=1e-5)
