"""Top-10 recommendation quality against peers (issue 14).

On MovieLens 100K and latest-small, with two splits (per-user random 80/20,
seed 0; leave-last-out by timestamp): recall@10, NDCG@10, catalogue coverage
and fit time of

- tabembed EmbeddingRecommender (explicit ratings) as shipped before this
  work (ranked by predicted rating), with ``ranking="rating"`` (shrunk item
  biases, a minimum support) and with the new default ``ranking="hybrid"``;
- tabembed ImplicitRecommender, BPR and sampled softmax (defaults);
- the most popular unseen items;
- the ``implicit`` package's ALS and BPR (their defaults, the binary matrix).

Every model gets the same training rows (the explicit model its ratings, the
implicit ones every training interaction as a positive); relevant items are
the test rows rated 4 or more; each user's training items are excluded; users
without a relevant test item are left out of the means. One thread each.

    OMP_NUM_THREADS=1 .venv-bench/bin/python bench/ranking.py DATA_HOME
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from common import machine

from tabembed.datasets import load_movielens
from tabembed.interaction_splits import leave_last_out, random_holdout
from tabembed.ranking_metrics import evaluate
from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender

K = 10


def tabembed_method(make, explicit: bool):
    def run(train, users):
        recommender = make()
        start = time.perf_counter()
        if explicit:
            recommender.fit(train[["user", "item"]], train["rating"])
        else:
            recommender.fit(train[["user", "item"]])
        fitted = time.perf_counter() - start
        return recommender.recommend(list(users), k=K), fitted
    return run


def popularity(train, users):
    start = time.perf_counter()
    counts = train["item"].value_counts(sort=False)
    ranked = counts.sort_values(ascending=False, kind="stable").index.to_numpy()
    fitted = time.perf_counter() - start
    seen = train.groupby("user")["item"].agg(set)
    rows = []
    for user in users:      # a short loop: at most 10 + |seen| items are looked at
        mine, picked = seen.get(user, set()), []
        for item in ranked:
            if item not in mine:
                picked.append(item)
                if len(picked) == K:
                    break
        rows += [(user, item) for item in picked]
    return pd.DataFrame(rows, columns=["user", "item"]), fitted


def implicit_method(kind: str):
    def run(train, users):
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking

        user_index = pd.Index(train["user"].unique())
        item_index = pd.Index(train["item"].unique())
        matrix = sp.csr_matrix((np.ones(len(train), np.float32),
                                (user_index.get_indexer(train["user"]),
                                 item_index.get_indexer(train["item"]))),
                               shape=(len(user_index), len(item_index)))
        matrix.data[:] = 1.0
        model = (AlternatingLeastSquares(random_state=0, num_threads=1) if kind == "als" else
                 BayesianPersonalizedRanking(random_state=0, num_threads=1))
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        fitted = time.perf_counter() - start
        rows = user_index.get_indexer(pd.Index(users))
        known = rows >= 0
        ids, _ = model.recommend(rows[known], matrix[rows[known]], N=K,
                                 filter_already_liked_items=True)
        listed = np.asarray(users)[known]
        frame = pd.DataFrame({"user": np.repeat(listed, ids.shape[1]),
                              "item": item_index.to_numpy()[np.maximum(ids.ravel(), 0)],
                              "valid": ids.ravel() >= 0})
        return frame[frame["valid"]][["user", "item"]], fitted
    return run


METHODS = {
    "tabembed explicit dot-bias, ranked by predicted rating (as shipped before)":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0, ranking="rating",
                                                     ranking_shrinkage=0, min_support=0),
                        explicit=True),
    "tabembed explicit dot-bias, ranking='rating' (biases shrunk, 20 ratings needed)":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0, ranking="rating"),
                        explicit=True),
    "tabembed explicit dot-bias, new default (ranking='hybrid')":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0), explicit=True),
    "tabembed implicit BPR (defaults)":
        tabembed_method(lambda: ImplicitRecommender(loss="bpr", random_state=0),
                        explicit=False),
    "tabembed implicit sampled softmax (defaults)":
        tabembed_method(lambda: ImplicitRecommender(loss="softmax", random_state=0),
                        explicit=False),
    "popularity (most rated unseen items)": popularity,
    "implicit ALS (defaults: 100 factors, 15 iterations)": implicit_method("als"),
    "implicit BPR (defaults: 100 factors, 100 iterations)": implicit_method("bpr"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_home", nargs="?", default="../shared/datasets")
    parser.add_argument("--only", default=None, help="run the methods whose name has this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import implicit
        peers = f"implicit {implicit.__version__}"
    except ImportError:
        peers = "implicit not installed"
    print(f"# Ranking: top-{K} against peers ({machine()}; {peers})\n")
    print(f"Command: `{' '.join(['python', *sys.argv])}`\n")
    for name in ("100k", "latest-small"):
        ratings = load_movielens(name, data_home=args.data_home)
        splits = {"random 80/20 per user": random_holdout(ratings, test_fraction=0.2,
                                                          random_state=0),
                  "leave last out": leave_last_out(ratings)}
        for split, (train, test) in splits.items():
            relevant = test[test["rating"] >= 4]
            users = relevant["user"].unique()
            print(f"\n### ml-{name}, {split} ({len(train)} training rows, {len(users)} users "
                  "with a relevant test item)\n")
            print(f"| model | recall@{K} | NDCG@{K} | coverage | fit s |")
            print("| --- | --- | --- | --- | --- |")
            for method, run in METHODS.items():
                if args.only and args.only not in method:
                    continue
                lists, fitted = run(train, users)
                scores = evaluate(lists, relevant, k=K, n_items=ratings["item"].nunique(),
                                  metrics=("recall", "ndcg"))
                print(f"| {method} | {scores[f'recall@{K}']:.4f} | {scores[f'ndcg@{K}']:.4f} | "
                      f"{scores['coverage']:.3f} | {fitted:.1f} |", flush=True)


if __name__ == "__main__":
    main()
