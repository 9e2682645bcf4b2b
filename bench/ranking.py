"""Top-10 recommendation quality against peers (issues 14 and 32).

On MovieLens 100K and latest-small, with two splits (per-user random 80/20,
seed 0; leave-last-out by timestamp): recall@10, NDCG@10, catalogue coverage
and fit time of

- tabembed EmbeddingRecommender (explicit ratings) ranked by predicted rating
  (``ranking="rating"``: shrunk item biases, a minimum support), with the
  default (``ranking="auto"``: ``"item_item"``, EASE on every rating + EASE on
  the ratings above the mean + the predicted rating, on these catalogues), with
  ``"blend"`` (the same plus the implicit ranker) and
  with ``"hybrid"`` (the implicit ranker + the predicted rating: the default
  before issue 32, and above 20,000 items);
- tabembed ImplicitRecommender, BPR and sampled softmax (defaults);
- the most popular unseen items;
- EASE (Steck, 2019), the closed-form item-item model, its L2 strength lambda
  chosen on a validation split carved from the training part (the same kind of
  split again: per-user 80/20 with seed 1, or each user's last training row);
- LightFM with the WARP loss (when ``lightfm`` is installed), its number of
  epochs chosen on the same validation split;
- the ``implicit`` package's ALS and BPR (their defaults, the binary matrix).

Every model gets the same training rows (the explicit model its ratings, the
implicit ones every training interaction as a positive); relevant items are
the test rows rated 4 or more; each user's training items are excluded; users
without a relevant test item are left out of the means. One thread each.
Fit time is the final fit's, wall and CPU seconds (one thread: the CPU time
is what other load on a shared machine changes least); the validation search
before it is reported beside the model's name.

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
from tabembed.ranking_metrics import evaluate, top_k
from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender

K = 10
RELEVANT = 4.0
# EASE's lambda: a walk over powers of two from LAMBDA_START, towards the better side,
# until validation NDCG@10 falls (each step is one inversion of the item Gram matrix).
LAMBDA_START = (100.0, 200.0, 400.0)
# LightFM: epochs tried on validation (fit_partial, one model per L2 strength on the user
# and item factors), the best pair refitted. Without L2, WARP peaks at 1-5 epochs.
LIGHTFM_EPOCHS = (1, 2, 3, 5, 8, 13, 20, 30, 50)
LIGHTFM_ALPHAS = (0.0, 1e-5, 1e-4)
LIGHTFM_FACTORS = 64


# ---------------------------------------------------------------- helpers

class Clock:
    """Wall and CPU seconds since creation: ``read()`` -> ``(wall, cpu)``. The CPU time of
    this process (every model here runs one thread) is what other load on a shared machine
    changes least."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class Interactions:
    """The binary user x item matrix of ``train`` over fixed indexes."""

    def __init__(self, train: pd.DataFrame, items: pd.Index | None = None):
        self.users = pd.Index(train["user"].unique())
        self.items = items if items is not None else pd.Index(train["item"].unique())
        rows = self.users.get_indexer(train["user"])
        columns = self.items.get_indexer(train["item"])
        keep = columns >= 0
        self.matrix = sp.csr_matrix((np.ones(int(keep.sum()), np.float32),
                                     (rows[keep], columns[keep])),
                                    shape=(len(self.users), len(self.items)))
        self.matrix.sum_duplicates()
        self.matrix.data[:] = 1.0

    def lists(self, scores_for, users, k: int = K, chunk: int = 2048) -> pd.DataFrame:
        """Top-``k`` unseen items of each known user of ``users``: ``scores_for(rows)``
        gives the dense scores of those matrix rows."""
        rows = self.users.get_indexer(pd.Index(users))
        listed = np.asarray(users)[rows >= 0]
        rows = rows[rows >= 0]
        found = []
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            items, _ = top_k(np.asarray(scores_for(part), dtype=np.float32), k,
                             exclude=self.matrix[part])
            found.append(items)
        items = np.concatenate(found) if found else np.zeros((0, k), np.int64)
        valid = items >= 0
        return pd.DataFrame({"user": np.repeat(listed, valid.sum(1)),
                             "item": self.items.to_numpy()[items[valid]]})


def ndcg(lists: pd.DataFrame, test: pd.DataFrame) -> float:
    relevant = test[test["rating"] >= RELEVANT]
    return evaluate(lists, relevant, k=K, metrics=("ndcg",))[f"ndcg@{K}"]


def validation_users(valid: pd.DataFrame):
    return valid.loc[valid["rating"] >= RELEVANT, "user"].unique()


# ---------------------------------------------------------------- EASE

def ease_weights(matrix: sp.csr_matrix, strength: float) -> np.ndarray:
    """EASE's item-item weights ``B = I - P / diag(P)`` (``P = (X'X + lambda I)^-1``),
    zero diagonal, so ``scores = X @ B`` (Steck, 2019). float32 Cholesky: ``X'X + lambda I``
    is positive definite, and half the work of a general inverse."""
    from scipy.linalg import lapack

    gram = (matrix.T @ matrix).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += strength
    factor, info = lapack.spotrf(gram, lower=0, overwrite_a=1, clean=0)
    if info:
        raise np.linalg.LinAlgError(f"Cholesky failed (info {info})")
    inverse, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info:
        raise np.linalg.LinAlgError(f"inverse failed (info {info})")
    inverse = np.triu(inverse)
    inverse += np.triu(inverse, 1).T
    weights = inverse / -np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


def ease_fit(train: pd.DataFrame, strength: float) -> tuple[Interactions, np.ndarray]:
    data = Interactions(train)
    return data, ease_weights(data.matrix, strength)


def ease_lists(data: Interactions, weights: np.ndarray, users) -> pd.DataFrame:
    return data.lists(lambda rows: data.matrix[rows] @ weights, users)


def choose_ease_lambda(train: pd.DataFrame, carve) -> tuple[float, dict]:
    """Lambda by validation NDCG@10 on ``carve(train)``: powers of two walked from
    ``LAMBDA_START`` towards the better side until the score falls."""
    inner, valid = carve(train)
    users = validation_users(valid)
    data = Interactions(inner)
    scores = {}

    def score(strength):
        if strength not in scores:
            scores[strength] = ndcg(ease_lists(data, ease_weights(data.matrix, strength),
                                               users), valid)
        return scores[strength]

    for strength in LAMBDA_START:
        score(strength)
    best = max(scores, key=scores.get)
    for step in (0.5, 2.0):
        strength = best
        while (strength * step) not in scores and 1 <= strength * step <= 1e5:
            strength *= step
            if score(strength) <= scores[best]:
                break
            best = strength
    return best, scores


def ease(train, users, carve):
    start = time.perf_counter()
    strength, scores = choose_ease_lambda(train, carve)
    searched = time.perf_counter() - start
    clock = Clock()
    data, weights = ease_fit(train, strength)
    fitted = clock.read()
    tried = ", ".join(f"{s:g}: {v:.4f}" for s, v in sorted(scores.items()))
    note = f"lambda {strength:g} (validation NDCG@10 {tried}; search {searched:.0f} s)"
    return ease_lists(data, weights, users), fitted, note


# ---------------------------------------------------------------- LightFM

def lightfm_scores(model, rows):
    user_bias, user_vectors = model.get_user_representations()
    item_bias, item_vectors = model.get_item_representations()
    return user_vectors[rows] @ item_vectors.T + item_bias[None, :] + user_bias[rows, None]


def lightfm_model(alpha: float, seed: int = 0):
    from lightfm import LightFM

    return LightFM(no_components=LIGHTFM_FACTORS, loss="warp", item_alpha=alpha,
                   user_alpha=alpha, random_state=seed)


def lightfm(train, users, carve):
    inner, valid = carve(train)
    valid_users = validation_users(valid)
    start = time.perf_counter()
    data, scores = Interactions(inner), {}
    for alpha in LIGHTFM_ALPHAS:
        model, done = lightfm_model(alpha), 0
        for epochs in LIGHTFM_EPOCHS:
            model.fit_partial(data.matrix.tocoo(), epochs=epochs - done, num_threads=1)
            done = epochs
            scores[alpha, epochs] = ndcg(data.lists(lambda rows, m=model: lightfm_scores(m, rows),
                                                    valid_users), valid)
    alpha, epochs = max(scores, key=scores.get)
    searched = time.perf_counter() - start
    data = Interactions(train)
    clock = Clock()
    model = lightfm_model(alpha)
    model.fit(data.matrix.tocoo(), epochs=epochs, num_threads=1)
    fitted = clock.read()
    runner_up = sorted(scores.items(), key=lambda pair: -pair[1])[1]
    note = (f"{LIGHTFM_FACTORS} factors, L2 {alpha:g}, {epochs} epochs (validation NDCG@10 "
            f"{scores[alpha, epochs]:.4f}; next best L2 {runner_up[0][0]:g}, "
            f"{runner_up[0][1]} epochs: {runner_up[1]:.4f}; {len(scores)} tried in "
            f"{searched:.0f} s)")
    return data.lists(lambda rows: lightfm_scores(model, rows), users), fitted, note


# ---------------------------------------------------------------- the others

def tabembed_method(make, explicit: bool):
    def run(train, users, carve):
        recommender = make()
        clock = Clock()
        if explicit:
            recommender.fit(train[["user", "item"]], train["rating"])
        else:
            recommender.fit(train[["user", "item"]])
        fitted = clock.read()
        return recommender.recommend(list(users), k=K), fitted, ""
    return run


def popularity(train, users, carve):
    clock = Clock()
    data = Interactions(train)
    counts = np.asarray(data.matrix.sum(0)).ravel()
    fitted = clock.read()
    return data.lists(lambda rows: np.broadcast_to(counts, (len(rows), len(counts))),
                      users), fitted, ""


def implicit_method(kind: str):
    def run(train, users, carve):
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking

        data = Interactions(train)
        model = (AlternatingLeastSquares(random_state=0, num_threads=1) if kind == "als" else
                 BayesianPersonalizedRanking(random_state=0, num_threads=1))
        clock = Clock()
        model.fit(data.matrix, show_progress=False)
        fitted = clock.read()
        factors = (np.asarray(model.user_factors), np.asarray(model.item_factors))
        return data.lists(lambda rows: factors[0][rows] @ factors[1].T, users), fitted, ""
    return run


METHODS = {
    "tabembed explicit dot-bias, ranking='rating' (biases shrunk, 20 ratings needed)":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0, ranking="rating"),
                        explicit=True),
    "tabembed explicit dot-bias, default (ranking='auto': 'item_item', EASE + liked EASE + "
    "rating)":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0), explicit=True),
    "tabembed explicit dot-bias, ranking='blend' (the default + implicit ranker)":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0, ranking="blend"),
                        explicit=True),
    "tabembed explicit dot-bias, ranking='hybrid' (implicit ranker + rating; default before)":
        tabembed_method(lambda: EmbeddingRecommender(random_state=0, ranking="hybrid"),
                        explicit=True),
    "tabembed implicit BPR (defaults)":
        tabembed_method(lambda: ImplicitRecommender(loss="bpr", random_state=0),
                        explicit=False),
    "tabembed implicit sampled softmax (defaults)":
        tabembed_method(lambda: ImplicitRecommender(loss="softmax", random_state=0),
                        explicit=False),
    "popularity (most rated unseen items)": popularity,
    "EASE": ease,
    "LightFM WARP": lightfm,
    "implicit ALS (defaults: 100 factors, 15 iterations)": implicit_method("als"),
    "implicit BPR (defaults: 100 factors, 100 iterations)": implicit_method("bpr"),
}


def splits(ratings: pd.DataFrame) -> dict:
    """Each split: ``(train, test, carve)``, ``carve(train)`` the same kind of split of the
    training part (validation; the test part is never looked at while choosing)."""
    return {
        "random 80/20 per user": (
            *random_holdout(ratings, test_fraction=0.2, random_state=0),
            lambda train: random_holdout(train, test_fraction=0.2, random_state=1)),
        "leave last out": (*leave_last_out(ratings), leave_last_out),
    }


def available(module: str) -> str:
    try:
        imported = __import__(module)
    except ImportError as error:
        return f"{module} not installed ({error})"
    return f"{module} {getattr(imported, '__version__', '?')}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_home", nargs="?", default="../shared/datasets")
    parser.add_argument("--only", default=None,
                        help="run the methods whose name has one of these (comma-separated)")
    parser.add_argument("--data", default="100k,latest-small",
                        help="comma-separated MovieLens names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    peers = "; ".join(available(m) for m in ("implicit", "lightfm"))
    print(f"# Ranking: top-{K} against peers ({machine()}; {peers})\n")
    print(f"Command: `{' '.join(['OMP_NUM_THREADS=1', 'python', *sys.argv])}`\n")
    lightfm_missing = "not installed" in available("lightfm")
    for name in args.data.split(","):
        ratings = load_movielens(name, data_home=args.data_home)
        for split, (train, test, carve) in splits(ratings).items():
            relevant = test[test["rating"] >= RELEVANT]
            users = relevant["user"].unique()
            print(f"\n### ml-{name}, {split} ({len(train)} training rows, {len(users)} users "
                  "with a relevant test item)\n")
            print(f"| model | recall@{K} | NDCG@{K} | coverage | fit s | fit CPU s |")
            print("| --- | --- | --- | --- | --- | --- |")
            for method, run in METHODS.items():
                if args.only and not any(part in method for part in args.only.split(",")):
                    continue
                if method == "LightFM WARP" and lightfm_missing:
                    print(f"| {method}: not run, lightfm does not install here "
                          "(bench/RESULTS.md) | - | - | - | - | - |", flush=True)
                    continue
                lists, fitted, note = run(train, users, carve)
                scores = evaluate(lists, relevant, k=K, n_items=ratings["item"].nunique(),
                                  metrics=("recall", "ndcg"))
                label = f"{method}, {note}" if note else method
                print(f"| {label} | {scores[f'recall@{K}']:.4f} | {scores[f'ndcg@{K}']:.4f} | "
                      f"{scores['coverage']:.3f} | {fitted[0]:.1f} | {fitted[1]:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
