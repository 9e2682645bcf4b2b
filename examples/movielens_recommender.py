"""A MovieLens recommender: rating prediction, top-k recommendations, similar movies.

Runs offline on the shipped MovieLens latest-small. For MovieLens 100K, point
TABEMBED_DATA at a folder holding the unzipped ml-100k/ and set DATASET=100k.
Run: python examples/movielens_recommender.py   (TABEMBED_FAST=1 for a quick smoke run)
"""

import os

import numpy as np

from tabembed import EmbeddingRecommender
from tabembed.datasets import load_movielens, load_movielens_items

FAST = os.environ.get("TABEMBED_FAST") == "1"
DATASET = os.environ.get("DATASET", "latest-small")

# %% Ratings and titles; a random 90/10 split (seed 0).
ratings = load_movielens(DATASET)
titles = load_movielens_items(DATASET).set_index("item")["title"]
if FAST:
    ratings = ratings.sample(20000, random_state=0)
test_rows = np.random.default_rng(0).random(len(ratings)) < 0.1
train, test = ratings[~test_rows], ratings[test_rows]

# %% Dot product + biases (biased matrix factorisation), ratings squashed into (0, 5.5).
recommender = EmbeddingRecommender(model="dot", epochs=1 if FAST else 5, random_state=0)
recommender.fit(train[["user", "item"]], train["rating"])
rmse = np.sqrt(np.mean((recommender.predict(test[["user", "item"]]) - test["rating"]) ** 2))
print(f"{DATASET}: test RMSE {rmse:.4f} on {len(test):,} ratings")

# %% Top 5 for user 1, unseen movies only. Ranked by the default item-item ranking: EASE,
# a closed-form item-item model solved beside the rating model on every rating and on the
# liked ones (which movies this user would pick), plus the predicted rating (whether they
# would like them), each standardised per user; the score is that sum, not a rating.
for row in recommender.recommend(1, k=5).itertuples():
    print(f"  recommend for user 1: {titles.get(row.item, row.item)}  ({row.score:.2f})")

# %% Movies most raised by a well-known one: its row of the item-item (EASE) weights.
anchor = train["item"].value_counts().index[0]
print(f"similar to {titles.get(anchor, anchor)}:")
for row in recommender.similar_items(anchor, k=5).itertuples():
    print(f"  {titles.get(row.item, row.item)}  (similarity {row.similarity:.2f})")
