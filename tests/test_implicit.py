"""ImplicitRecommender: ranking losses on planted data, negative sampling, save/load."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

import tabembed
from tabembed.batches import TensorBatches
from tabembed.models import DotBias
from tabembed.models.implicit_losses import CandidateScores, implicit_loss
from tabembed.ranking_metrics import evaluate
from tabembed.recommenders import ImplicitRecommender
from tabembed.sampling import NegativeSampling, sampling_probabilities

_BY_NAME = ("the recommender finds its user and item columns by name, and this check passes "
            "a frame with unnamed integer columns")


@parametrize_with_checks(
    [ImplicitRecommender(user_column="x0", item_column="x1", epochs=5, lr=1e-2, batch_size=64,
                         random_state=0)],
    expected_failed_checks=lambda estimator: {
        "check_sample_weights_pandas_series": _BY_NAME,
        "check_fit_score_takes_y": "score() is NDCG@10 of recommend(), which cannot fill "
        "context features, and the check's random columns vary within users and items "
        "(fit warns so)",
        "check_sample_weight_equivalence_on_dense_data": "mini-batch training: weighted "
        "rows and repeated rows fall into different batches, so the fits agree in "
        "expectation, not exactly",
    },
)
def test_scikit_learn_compatible(estimator, check):
    check(estimator)


def _clusters(n_users=90, n_items=60, n_groups=3, per_user=8, seed=0):
    """Users of group g interact only with items of group g: a known answer for ranking."""
    rng = np.random.default_rng(seed)
    group_items = np.array_split(np.arange(n_items), n_groups)
    rows = []
    for user in range(n_users):
        items = rng.choice(group_items[user % n_groups], per_user, replace=False)
        rows += [(f"u{user}", f"i{item}", item % 2) for item in items]
    frame = pd.DataFrame(rows, columns=["user", "item", "parity"])
    return frame, group_items


@pytest.mark.parametrize(("model", "loss", "negatives"), [
    ("dot", "softmax", "uniform"), ("dot", "bpr", "popularity"),
    ("neural", "bpr", "uniform"), ("dot", "softmax", "popularity")])
def test_learns_which_group_each_user_belongs_to(model, loss, negatives):
    frame, groups = _clusters()
    recommender = ImplicitRecommender(model=model, loss=loss, negatives=negatives, n_factors=8,
                                      epochs=30, lr=2e-2, batch_size=64, n_negatives=8,
                                      random_state=0)
    recommender.fit(frame[["user", "item"]])
    lists = recommender.recommend(list(frame["user"].unique()), k=5)
    group_of = {f"i{i}": g for g, items in enumerate(groups) for i in items}
    same = [group_of[item] == int(user[1:]) % 3 for user, item in
            zip(lists["user"], lists["item"], strict=True)]
    assert np.mean(same) > 0.9, np.mean(same)
    seen = set(zip(frame["user"], frame["item"], strict=True))
    assert not seen & set(zip(lists["user"], lists["item"], strict=True))
    assert {"train_loss"} <= set(recommender.history_)


def test_y_keeps_only_positive_rows_and_score_is_ndcg():
    frame, _ = _clusters()
    clicked = np.ones(len(frame))
    noise = frame.assign(item="i0")       # zero-labelled rows must be ignored
    X = pd.concat([frame, noise], ignore_index=True)[["user", "item"]]
    y = np.concatenate([clicked, np.zeros(len(noise))])
    options = dict(n_factors=8, epochs=5, lr=2e-2, batch_size=64, random_state=0)
    with_y = ImplicitRecommender(**options).fit(X, y)
    plain = ImplicitRecommender(**options).fit(frame[["user", "item"]])
    assert with_y.recommend("u1", k=3)["item"].tolist() == plain.recommend("u1", k=3)[
        "item"].tolist()
    test = frame.groupby("user").head(2)
    expected = evaluate(plain.recommend(list(test["user"].unique()), k=10), test, k=10)
    assert plain.score(test) == pytest.approx(expected["ndcg@10"])


def test_save_and_load_recommend_the_same(tmp_path):
    frame, _ = _clusters()
    recommender = ImplicitRecommender(loss="bpr", n_factors=8, epochs=3, batch_size=64,
                                      random_state=0).fit(frame)
    path = recommender.save(tmp_path / "implicit.tabembed")
    loaded = tabembed.load(path)
    assert isinstance(loaded, ImplicitRecommender) and loaded.loss == "bpr"
    users = ["u0", "u5", "nobody"]
    pd.testing.assert_frame_equal(loaded.recommend(users, k=4), recommender.recommend(users, k=4))
    pd.testing.assert_frame_equal(loaded.similar_items("i3", k=3),
                                  recommender.similar_items("i3", k=3))
    np.testing.assert_allclose(loaded.predict(frame.iloc[:20]),
                               recommender.predict(frame.iloc[:20]))


def test_negative_sampling_draws_reproducibly_from_its_distribution():
    positives = TensorBatches((torch.zeros(100, 2, dtype=torch.long), torch.zeros(100, 0)),
                              batch_size=10, has_target=False, random_state=0)
    probabilities = sampling_probabilities(np.array([1, 1, 1, 1, 2, 3]), 3, kind="popularity",
                                           exponent=1.0)
    np.testing.assert_allclose(probabilities, [4 / 6, 1 / 6, 1 / 6])
    source = NegativeSampling(positives, n_items=3, n_negatives=50, probabilities=probabilities,
                              random_state=1)
    drawn = torch.cat([batch[2].reshape(-1) for batch in source])
    assert drawn.min() >= 1 and drawn.max() <= 3
    assert (drawn == 1).float().mean() == pytest.approx(4 / 6, abs=0.02)
    state = source.state_dict()
    first = [batch[2] for batch in source]
    source.load_state_dict(state)
    assert all(torch.equal(a, b[2]) for a, b in zip(first, source, strict=True))
    shared = NegativeSampling(positives, n_items=3, n_negatives=7, shared=True, random_state=1)
    assert next(iter(shared))[2].shape == (7,)


def test_candidate_scores_match_the_model_and_mask_accidental_hits():
    torch.manual_seed(0)
    model = DotBias(n_users=5, n_items=7, n_factors=3, side_embedding_sizes=[(3, 2)])
    item_codes = torch.zeros(7, 3, dtype=torch.long)
    item_codes[1:, 1] = torch.arange(1, 7)
    item_codes[1:, 2] = torch.tensor([1, 2, 1, 2, 1, 2])
    scorer = CandidateScores(model, item_codes, torch.zeros(7, 0),
                             torch.tensor([False, True, True]), torch.zeros(0, dtype=torch.bool))
    codes = torch.tensor([[1, 2, 2], [3, 4, 2]])
    continuous = torch.zeros(2, 0)
    torch.set_grad_enabled(False)
    try:
        _check_candidates(model, scorer, item_codes, codes, continuous)
    finally:
        torch.set_grad_enabled(True)
    bpr, softmax = implicit_loss("bpr"), implicit_loss("softmax")
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    assert bpr(scores).item() == pytest.approx(
        (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))) / 2)
    assert softmax(scores).item() == pytest.approx(
        np.log(np.exp(2) + 1 + np.exp(1)) - 2.0)


def test_training_scores_and_softmax_loss_equal_the_plain_computation():
    """The training path (gradients on, one shared draw with repeated items, log-Q, hits
    found by binary search, the fused cross-entropy) against the same scores written out."""
    torch.manual_seed(0)
    n_items = 12
    model = DotBias(n_users=9, n_items=n_items, n_factors=4)
    with torch.no_grad():
        model.user_bias.weight.normal_()
        model.item_bias.weight.normal_()
    item_codes = torch.zeros(n_items, 2, dtype=torch.long)
    item_codes[1:, 1] = torch.arange(1, n_items)
    log_q = torch.log(torch.rand(n_items) + 0.1)
    scorer = CandidateScores(model, item_codes, torch.zeros(n_items, 0),
                             torch.tensor([False, True]), torch.zeros(0, dtype=torch.bool),
                             log_q=log_q).train()
    codes = torch.stack([torch.randint(1, 9, (40,)), torch.randint(1, n_items, (40,))], 1)
    continuous = torch.zeros(40, 0)
    negatives = torch.tensor([3, 7, 3, 1, 11, 7, 7, 2])      # items drawn two and three times
    softmax = implicit_loss("softmax")
    loss = softmax(scorer(codes, continuous, negatives))
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # By hand: every (row, candidate) pair through logits, minus log-Q, hits masked.
    candidates = torch.cat([codes[:, 1:2], negatives.expand(40, -1)], 1)
    pairs = torch.stack([codes[:, 0:1].expand(-1, 9), candidates], 2).reshape(-1, 2)
    scores = model.logits(pairs, torch.zeros(len(pairs), 0)).reshape(40, 9) - log_q[candidates]
    hits = torch.cat([torch.zeros(40, 1, dtype=torch.bool),
                      negatives[None, :] == codes[:, 1:2]], 1)
    assert hits.any(), "the draw should hit some rows' positives"
    scores = scores.masked_fill(hits, -1e9)
    expected = (torch.logsumexp(scores, 1) - scores[:, 0]).mean()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got_grad, parameter in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(got_grad, parameter.grad, rtol=1e-4, atol=1e-6)


def _check_candidates(model, scorer, item_codes, codes, continuous):
    for negatives in (torch.tensor([[5, 2], [1, 6]]), torch.tensor([5, 2])):
        scores = scorer(codes, continuous, negatives)
        rows = negatives if negatives.dim() == 2 else negatives.expand(2, -1)
        for r in range(2):
            for j in range(2):
                item = rows[r, j]
                pair = torch.tensor([[codes[r, 0], item, item_codes[item, 2]]])
                if item == codes[r, 1]:
                    assert scores[r, 1 + j] < -1e8
                else:
                    assert scores[r, 1 + j] == pytest.approx(
                        model.logits(pair, continuous[:1]).item(), abs=1e-5)
    assert scores[:, 0].tolist() == pytest.approx(model.logits(codes, continuous)[:, 0].tolist())


def test_fold_in_a_new_user_from_their_items():
    frame, groups = _clusters()
    recommender = ImplicitRecommender(n_factors=8, epochs=30, lr=2e-2, batch_size=64,
                                      n_negatives=8, random_state=0).fit(frame)
    liked = [f"i{i}" for i in groups[2][:4]]
    top = recommender.recommend_for_items([*liked, "unknown"], k=6, filter_items=["i59"])
    assert list(top.columns) == ["item", "score"] and len(top) == 6
    assert set(top["item"]) <= {f"i{i}" for i in groups[2]} - set(liked) - {"i59"}
    with pytest.raises(ValueError, match="none of the items"):
        recommender.recommend_for_items(["nothing"])


def test_grid_search_with_the_ranking_scorer():
    from sklearn.model_selection import GridSearchCV, KFold

    from tabembed.ranking_metrics import ranking_scorer

    frame, _ = _clusters()
    search = GridSearchCV(
        ImplicitRecommender(epochs=5, lr=2e-2, batch_size=64, n_negatives=8, random_state=0),
        {"n_factors": [1, 8]}, scoring=ranking_scorer("recall", k=5),
        cv=KFold(2, shuffle=True, random_state=0))
    search.fit(frame[["user", "item"]])
    assert search.best_params_ == {"n_factors": 8}
    assert 0 < search.best_score_ <= 1
    # The estimator's own score (NDCG@10) is the default scoring.
    default = GridSearchCV(ImplicitRecommender(epochs=2, batch_size=64, random_state=0),
                           {"n_factors": [4]}, cv=2).fit(frame[["user", "item"]])
    assert 0 <= default.best_score_ <= 1


def test_validation_loss_from_eval_set_and_early_stopping():
    frame, _ = _clusters()
    held = frame.groupby("user").head(1)
    rest = frame.drop(held.index)
    options = dict(n_factors=8, epochs=4, lr=2e-2, batch_size=64, n_negatives=8, random_state=0)
    recommender = ImplicitRecommender(**options).fit(rest, eval_set=held)
    assert "valid_loss" in recommender.history_ and len(recommender.history_) == 4
    assert recommender.history_["valid_loss"].iloc[-1] < recommender.history_[
        "valid_loss"].iloc[0]
    stopped = ImplicitRecommender(early_stopping=True, **options).fit(frame)
    assert "valid_loss" in stopped.history_
