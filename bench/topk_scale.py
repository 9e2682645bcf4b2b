"""Top-k for every user at 1e5 users x 1e5 items: time and peak memory (issue 14).

A dot-bias recommender fitted for one epoch on 3e5 random interactions among
1e5 users and 1e5 items (the quality is irrelevant here), then
``recommend_all(k=10)``: 1e10 scores, computed and ranked in chunks, each
user's training items excluded. Peak resident memory is read from the kernel
(``ru_maxrss``) before and after.

    python bench/topk_scale.py [n_users n_items]
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import pandas as pd
import torch
from common import machine

from tabembed.recommenders import EmbeddingRecommender


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    n_users, n_items = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (100_000,
                                                                                 100_000)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = 3 * max(n_users, n_items)
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, rows - n_users)])
    items = np.concatenate([rng.permutation(np.arange(n_items))[:min(n_items, rows)],
                            rng.integers(0, n_items, rows - min(n_items, rows))])
    X = pd.DataFrame({"user": users, "item": items[:len(users)]})
    y = rng.uniform(1, 5, len(X))
    recommender = EmbeddingRecommender(epochs=1, ranking="rating", ranking_shrinkage=0,
                                       min_support=0, random_state=0).fit(X, y)
    before = peak_mib()
    start = time.perf_counter()
    lists = recommender.recommend_all(k=10)
    seconds = time.perf_counter() - start
    after = peak_mib()
    print(f"# Top-10 for every user ({machine()})\n")
    print("| users | items | scores | seconds | users/s | peak RSS before, MiB | after, MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {n_users:,} | {n_items:,} | {n_users * n_items:.1e} | {seconds:.1f} | "
          f"{n_users / seconds:,.0f} | {before:.0f} | {after:.0f} |")
    assert len(lists) == 10 * n_users


if __name__ == "__main__":
    main()
