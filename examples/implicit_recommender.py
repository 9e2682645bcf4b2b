"""An implicit-feedback recommender: who watched what, no ratings.

Trains ImplicitRecommender (sampled softmax) on MovieLens latest-small with
the genres as a multi-valued item feature, evaluates the top 10 with the
ranking metrics on a per-user random split, shows a user's top 10 with titles,
the movies most similar to a well-known one, a brand-new movie known only by
its genres, and a new user folded in from a few movies, without retraining.

Runs offline on the shipped MovieLens latest-small.
Run: python examples/implicit_recommender.py   (TABEMBED_FAST=1 for a quick smoke run)
"""

import os

from tabembed import ImplicitRecommender
from tabembed.datasets import load_movielens, load_movielens_items
from tabembed.interaction_splits import random_holdout
from tabembed.ranking_metrics import evaluate

FAST = os.environ.get("TABEMBED_FAST") == "1"

# %% Interactions (every rating counts as "watched") with the movies' genres ("Action|Sci-Fi").
ratings = load_movielens("latest-small")
movies = load_movielens_items("latest-small").set_index("item")
if FAST:
    ratings = ratings[ratings["user"] <= 150]
ratings = ratings.join(movies["genres"], on="item")
train, test = random_holdout(ratings, test_fraction=0.2, random_state=0)

# %% Fit: each watched movie scored above 256 movies drawn at random, per batch.
recommender = ImplicitRecommender(loss="softmax", epochs=3 if FAST else 20, random_state=0)
recommender.fit(train[["user", "item", "genres"]])
print(f"genres became a bag of {len(recommender.bag_vocabulary_['genres'])} genre embeddings")

# %% Ranking metrics: every test user's top 10 in one call, training movies excluded;
# the movies rated 4 or more in the test part are the relevant ones.
relevant = test[test["rating"] >= 4]
lists = recommender.recommend(relevant["user"].unique(), k=10)
scores = evaluate(lists, relevant, k=10, n_items=ratings["item"].nunique())
shown = ", ".join(f"{name} {value:.3f}" for name, value in scores.items() if name != "users")
print(f"test ranking: {shown} ({scores['users']} users)")

# %% One user's top 10, with titles.
user = 1
print(f"top 10 for user {user}:")
for row in recommender.recommend(user, k=10).itertuples():
    print(f"  {movies.at[row.item, 'title']}  ({row.score:.2f})")

# %% Movies closest to a well-known one (cosine of the item vectors).
anchor = 260 if 260 in recommender.item_vectors().index else train["item"].mode()[0]
print(f"similar to {movies.at[anchor, 'title']}:")
for row in recommender.similar_items(anchor, k=5).itertuples():
    print(f"  {movies.at[row.item, 'title']}  (similarity {row.similarity:.2f})")

# %% Cold start: a movie nobody has watched yet, known only by its genres.
print("a new Animation|Children|Comedy movie is most like:")
for row in recommender.similar_items("new movie", k=5,
                                     item_features={"genres": "Animation|Children|Comedy"}
                                     ).itertuples():
    print(f"  {movies.at[row.item, 'title']}  (similarity {row.similarity:.2f})")

# %% A new user, folded in from three movies (their vector fitted with the items fixed).
seen = [1, 2355, 4886] if not FAST else list(train["item"].value_counts().index[:3])
print("a new user who watched " + ", ".join(movies.at[i, "title"] for i in seen) + " gets:")
for row in recommender.recommend_for_items(seen, k=5).itertuples():
    print(f"  {movies.at[row.item, 'title']}")
