"""Evaluating a recommender the way it will be used: predict each user's next movie.

Holds out each user's latest rating (leave_last_out), fits the default
EmbeddingRecommender on the rest, and scores its top 10 against the held-out
movie when the user rated it 4 or more: with the training movies excluded
(the standard protocol), then kept in the lists (to see what they cost), with
the most popular unseen movies for scale. The settings are chosen on a
validation split carved the same way from the training part, never on the
test part. docs/ranking_metrics.md defines every number printed here.

Runs offline on the shipped MovieLens latest-small.
Run: python examples/leave_last_out.py   (TABEMBED_FAST=1 for a quick smoke run)
"""

import os

import pandas as pd

from tabembed import EmbeddingRecommender
from tabembed.datasets import load_movielens
from tabembed.interaction_splits import leave_last_out
from tabembed.ranking_metrics import evaluate

FAST = os.environ.get("TABEMBED_FAST") == "1"
K = 10

# %% Each user's latest rating is the test set; a user with a single rating stays in train.
ratings = load_movielens("latest-small")
if FAST:
    ratings = ratings[ratings["user"] <= 150]
train, test = leave_last_out(ratings, n=1)
relevant = test[test["rating"] >= 4]
print(f"{len(train)} training ratings; {len(test)} users hold out their last rating, "
      f"{len(relevant)} of them rated it 4 or more (only they are scored)")

# %% Validation: the same split again inside the training part, to choose the number of
# epochs without looking at the test part.
inner, valid = leave_last_out(train, n=1)
valid_relevant = valid[valid["rating"] >= 4]
choices = (2, 3) if FAST else (5, 10)
best, best_score = None, -1.0
for epochs in choices:
    model = EmbeddingRecommender(epochs=epochs, random_state=0)
    model.fit(inner[["user", "item"]], inner["rating"])
    lists = model.recommend(valid_relevant["user"].unique(), k=K)
    score = evaluate(lists, valid_relevant, k=K, metrics=("ndcg",))[f"ndcg@{K}"]
    print(f"validation NDCG@{K} with {epochs} epochs: {score:.4f}")
    if score > best_score:
        best, best_score = epochs, score

# %% Fit on the whole training part with the chosen setting; score the test part once.
model = EmbeddingRecommender(epochs=best, random_state=0)
model.fit(train[["user", "item"]], train["rating"])
users = relevant["user"].unique()
lists = model.recommend(users, k=K)
metrics = ("recall", "truncated_recall", "hit_rate", "ndcg")
excluded = evaluate(lists, relevant, k=K, metrics=metrics, n_items=ratings["item"].nunique())
print(f"test, seen movies excluded ({excluded['users']} users): "
      + ", ".join(f"{name} {excluded[name]:.4f}" for name in excluded if "@" in name)
      + f", coverage {excluded['coverage']:.3f}")
# With one held-out movie per user, recall, truncated recall and hit rate coincide.
assert abs(excluded[f"recall@{K}"] - excluded[f"hit_rate@{K}"]) < 1e-12

# %% The same model without excluding what each user already rated: those movies can never
# be the held-out one, so every slot they take is lost.
kept = model.recommend(users, k=K, exclude_seen=False)
with_seen = evaluate(kept, relevant, k=K, metrics=("recall", "ndcg"), seen=train,
                     exclude_seen=False)
print(f"test, seen movies kept: recall@{K} {with_seen[f'recall@{K}']:.4f}, "
      f"NDCG@{K} {with_seen[f'ndcg@{K}']:.4f}; {with_seen['seen_share']:.0%} of the "
      "slots hold a movie the user had rated")
longest = int(train.groupby("user").size().max())
refiltered = evaluate(model.recommend(users, k=K + longest, exclude_seen=False),
                      relevant, k=K, metrics=("recall",), seen=train)
print(f"the same lists with seen movies dropped by evaluate(seen=train): recall@{K} "
      f"{refiltered[f'recall@{K}']:.4f} (as recommend's own exclusion)")
assert abs(refiltered[f"recall@{K}"] - excluded[f"recall@{K}"]) < 1e-12

# %% For scale: the most rated movies each user has not rated.
ranked = train["item"].value_counts().index
seen = train.groupby("user")["item"].agg(set)
rows = []
for user in users:
    unseen = [item for item in ranked[:K + len(seen[user])] if item not in seen[user]]
    rows += [(user, item) for item in unseen[:K]]
baseline = evaluate(pd.DataFrame(rows, columns=["user", "item"]), relevant, k=K,
                    metrics=("recall", "ndcg"))
print(f"test, most popular unseen movies: recall@{K} {baseline[f'recall@{K}']:.4f}, "
      f"NDCG@{K} {baseline[f'ndcg@{K}']:.4f}")
