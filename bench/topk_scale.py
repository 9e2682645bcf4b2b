"""Top-k at scale: every user at 1e5 x 1e5 (issue 14), and a 1e6-item catalogue through the
approximate nearest-neighbour index (issue 32).

``python bench/topk_scale.py [n_users n_items]`` (issue 14): a dot-bias recommender fitted
for one epoch on 3e5 random interactions among 1e5 users and 1e5 items (the quality is
irrelevant here), then ``recommend_all(k=10)``: 1e10 scores, computed and ranked in
chunks, each user's training items excluded. Peak resident memory is read from the kernel
(``ru_maxrss``) before and after.

``python bench/topk_scale.py ann [n_users n_items n_factors]`` (issue 32; default 1e5
users, 1e6 items, 64 factors; needs ``pip install tabembed[ann]``): a dot-bias recommender
(``ranking="rating"``, no ``y_range``, no shrinkage) is fitted for one epoch on one
interaction per user and per item plus as many random ones, which makes the vocabularies;
then its factors are replaced by clustered synthetic ones (1,000 clusters, item biases
N(0, 0.3)) and it is saved. Three subprocesses, so that each peak RSS is its own: the
model's construction; ``recommend(user, k=10, index="exact")`` for a sample of users
(latency per call, p50/p99, and the lists); then ``build_index()`` (timed),
``recommend(user, k=10, index="ann")`` for the same and more users (latency, recall of the
exact top-10), and ``recommend_all(path=..., index="ann")`` for every user. One thread
(torch and faiss's OpenMP), seen items excluded.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import machine

import tabembed
from tabembed.recommenders import EmbeddingRecommender

EXACT_USERS = 300      # users timed exactly (and whose lists give the recall)
ANN_USERS = 3000       # users timed through the index
CLUSTERS = 1000


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def every_user(n_users: int, n_items: int) -> None:
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


# ---------------------------------------------------------------- the 1e6-item catalogue

def _clustered(rng, centres, n, scale=2.0) -> np.ndarray:
    d = centres.shape[1]
    noise = rng.standard_normal((n, d), dtype=np.float32) * np.float32(0.5 / np.sqrt(d))
    return (centres[rng.integers(0, len(centres), n)] + noise) * np.float32(scale)


def make_model(n_users: int, n_items: int, n_factors: int, path: Path) -> dict:
    rng = np.random.default_rng(0)
    extra = max(n_users, n_items)
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n_items + extra)])
    items = np.concatenate([rng.integers(0, n_items, n_users), np.arange(n_items),
                            rng.integers(0, n_items, extra)])
    X = pd.DataFrame({"user": users, "item": items})
    start = time.perf_counter()
    recommender = EmbeddingRecommender(
        n_factors=n_factors, epochs=1, batch_size=8192, ranking="rating", y_range=None,
        ranking_shrinkage=0, min_support=0, random_state=0).fit(X, rng.uniform(1, 5, len(X)))
    fit_seconds = time.perf_counter() - start
    centres = rng.standard_normal((CLUSTERS, n_factors), dtype=np.float32) / np.float32(
        np.sqrt(n_factors))
    model = recommender.model_
    with torch.no_grad():
        model.user_factors.weight[1:] = torch.from_numpy(_clustered(rng, centres, n_users))
        model.item_factors.weight[1:] = torch.from_numpy(_clustered(rng, centres, n_items))
        model.item_bias.weight[1:, 0] = torch.from_numpy(
            rng.normal(0, 0.3, n_items).astype(np.float32))
    recommender._scorer_cache = None
    recommender.save(path)
    return {"rows": len(X), "fit_seconds": fit_seconds, "peak_mib": peak_mib()}


def _latencies(recommender, users, index: str) -> tuple[np.ndarray, list]:
    for user in users[:3]:     # warm-up: first-call allocations, the seen-items cache
        recommender.recommend(user, k=10, index=index)
    seconds, lists = [], []
    for user in users:
        start = time.perf_counter()
        top = recommender.recommend(user, k=10, index=index)
        seconds.append(time.perf_counter() - start)
        lists.append(top["item"].to_numpy())
    return np.asarray(seconds), lists


def _sample(recommender, n: int) -> list:
    ids = recommender.preprocessor_.categories_["user"]
    return [ids[i] for i in np.random.default_rng(1).permutation(len(ids))[:n]]


def run_exact(path: Path, work: Path) -> dict:
    recommender = tabembed.load(path)
    loaded = peak_mib()
    users = _sample(recommender, EXACT_USERS)
    seconds, lists = _latencies(recommender, users, "exact")
    np.save(work / "exact.npy", np.stack(lists))
    return {"p50_ms": 1e3 * np.median(seconds), "p99_ms": 1e3 * np.percentile(seconds, 99),
            "loaded_mib": loaded, "peak_mib": peak_mib()}


def run_ann(path: Path, work: Path, n_users: int) -> dict:
    recommender = tabembed.load(path)
    loaded = peak_mib()
    start = time.perf_counter()
    recommender.build_index()
    build = time.perf_counter() - start
    built = peak_mib()
    users = _sample(recommender, max(ANN_USERS, EXACT_USERS))
    seconds, lists = _latencies(recommender, users, "ann")
    exact = np.load(work / "exact.npy")
    # The sample's first EXACT_USERS users are the exact run's (same seed, same order).
    recall = np.mean([len(np.intersect1d(a, b)) / len(b)
                      for a, b in zip(lists[:len(exact)], exact)])
    start = time.perf_counter()
    recommender.recommend_all(k=10, index="ann", path=work / "lists.parquet")
    every = time.perf_counter() - start
    return {"p50_ms": 1e3 * np.median(seconds), "p99_ms": 1e3 * np.percentile(seconds, 99),
            "recall": recall, "build_s": build, "loaded_mib": loaded, "built_mib": built,
            "peak_mib": peak_mib(), "all_users_s": every, "all_users_per_s": n_users / every}


def _step(*arguments) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, __file__, "step", *map(str, arguments)],
                          check=True, capture_output=True, text=True, env=environment)
    return json.loads(done.stdout.strip().splitlines()[-1])


def catalogue(n_users: int, n_items: int, n_factors: int) -> None:
    with tempfile.TemporaryDirectory(prefix="topk-scale-") as folder:
        work = Path(folder)
        made = _step("make", work, n_users, n_items, n_factors)
        exact = _step("exact", work, n_users)
        ann = _step("ann", work, n_users)
    print(f"# Top-10 from a {n_items:,}-item catalogue ({machine()}, faiss "
          f"{_faiss_version()}, OMP_NUM_THREADS=1)\n")
    print(f"{n_users:,} users, {n_items:,} items, {n_factors} factors (clustered, "
          f"{CLUSTERS:,} clusters), seen items excluded; model built from a one-epoch fit on "
          f"{made['rows']:,} rows ({made['fit_seconds']:.0f} s) with planted factors.\n")
    print("| search | users timed | p50 ms/user | p99 ms/user | recall@10 vs exact | "
          "index build s | RSS after load, MiB | after build | peak, MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| exact | {EXACT_USERS:,} | {exact['p50_ms']:.1f} | {exact['p99_ms']:.1f} | 1 | - | "
          f"{exact['loaded_mib']:.0f} | - | {exact['peak_mib']:.0f} |")
    print(f"| ANN (HNSW) | {max(ANN_USERS, EXACT_USERS):,} | {ann['p50_ms']:.2f} | "
          f"{ann['p99_ms']:.2f} | {ann['recall']:.3f} | {ann['build_s']:.0f} | "
          f"{ann['loaded_mib']:.0f} | {ann['built_mib']:.0f} | {ann['peak_mib']:.0f} |")
    print(f"\nrecommend_all(k=10, index='ann', path=...) for all {n_users:,} users: "
          f"{ann['all_users_s']:.0f} s ({ann['all_users_per_s']:,.0f} users/s). "
          f"p50 ratio exact / ANN: {exact['p50_ms'] / ann['p50_ms']:.0f}x.")


def _faiss_version() -> str:
    import faiss

    return faiss.__version__


def step(name: str, work: str, *sizes: str) -> None:
    torch.set_num_threads(1)
    work = Path(work)
    model = work / "model"
    if name == "make":
        result = make_model(*(int(s) for s in sizes), model)
    elif name == "exact":
        result = run_exact(model, work)
    else:
        result = run_ann(model, work, int(sizes[0]))
    print(json.dumps({k: float(v) for k, v in result.items()}))


def main() -> None:
    arguments = sys.argv[1:]
    if arguments[:1] == ["step"]:
        step(*arguments[1:])
    elif arguments[:1] == ["ann"]:
        sizes = [int(a) for a in arguments[1:]]
        defaults = [100_000, 1_000_000, 64]
        catalogue(*(sizes + defaults[len(sizes):]))
    else:
        every_user(*((int(a) for a in arguments[:2]) if len(arguments) > 1
                     else (100_000, 100_000)))


if __name__ == "__main__":
    main()
