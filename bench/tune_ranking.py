"""Choose the explicit recommender's ranking defaults on validation splits (issue 14).

Ranking by predicted rating (``ranking="rating"``). For each dataset the
training part of a per-user random 80/20 split is split again (per-user
80/20, another seed): the model is fitted once on the inner
training part, then ranked with each ``ranking_shrinkage`` x ``min_support``
and scored by recall@10 / NDCG@10 on the inner held-out part (ratings >= 4
relevant, training items excluded). The test part is never touched.

    python bench/tune_ranking.py DATA_HOME
"""

from __future__ import annotations

import sys
import time

from common import machine

from tabembed.datasets import load_movielens
from tabembed.interaction_splits import random_holdout
from tabembed.ranking_metrics import evaluate
from tabembed.recommenders import EmbeddingRecommender

SHRINKAGE = (0, 1, 5, 10, 25, 50, 100, 1e9)
SUPPORT = (0, 5, 10, 20)


def main(data_home: str) -> None:
    print(f"Ranking defaults, validation ({machine()})\n")
    for name in ("100k", "latest-small"):
        ratings = load_movielens(name, data_home=data_home)
        train, _ = random_holdout(ratings, test_fraction=0.2, random_state=0)
        inner, valid = random_holdout(train, test_fraction=0.2, random_state=1)
        relevant = valid[valid["rating"] >= 4]
        for model in ("dot", "neural"):
            start = time.perf_counter()
            recommender = EmbeddingRecommender(model=model, ranking="rating", random_state=0)
            recommender.fit(inner[["user", "item"]], inner["rating"])
            fitted = time.perf_counter() - start
            print(f"\n### ml-{name}, {model} (fit {fitted:.1f} s)\n")
            print("| shrinkage | min support | recall@10 | NDCG@10 | coverage |")
            print("| --- | --- | --- | --- | --- |")
            users = relevant["user"].unique()
            # Neural CF scores every pair through its MLP: a smaller grid.
            grid = [(s, m) for s in SHRINKAGE for m in SUPPORT] if model == "dot" else \
                [(s, m) for s in (0, 25) for m in (0, 20)]
            for shrinkage, support in grid:
                recommender.set_params(ranking_shrinkage=shrinkage, min_support=support)
                lists = recommender.recommend(users, k=10)
                scores = evaluate(lists, relevant, k=10, n_items=ratings["item"].nunique(),
                                  metrics=("recall", "ndcg"))
                label = "inf (no item bias)" if shrinkage >= 1e9 else f"{shrinkage:g}"
                print(f"| {label} | {support} | {scores['recall@10']:.4f} | "
                      f"{scores['ndcg@10']:.4f} | {scores['coverage']:.3f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
