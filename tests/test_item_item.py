"""The item-item (EASE) ranking: the closed form, co-consumption, the size cap, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import tabembed
from tabembed import defaults
from tabembed.recommenders import EmbeddingRecommender
from tabembed.recommenders.item_item import ItemItem, ease_weights, standardise


def _paired(n_users=120, n_pairs=12, seed=0) -> tuple[pd.DataFrame, pd.Series]:
    """Each user rates a few pairs: item aK always with bK, plus one lone item lK."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        for pair in rng.choice(n_pairs, 3, replace=False):
            rows += [(f"u{user}", f"a{pair}"), (f"u{user}", f"b{pair}")]
        rows.append((f"u{user}", f"l{rng.integers(n_pairs)}"))
    frame = pd.DataFrame(rows, columns=["user", "item"])
    ratings = pd.Series(rng.integers(1, 6, len(frame)).astype(float), name="rating")
    return frame, ratings


def test_ease_weights_match_a_direct_ridge_solve_per_column():
    rng = np.random.default_rng(0)
    matrix = (rng.random((30, 6)) < 0.4).astype(np.float64)
    strength = 2.0
    weights = ease_weights(sp.csr_matrix(matrix), strength)
    assert weights.dtype == np.float32 and weights.shape == (6, 6)
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    for column in range(6):
        others = [c for c in range(6) if c != column]
        x = matrix[:, others]
        direct = np.linalg.solve(x.T @ x + strength * np.eye(5), x.T @ matrix[:, column])
        np.testing.assert_allclose(weights[others, column], direct, rtol=1e-4, atol=1e-5)


def test_ease_refuses_a_non_positive_strength():
    with pytest.raises(ValueError, match="must be positive"):
        ease_weights(sp.csr_matrix(np.eye(3)), 0.0)


def test_standardise_rows_and_constant_rows():
    scores = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    out = standardise(scores)
    np.testing.assert_allclose(out[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)


def test_items_always_consumed_together_rank_each_other_first():
    frame, _ = _paired()
    items = pd.Index(sorted(frame["item"].unique()))
    users = pd.Index(sorted(frame["user"].unique()))
    model = ItemItem(users.get_indexer(frame["user"]) + 1, items.get_indexer(frame["item"]) + 1,
                     len(users), len(items), strength=1.0)
    for pair in range(12):
        row = model.similarity(items.get_loc(f"a{pair}"))
        assert items[int(np.argmax(row))] == f"b{pair}"
        assert row[items.get_loc(f"a{pair}")] == 0.0
        assert items[int(np.argmax(model.fold_in_scores([items.get_loc(f"b{pair}")])))] == \
            f"a{pair}"
    # An unknown user (code 0) has no interactions: no item-item signal.
    np.testing.assert_array_equal(model.scores(np.array([0])), 0.0)


@pytest.fixture(scope="module")
def paired_model():
    frame, ratings = _paired()
    return frame, EmbeddingRecommender(n_factors=4, epochs=2, random_state=0).fit(frame, ratings)


def test_default_ranking_is_item_item_and_keeps_predictions(paired_model):
    frame, model = paired_model
    assert model.ranking_ == "item_item"
    assert model.ranker_ is None and model.item_item_ is not None
    _, ratings = _paired()
    rating_only = EmbeddingRecommender(n_factors=4, epochs=2, random_state=0,
                                       ranking="rating").fit(frame, ratings)
    np.testing.assert_array_equal(model.predict(frame), rating_only.predict(frame))
    # Every user who has aK and not bK would be offered bK first; none has that here, so
    # a user holding half of a pair comes through recommend_for_items (a new user).
    top = model.recommend_for_items(["a3", "l1"], k=3)
    assert top["item"].iloc[0] == "b3"
    assert model.similar_items("a5", k=1)["item"].iloc[0] == "b5"


def test_scores_are_the_standardised_sum(paired_model):
    _, model = paired_model
    codes = model.preprocessor_.encode("user", ["u0", "u1"]).astype(np.int64)
    weights, _ = model._ranking_weights()
    expected = (standardise(model.item_item_.scores(codes).astype(np.float64))
                + defaults.ITEM_ITEM_LIKED_WEIGHT
                * standardise(model.liked_item_item_.scores(codes).astype(np.float64))
                + defaults.ITEM_ITEM_RATING_WEIGHT
                * standardise(model.scorer_.scores(codes, weights).astype(np.float64)))
    np.testing.assert_allclose(model._scores(codes), expected, rtol=1e-4, atol=1e-4)


def test_the_liked_part_holds_the_top_quarter_of_the_scale(paired_model):
    frame, model = paired_model
    _, ratings = _paired()
    liked = frame[ratings.to_numpy() >= 4.0]          # ratings 1-5
    users, items = model.liked_item_item_.pairs()
    found = set(zip(np.asarray(model.preprocessor_.categories_["user"], dtype=object)[users - 1],
                    np.asarray(model.preprocessor_.categories_["item"], dtype=object)[items - 1],
                    strict=True))
    assert found == set(zip(liked["user"], liked["item"], strict=True))
    # A new user's low ratings count as picked, not liked: the liked part ignores them.
    low = model._fold_in_scores(np.array([0]), np.array([1.0]))
    picked = model._fold_in_scores(np.array([0]), None)
    assert not np.allclose(low, picked)


def test_save_and_load_give_identical_lists_without_storing_the_matrix(paired_model, tmp_path):
    frame, model = paired_model
    users = ["u0", "u5", "stranger"]
    path = model.save(tmp_path / "item_item.tabembed")
    loaded = tabembed.load(path)
    assert loaded.ranking_ == "item_item"
    assert loaded.item_item_._weights is None          # rebuilt at first use
    np.testing.assert_array_equal(loaded.liked_item_item_.pairs()[1],
                                  model.liked_item_item_.pairs()[1])
    pd.testing.assert_frame_equal(loaded.recommend(users, k=5), model.recommend(users, k=5))
    pd.testing.assert_frame_equal(loaded.recommend_for_items(["a1"], k=5),
                                  model.recommend_for_items(["a1"], k=5))
    pd.testing.assert_frame_equal(loaded.similar_items("b2", k=4), model.similar_items("b2", k=4))
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_the_size_cap_falls_back_to_the_hybrid(monkeypatch):
    frame, ratings = _paired(n_users=40)
    monkeypatch.setattr(defaults, "ITEM_ITEM_MAX_ITEMS", 10)
    options = dict(n_factors=4, epochs=1, random_state=0)
    model = EmbeddingRecommender(**options).fit(frame, ratings)
    assert model.ranking_ == "hybrid" and model.item_item_ is None
    assert model.ranker_ is not None
    with pytest.raises(ValueError, match=r"limited to 10 items.*ranking='hybrid'"):
        EmbeddingRecommender(ranking="item_item", **options).fit(frame, ratings)


def test_blend_adds_the_ranker(paired_model):
    frame, model = paired_model
    _, ratings = _paired()
    blend = EmbeddingRecommender(n_factors=4, epochs=2, random_state=0,
                                 ranking="blend").fit(frame, ratings)
    assert blend.ranking_ == "blend" and blend.ranker_ is not None
    codes = blend.preprocessor_.encode("user", ["u0"]).astype(np.int64)
    ranker = standardise(blend.ranker_.scorer_.scores(codes).astype(np.float64))
    np.testing.assert_allclose(blend._scores(codes),
                               model._scores(codes) + defaults.ITEM_ITEM_RANKER_WEIGHT * ranker,
                               rtol=1e-4, atol=1e-4)
