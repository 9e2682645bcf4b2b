from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from tabembed.datasets import load_movielens, load_movielens_items, load_movielens_users
from tabembed.recommenders import EmbeddingRecommender
from tabembed.recommenders.interaction_data import encode


@parametrize_with_checks(
    [EmbeddingRecommender(user_column="x0", item_column="x1", epochs=30, lr=1e-2,
                          batch_size=64, y_range=None, weight_decay=0.0, random_state=0)],
    expected_failed_checks=lambda estimator: {
        **dict.fromkeys(("check_regressor_data_not_an_array",
                         "check_sample_weights_pandas_series"),
                        "the recommender finds its user and item columns by name, and this "
                        "check passes a frame with unnamed integer columns"),
        "check_sample_weight_equivalence_on_dense_data": "mini-batch training: weighted "
        "rows and repeated rows fall into different batches, so the fits agree in "
        "expectation, not exactly",
    },
)
def test_scikit_learn_compatible(estimator, check):
    check(estimator)


def _planted(n_users=120, n_items=80, seed=0):
    rng = np.random.default_rng(seed)
    users, items = rng.normal(0, 1, (n_users, 2)), rng.normal(0, 1, (n_items, 2))
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.5)
    u, i = pairs[:, 0], pairs[:, 1]
    rating = 3 + (users[u] * items[i]).sum(1) + rng.normal(0, 0.1, len(u))
    frame = pd.DataFrame({"user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i]})
    return frame, pd.Series(rating, name="rating")


@pytest.mark.parametrize("model", ["dot", "neural"])
def test_recovers_planted_ratings(model):
    X, y = _planted()
    order = np.random.default_rng(1).permutation(len(X))
    train, test = order[:4000], order[4000:]
    errors = []
    # The median of three seeds: one initialisation of neural CF's MLP (dropout 0.5 on
    # a 2-factor problem) can settle far from the others, and that says nothing about
    # whether the model can recover the ratings.
    for seed in range(3):
        recommender = EmbeddingRecommender(model=model, n_factors=8, epochs=30, lr=1e-2,
                                           weight_decay=0.0, y_range=None, random_state=seed)
        recommender.fit(X.iloc[train], y.iloc[train])
        errors.append(np.sqrt(np.mean((recommender.predict(X.iloc[test]) - y.iloc[test]) ** 2)))
    assert np.median(errors) < 0.6 * y.std(), (errors, y.std())


@pytest.fixture(scope="module")
def movielens(shared_datasets):
    train, test = load_movielens("100k", data_home=shared_datasets, fold="u1")
    recommender = EmbeddingRecommender(epochs=3, random_state=0)
    recommender.fit(train[["user", "item"]], train["rating"])
    return recommender, train, test


def test_movielens_predictions_recommendations_and_similar_items(movielens, shared_datasets):
    recommender, train, test = movielens
    predictions = recommender.predict(test[["user", "item"]])
    rmse = np.sqrt(np.mean((predictions - test["rating"]) ** 2))
    assert rmse < 1.0     # the global mean scores 1.15 on u1
    low, high = recommender.model_kwargs_["y_range"]
    assert predictions.min() >= low and predictions.max() <= high
    top = recommender.recommend(1, k=10)
    assert list(top.columns) == ["item", "score"] and len(top) == 10
    assert top["score"].is_monotonic_decreasing
    seen = set(train.loc[train["user"] == 1, "item"])
    assert not seen & set(top["item"])
    with_seen = recommender.recommend(1, k=2000, exclude_seen=False)
    assert seen <= set(with_seen["item"])
    titles = load_movielens_items("100k", data_home=shared_datasets).set_index("item")["title"]
    similar = recommender.similar_items(172, k=5)      # The Empire Strikes Back
    assert len(similar) == 5 and 172 not in set(similar["item"])
    assert similar["similarity"].is_monotonic_decreasing
    assert titles.loc[172] == "Empire Strikes Back, The (1980)"
    assert recommender.item_embeddings_.shape == (1650, 50)
    assert recommender.user_embeddings_.index.name == "user"


def test_unknown_users_and_items_get_the_prior(movielens):
    recommender, _, _ = movielens
    model = recommender.model_
    frame = pd.DataFrame({"user": [999999, 1, 999999], "item": [50, 999999, 999999]})
    predictions = recommender.predict(frame)
    squash = model.output_range
    import torch

    with torch.no_grad():
        item_code = recommender.preprocessor_.encode("item", [50])[0]
        expected = squash(model.offset.bias + model.item_bias.weight[item_code, 0]).item()
        prior = squash(model.offset.bias).item()
    assert predictions[0] == pytest.approx(expected, rel=1e-5)
    assert predictions[2] == pytest.approx(prior, rel=1e-5)
    cold = recommender.recommend(999999, k=5)       # a new user: the best-liked items
    assert len(cold) == 5
    with pytest.raises(TypeError, match="ids were int in training but str"):
        recommender.predict(pd.DataFrame({"user": ["1"], "item": ["50"]}))
    with pytest.raises(KeyError, match="not seen in training"):
        recommender.similar_items(999999)


def test_side_features_split_into_user_and_item_features(shared_datasets):
    ratings = load_movielens("100k", data_home=shared_datasets).iloc[:20000]
    users = load_movielens_users("100k", data_home=shared_datasets)
    items = load_movielens_items("100k", data_home=shared_datasets)
    frame = ratings.merge(users[["user", "age", "occupation"]], on="user").merge(
        items[["item", "genres"]], on="item")
    X = frame[["user", "item", "age", "occupation", "genres"]]
    for model in ("dot", "neural"):
        recommender = EmbeddingRecommender(model=model, epochs=2, random_state=0)
        recommender.fit(X, frame["rating"])
        assert recommender.user_features_ == ["age", "occupation"]
        assert recommender.item_features_ == ["genres"]
        # "Action|Comedy" is a bag of two genres, not one of 200+ combinations.
        assert recommender.bag_columns_ == ["genres"]
        assert "Comedy" in recommender.bag_vocabulary_["genres"]
        assert recommender.preprocessor_.cat_columns_ == ["user", "item", "occupation"]
        top = recommender.recommend(1, k=5)
        assert len(top) == 5
        assert np.isfinite(recommender.predict(X.iloc[:100])).all()


def test_bad_input(movielens):
    recommender, train, _ = movielens
    with pytest.raises(ValueError, match="no column"):
        EmbeddingRecommender().fit(train[["user"]], train["rating"])
    with pytest.raises(ValueError, match="missing rating"):
        EmbeddingRecommender().fit(train[["user", "item"]].iloc[:10],
                                   [np.nan] + [3.0] * 9)
    with pytest.raises(ValueError, match="model must be"):
        EmbeddingRecommender(model="svd").fit(train[["user", "item"]].iloc[:10], [3.0] * 10)
    with pytest.raises(ValueError, match=r"missing from the frame: \['item'\]"):
        recommender.predict(train[["user"]].assign(other=1))
    for k in (-1, 0, 2.5, "3", True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            recommender.recommend(1, k=k)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            recommender.similar_items(50, k=k)


@pytest.mark.parametrize("model", ["dot", "neural"])
def test_a_diverged_fit_is_an_error_not_saturated_predictions(model):
    from tabembed.training.learner import TrainingDivergedError

    X, y = _planted(n_users=60, n_items=40)
    with pytest.raises(TrainingDivergedError):
        EmbeddingRecommender(model=model, lr=1e6, epochs=2, random_state=0).fit(X, y)


def test_eval_set_reports_rmse_and_mae_each_epoch_and_weights_shift_the_fit():
    X, y = _planted()
    order = np.random.default_rng(1).permutation(len(X))
    train, valid = order[:4000], order[4000:]
    # Batch 512 pinned: the weighting check below needs this many steps to show.
    settings = dict(n_factors=8, epochs=4, lr=1e-2, weight_decay=0.0, y_range=None,
                    batch_size=512, random_state=0)
    recommender = EmbeddingRecommender(**settings)
    recommender.fit(X.iloc[train], y.iloc[train], eval_set=(X.iloc[valid], y.iloc[valid]))
    history = recommender.history_
    assert {"valid_loss", "rmse", "mae"} <= set(history) and len(history) == 4
    errors = recommender.predict(X.iloc[valid]) - y.iloc[valid].to_numpy()
    assert history["rmse"].iloc[-1] == pytest.approx(np.sqrt(np.mean(errors**2)), rel=1e-5)
    assert history["mae"].iloc[-1] == pytest.approx(np.mean(np.abs(errors)), rel=1e-5)
    # Ratings of user u0 weighted 20x pull the fit towards them: their error shrinks.
    heavy = (X["user"] == "u0").to_numpy()
    weights = np.where(heavy, 20.0, 1.0)
    weighted = EmbeddingRecommender(**settings).fit(X, y, sample_weight=weights)
    plain = EmbeddingRecommender(**settings).fit(X, y)

    def error(model):
        return np.mean((model.predict(X[heavy]) - y[heavy]) ** 2)

    assert error(weighted) < 0.8 * error(plain)


def _side_frame(n_users=40, n_items=30, seed=0):
    """Ratings with a categorical and a numeric user feature and a categorical item feature."""
    rng = np.random.default_rng(seed)
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.4)
    u, i = pairs[:, 0], pairs[:, 1]
    frame = pd.DataFrame({"user": u, "item": i * 10, "band": [f"b{v % 3}" for v in u],
                          "age": (u % 7).astype(float) * 5, "kind": [f"k{v % 4}" for v in i]})
    rating = 3 + np.sin(u) * np.cos(i) + (i % 4) * 0.2 + rng.normal(0, 0.1, len(u))
    return frame, rating


@pytest.mark.parametrize("model", ["dot", "neural"])
def test_batched_recommend_matches_predict_and_excludes_seen(model):
    X, y = _side_frame()
    recommender = EmbeddingRecommender(model=model, n_factors=4, epochs=3, lr=1e-2,
                                       ranking="rating", ranking_shrinkage=0, min_support=0,
                                       random_state=0)
    recommender.fit(X, y)
    users = [0, 5, 39, 12345]     # the last one is unknown
    lists = recommender.recommend(users, k=4)
    assert list(lists.columns) == ["user", "item", "score"]
    assert lists["user"].tolist() == [u for u in users for _ in range(4)]
    items = X["item"].unique()
    for user in users:
        rows = pd.DataFrame({"user": user, "item": items})
        rows = rows.merge(X[["item", "kind"]].drop_duplicates(), on="item")
        known = X[X["user"] == user][["band", "age"]].drop_duplicates()
        rows["band"] = known["band"].iloc[0] if len(known) else np.nan
        rows["age"] = known["age"].iloc[0] if len(known) else np.nan
        predicted = pd.Series(recommender.predict(rows[list(X.columns)]),
                              index=rows["item"])
        seen = set(X.loc[X["user"] == user, "item"])
        single = recommender.recommend(user, k=4)
        assert list(single.columns) == ["item", "score"]
        mine = lists[lists["user"] == user]
        assert single["item"].tolist() == mine["item"].tolist()
        assert not seen & set(single["item"])
        np.testing.assert_allclose(single["score"], predicted.loc[single["item"]], rtol=1e-5)
        unseen = predicted.drop(list(seen)).sort_values(ascending=False)
        assert single["score"].iloc[0] == pytest.approx(unseen.iloc[0], rel=1e-5)
    filtered = recommender.recommend(users, k=4, filter_items=[lists["item"].iloc[0], -7])
    assert lists["item"].iloc[0] not in set(filtered.loc[filtered["user"] == 0, "item"])
    everyone = recommender.recommend_all(k=2)
    assert len(everyone) == 2 * X["user"].nunique()


def test_top_k_is_deterministic_and_chunked(monkeypatch):
    import tabembed.recommenders.scoring as module

    X, y = _planted(n_users=50, n_items=40)
    recommender = EmbeddingRecommender(n_factors=4, epochs=2, random_state=0).fit(X, y)
    users = X["user"].unique()
    whole = recommender.recommend(users, k=5)
    monkeypatch.setattr(module, "CHUNK_SCORES", 3 * 40)    # three users per chunk
    chunked = recommender.recommend(users, k=5)
    pd.testing.assert_frame_equal(chunked.drop(columns="score"), whole.drop(columns="score"))
    # The rating grid's matrix product may round the last bit differently per chunk size,
    # and the per-user standardisation of the default ranking scales that up.
    np.testing.assert_allclose(chunked["score"], whole["score"], rtol=1e-4)


def test_shrinkage_and_min_support_keep_rare_items_out():
    # Item "rare" has two perfect ratings: ranked by predicted rating it wins.
    X, y = _planted(n_users=60, n_items=30)
    X = pd.concat([X, pd.DataFrame({"user": ["u0", "u1"], "item": ["rare"] * 2})],
                  ignore_index=True)
    y = pd.concat([y, pd.Series([12.0, 12.0])], ignore_index=True)
    options = dict(n_factors=4, epochs=10, lr=3e-2, random_state=0, y_range=None,
                   embedding_l2=0, ranking="rating")
    plain = EmbeddingRecommender(ranking_shrinkage=0, min_support=0, **options).fit(X, y)
    others = list(X["user"].unique()[2:])
    assert "rare" in set(plain.recommend(others, k=1)["item"])
    shrunk = EmbeddingRecommender(ranking_shrinkage=100, min_support=0, **options).fit(X, y)
    assert "rare" not in set(shrunk.recommend(others, k=1)["item"])
    strict = EmbeddingRecommender(ranking_shrinkage=0, min_support=3, **options).fit(X, y)
    assert "rare" not in set(strict.recommend(others, k=10)["item"])
    assert "rare" not in set(strict.similar_items("i0", k=30)["item"])


def test_hybrid_ranking_keeps_predictions_and_survives_save(tmp_path):
    import tabembed

    X, y = _planted(n_users=50, n_items=40)
    options = dict(n_factors=4, epochs=2, random_state=0)
    rating = EmbeddingRecommender(ranking="rating", ranking_shrinkage=0, **options).fit(X, y)
    hybrid = EmbeddingRecommender(ranking="hybrid", **options).fit(X, y)
    np.testing.assert_array_equal(hybrid.predict(X), rating.predict(X))
    assert hybrid.ranker_ is not None and rating.ranker_ is None
    users = ["u0", "u7", "stranger"]
    lists = hybrid.recommend(users, k=3)
    ranker = hybrid.ranker_.scorer_.scores(hybrid.preprocessor_.encode("user", ["u0"]))
    items = pd.Index(hybrid.preprocessor_.categories_["item"])
    expected = ranker[0] + rating.scorer_.scores(rating.preprocessor_.encode("user", ["u0"]))[0]
    first = lists.loc[lists["user"] == "u0", "score"].iloc[0]
    assert first == pytest.approx(expected[items.get_loc(lists["item"].iloc[0])], rel=1e-5)
    loaded = tabembed.load(hybrid.save(tmp_path / "hybrid.tabembed"))
    pd.testing.assert_frame_equal(loaded.recommend(users, k=3), lists)
    pd.testing.assert_frame_equal(loaded.similar_items("i1", k=3), hybrid.similar_items("i1", k=3))
    with pytest.raises(ValueError, match="ranking must be"):
        EmbeddingRecommender(ranking="best", **options).fit(X, y)


def test_fold_in_recovers_a_new_users_taste():
    X, y = _planted(n_users=150, n_items=60)
    recommender = EmbeddingRecommender(n_factors=2, epochs=20, lr=1e-2, y_range=None,
                                       ranking="rating", ranking_shrinkage=0, min_support=0,
                                       random_state=0).fit(X, y)
    # A known user's own ratings, given as a "new" user's: the folded-in scores rank the
    # user's other items as the trained user vector does.
    user = "u3"
    mine = X["user"] == user
    half = np.flatnonzero(mine.to_numpy())[::2]
    scores = recommender._fold_in_scores(
        pd.Index(recommender.preprocessor_.categories_["item"]).get_indexer(X["item"].iloc[half]),
        y.iloc[half].to_numpy())
    trained = recommender._scores(recommender.preprocessor_.encode("user", [user]))[0]
    assert np.corrcoef(scores, trained)[0, 1] > 0.8
    top = recommender.recommend_for_items(X["item"].iloc[half], k=5,
                                          ratings=y.iloc[half].to_numpy())
    assert len(top) == 5 and not set(top["item"]) & set(X["item"].iloc[half])


@pytest.mark.parametrize("kind", ["explicit", "hybrid", "implicit"])
def test_multi_valued_features_give_a_cold_item_its_genres_taste(kind, tmp_path):
    import tabembed
    from tabembed.recommenders import ImplicitRecommender

    # Two tastes: users of group 0 like (and watch) "a" items, group 1 "b" items.
    rng = np.random.default_rng(0)
    items = [f"m{i}" for i in range(40)]
    genres = {item: ["a", "x"] if i % 2 == 0 else "b|x" for i, item in enumerate(items)}
    rows, ratings = [], []
    for user in range(80):
        for item in rng.choice(items, 14, replace=False):
            liked = (int(item[1:]) % 2) == (user % 2)
            if kind == "implicit" and not liked:
                continue
            rows.append((user, item, genres[item]))
            ratings.append(4.5 if liked else 1.5)
    X = pd.DataFrame(rows, columns=["user", "item", "genres"])
    if kind == "implicit":
        recommender = ImplicitRecommender(n_factors=4, epochs=20, lr=2e-2, batch_size=64,
                                          n_negatives=8, random_state=0).fit(X)
    else:
        recommender = EmbeddingRecommender(
            n_factors=4, epochs=20, lr=2e-2, batch_size=64, random_state=0,
            ranking="rating" if kind == "explicit" else "hybrid").fit(X, ratings)
    assert recommender.bag_columns_ == ["genres"]
    assert recommender.model_kwargs_["bags"] == [(4, 2, "item")]
    new = pd.DataFrame({"user": [0, 1, 2, 3], "item": "new", "genres": ["a|x"] * 4})
    scores = recommender.predict(new)
    assert scores[0] > scores[1] and scores[2] > scores[3]      # even users like "a"
    other = recommender.predict(new.assign(genres="b|x"))
    assert other[1] > other[0] and other[3] > other[2]
    similar = recommender.similar_items("new", k=6, item_features={"genres": "a|x"})
    even = [int(item[1:]) % 2 == 0 for item in similar["item"]]
    assert np.mean(even) > 0.8, similar
    vectors = recommender.item_vectors()
    assert vectors.shape == (40, 4) and vectors.index.name == "item"
    loaded = tabembed.load(recommender.save(tmp_path / "bags.tabembed"))
    assert loaded.bag_vocabulary_ == recommender.bag_vocabulary_
    np.testing.assert_allclose(loaded.predict(new), scores, rtol=1e-6)
    pd.testing.assert_frame_equal(loaded.recommend([0, 1], k=3), recommender.recommend([0, 1], k=3))


def test_bag_tokens_are_coded_per_row_from_messy_strings_and_lists():
    # Spaces around separators, empty tokens, missing values, lists and unknown
    # tokens: the same codes as reading each row by hand.
    X = pd.DataFrame({"user": [1, 2, 3, 1, 2, 3], "item": [10, 20, 30, 20, 30, 10],
                      "genres": ["A|B", "B", "C|A", "B", "C|A", "A|B"]})
    model = EmbeddingRecommender(user_column="user", item_column="item", epochs=1,
                                 ranking="rating", random_state=0).fit(X, [4, 3, 5, 2, 4, 3])
    assert model.bag_vocabulary_["genres"] == ["A", "B", "C"]
    assert model.bag_lengths_["genres"] == 2
    messy = pd.DataFrame({"user": [1] * 6, "item": [10] * 6, "genres": pd.Series(
        [" C | A ", "B||", None, ["B", "A"], "Z|A|B", ""], dtype=object)})
    codes, _ = encode(model.preprocessor_, model.bags_, model.bags_.canonical(messy))
    tokens, offsets = model.bags_.table("genres")
    bags = [tokens[offsets[i]:offsets[i + 1]].tolist() for i in codes[:, -1].tolist()]
    # Each row's known tokens in order (a bag longer than the training ones keeps them all).
    assert bags == [[3, 1], [2], [], [2, 1], [1, 2], []]
    assert codes[2, -1] == codes[5, -1] == 0        # missing and empty: the empty bag
    assert codes[0, -1] != codes[3, -1]             # the same tokens in another order


@pytest.mark.parametrize("model", ["dot", "neural"])
def test_files_of_the_padded_bag_release_load_and_predict_the_same(model):
    # tests/data/padded_bags: saved when each bag was padded per row (make.py there).
    import tabembed

    folder = Path(__file__).resolve().parent / "data" / "padded_bags"
    loaded = tabembed.load(folder / f"{model}.tabembed")
    assert [tuple(bag) for bag in loaded.model_kwargs_["bags"]] == [(5, 3, "item")]
    new = pd.DataFrame({"user": [0, 1, 2, 99, 3], "item": [0, 1, 99, 2, 98],
                        "genres": ["a|x", None, "b|c", "x", "zz|a"]})
    np.testing.assert_allclose(loaded.predict(new), np.load(folder / f"{model}_predict.npy"),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.recommend([0, 1, 2], k=3)["score"].to_numpy(),
                               np.load(folder / f"{model}_recommend.npy"), rtol=1e-6, atol=1e-6)


def test_a_huge_bag_is_stored_once_not_padded_per_row():
    # Issue 31: one item with 20,000 tags in 3,000 ratings was padded to 20,000
    # columns per row (60 million codes); the bag is now one id per row and its
    # tokens once in the bag table.
    rng = np.random.default_rng(0)
    tags = "|".join(f"tag{i}" for i in range(20_000))
    items = np.concatenate([rng.integers(0, 50, 600), np.full(3_000, 50)])
    X = pd.DataFrame({"user": rng.integers(0, 300, len(items)), "item": items,
                      "tags": [tags if i == 50 else f"t{i % 7}|t{i % 5}" for i in items]})
    y = rng.integers(1, 6, len(X)).astype(float)
    model = EmbeddingRecommender(epochs=1, ranking="rating", random_state=0).fit(X, y)
    assert model.bag_columns_ == ["tags"] and model.bag_lengths_["tags"] == 20_000
    codes, _ = encode(model.preprocessor_, model.bags_, model.bags_.canonical(X))
    assert codes.shape == (len(X), 3)           # user, item, one bag id
    tokens, offsets = model.bags_.table("tags")
    assert len(tokens) < 20_000 + 2 * 50 + 1 and len(offsets) <= 52
    big = codes[-1, 2].item()
    assert offsets[big + 1] - offsets[big] == 20_000
    assert np.isfinite(model.predict(X.iloc[-3:])).all()


def test_a_new_item_with_only_unknown_features_is_an_error():
    X = pd.DataFrame({"user": np.arange(60) % 12, "item": np.arange(60) % 9})
    X["genres"] = np.array(["a|b", "b", "c|a"])[X["item"] % 3]
    model = EmbeddingRecommender(epochs=1, ranking="rating", random_state=0).fit(
        X, np.full(60, 4.0))
    assert len(model.similar_items(100, item_features={"genres": "a|zz"}, k=3)) == 3
    with pytest.raises(ValueError, match="hold no value seen in training"):
        model.similar_items(100, item_features={"genres": "zz|yy"}, k=3)
