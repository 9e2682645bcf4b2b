"""Ranking metrics against hand-computed cases; top-k selection; interaction splits."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tabembed.interaction_splits import leave_last_out, random_holdout, temporal_split
from tabembed.ranking_metrics import (
    coverage,
    evaluate,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    top_k,
    truncated_recall_at_k,
)

# User 0: relevant {1, 4}, list [1, 2, 4]; user 1: relevant {0, 3, 5}, list [2, 5, -];
# user 2 has no relevant item, so it counts in no mean.
LISTS = np.array([[1, 2, 4], [2, 5, -1], [0, 1, 2]])
RELEVANT = sp.csr_matrix(([1] * 5, ([0, 0, 1, 1, 1], [1, 4, 0, 3, 5])), shape=(3, 6))


def test_metrics_match_hand_computed_values():
    assert recall_at_k(LISTS, RELEVANT) == pytest.approx((2 / 2 + 1 / 3) / 2)
    assert precision_at_k(LISTS, RELEVANT) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert hit_rate_at_k(LISTS, RELEVANT) == 1.0
    ndcg0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    ndcg1 = (1 / np.log2(3)) / (1 + 1 / np.log2(3) + 1 / np.log2(4))
    assert ndcg_at_k(LISTS, RELEVANT) == pytest.approx((ndcg0 + ndcg1) / 2)
    assert map_at_k(LISTS, RELEVANT) == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 3) / 2)
    assert coverage(LISTS, 6) == pytest.approx(5 / 6)


def test_cut_off_k_and_perfect_lists():
    assert recall_at_k(LISTS, RELEVANT, k=1) == pytest.approx((1 / 2 + 0) / 2)
    assert hit_rate_at_k(LISTS, RELEVANT, k=1) == pytest.approx(0.5)
    perfect = np.array([[1, 4, -1], [0, 3, 5], [0, 1, 2]])
    assert ndcg_at_k(perfect, RELEVANT) == pytest.approx(1.0)
    assert map_at_k(perfect, RELEVANT) == pytest.approx(1.0)
    assert recall_at_k(perfect, RELEVANT) == pytest.approx(1.0)


def test_evaluate_from_frames_matches_the_arrays():
    recommendations = pd.DataFrame({"user": ["a"] * 3 + ["b"] * 2 + ["c"] * 3,
                                    "item": [11, 12, 14, 12, 15, 10, 11, 12]})
    test = pd.DataFrame({"user": ["a", "a", "b", "b", "b"], "item": [11, 14, 10, 13, 15]})
    result = evaluate(recommendations, test, k=3, n_items=6)
    assert result["recall@3"] == pytest.approx(recall_at_k(LISTS[:2], RELEVANT[:2]))
    assert result["ndcg@3"] == pytest.approx(ndcg_at_k(LISTS[:2], RELEVANT[:2]))
    assert result["map@3"] == pytest.approx(map_at_k(LISTS[:2], RELEVANT[:2]))
    assert result["coverage"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(recommendations, test, metrics=("auc",))


def test_truncated_recall_caps_the_denominator_at_k():
    # k = 3: user 0 finds 2 of 2, user 1 1 of min(3, 3); k = 1: user 0 1 of min(1, 2).
    assert truncated_recall_at_k(LISTS, RELEVANT) == pytest.approx((1 + 1 / 3) / 2)
    assert truncated_recall_at_k(LISTS, RELEVANT, k=1) == pytest.approx((1 + 0) / 2)
    assert recall_at_k(LISTS, RELEVANT, k=1) == pytest.approx((1 / 2 + 0) / 2)
    perfect_top_one = np.array([[1], [0], [2]])
    assert truncated_recall_at_k(perfect_top_one, RELEVANT) == 1.0
    assert recall_at_k(perfect_top_one, RELEVANT) == pytest.approx((1 / 2 + 1 / 3) / 2)


# User a saw 12 and 15 in training; b saw 20, its only relevant item; c got no list.
SEEN = pd.DataFrame({"user": ["a", "a", "b"], "item": [12, 15, 20]})
LISTED = pd.DataFrame({"user": ["a"] * 4 + ["b"] * 2, "item": [11, 12, 14, 13, 20, 21]})
HELD_OUT = pd.DataFrame({"user": ["a", "a", "b", "c"], "item": [11, 14, 20, 30]})


def test_evaluate_counts_every_user_with_a_relevant_item():
    result = evaluate(LISTED, HELD_OUT, k=2, metrics=("recall", "hit_rate"))
    # a: 11 hit, 12 missed -> 1/2; b: 20 hit -> 1; c: no list -> 0.
    assert result["users"] == 3
    assert result["recall@2"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert result["hit_rate@2"] == pytest.approx(2 / 3)


def test_evaluate_drops_seen_items_from_lists_and_relevant_pairs():
    result = evaluate(LISTED, HELD_OUT, k=2, metrics=("recall", "ndcg"), seen=SEEN,
                      n_items=10)
    # a's list becomes 11, 14 (12 removed, 14 moves up): recall 1, NDCG 1; b's one
    # relevant item was seen, so b leaves the means; c stays with no hit.
    assert result["users"] == 2
    assert result["recall@2"] == pytest.approx((1 + 0) / 2)
    assert result["ndcg@2"] == pytest.approx((1 + 0) / 2)
    assert "seen_share" not in result
    assert result["coverage"] == pytest.approx(3 / 10)     # 11, 14 and b's 21


def test_evaluate_keeps_seen_items_when_asked_and_reports_their_share():
    result = evaluate(LISTED, HELD_OUT, k=2, metrics=("recall",), seen=SEEN,
                      exclude_seen=False)
    assert result["users"] == 3
    assert result["recall@2"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    # Top-2 slots: a has 11, 12 (12 seen), b has 20 (seen), 21.
    assert result["seen_share"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="seen has no column"):
        evaluate(LISTED, HELD_OUT, seen=SEEN.rename(columns={"item": "movie"}))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        evaluate(LISTED, HELD_OUT, k=0)


def test_top_k_excludes_seen_items_and_breaks_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.9],
                       [1.0, 2.0, 3.0, 4.0, 5.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0]])
    exclude = sp.csr_matrix(([1, 1, 1, 1], ([0, 1, 1, 1], [2, 4, 3, 1])), shape=(3, 5))
    items, values = top_k(scores, 3, exclude=exclude)
    np.testing.assert_array_equal(items, [[1, 4, 0], [2, 0, -1], [0, 1, 2]])
    assert values[1, 2] == -np.inf
    items, _ = top_k(scores, 2, exclude_columns=[0])
    np.testing.assert_array_equal(items, [[1, 2], [4, 3], [1, 2]])
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (50, 40)).astype(np.float32)      # many ties
    items, _ = top_k(scores, 7)
    reference = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(items, reference)
    # Rows without ties (the one-pass path) beside rows with ties and with NaN.
    scores = rng.standard_normal((50, 40))
    scores[::3, 5:9] = 9.0
    scores[1::7, :30] = np.nan
    items, values = top_k(scores, 7)
    filled = np.where(np.isnan(scores), -np.inf, scores)
    reference = np.argsort(-filled, axis=1, kind="stable")[:, :7]
    reference[np.take_along_axis(filled, reference, axis=1) == -np.inf] = -1
    np.testing.assert_array_equal(items, reference)


def _log(n_users=30, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, n_users)
    users = np.repeat(np.arange(n_users), counts)
    return pd.DataFrame({"user": users, "item": rng.integers(0, 50, len(users)),
                         "timestamp": rng.integers(0, 20, len(users))})


def test_random_holdout_per_user_and_seeded():
    log = _log()
    train, test = random_holdout(log, test_fraction=0.25, random_state=1)
    assert len(train) + len(test) == len(log) and not set(train.index) & set(test.index)
    counts = log.groupby("user").size()
    held = test.groupby("user").size().reindex(counts.index, fill_value=0)
    expected = np.minimum(np.round(0.25 * counts), counts - 1)
    np.testing.assert_array_equal(held.to_numpy(), expected.to_numpy())
    again = random_holdout(log.sample(frac=1, random_state=3), test_fraction=0.25,
                           random_state=1)[1]
    assert len(again) == len(test)


def test_leave_last_out_takes_each_users_latest():
    log = _log()
    train, test = leave_last_out(log, n=1)
    counts = log.groupby("user").size()
    assert set(test["user"]) == set(counts.index[counts > 1])
    assert test.groupby("user").size().max() == 1
    latest = log.groupby("user")["timestamp"].max()
    assert (test.set_index("user")["timestamp"] == latest.loc[test["user"]].to_numpy()).all()
    first_train = train.groupby("user")["timestamp"].max()
    assert (first_train.loc[test["user"]].to_numpy() <= test["timestamp"].to_numpy()).all()


def test_temporal_split_is_a_global_cut():
    log = _log()
    train, test = temporal_split(log, test_fraction=0.3)
    assert len(test) == round(0.3 * len(log))
    assert train["timestamp"].max() <= test["timestamp"].min()
    pd.testing.assert_frame_equal(temporal_split(log, test_fraction=0.3)[1], test)
