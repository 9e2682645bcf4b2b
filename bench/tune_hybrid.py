"""Evidence for the hybrid ranking's defaults against EASE, on validation splits (issue 32).

For each dataset (MovieLens 100K, latest-small) and each kind of split, the
test part is set aside and never read: the training part is split again the
same way (per-user random 80/20 with seed 1 inside the seed-0 training part;
each user's last training rating inside leave-last-out's training part). On
that inner split:

- EASE with each lambda of a grid (the reference to beat);
- the rating model of the hybrid (``EmbeddingRecommender(ranking="rating")``
  with no shrinkage: the predicted rating the hybrid adds), fitted once;
- rankers (``ImplicitRecommender`` variants: more negatives, uniform
  negatives, the full softmax over the catalogue, fewer epochs with EMA,
  genres as item features), each blended with the rating model as the hybrid
  does (``ranker + w * rating``) for several ``w``, and with an item-item term
  from the ranker's own item vectors: each item's cosine to the items the user
  has, kept for each item's ``NEIGHBOURS`` nearest (``X_u @ S``), added with
  weight ``beta`` times the spread of the rest of the score.

Recall@10 / NDCG@10 on the inner held-out part (ratings >= 4 relevant,
training items excluded, every user with a relevant item). Fit seconds are
CPU seconds of the process (one thread: robust to other load on the machine).

    OMP_NUM_THREADS=1 python bench/tune_hybrid.py DATA_HOME [--data 100k] [--rankers "a;b"]
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
from ranking import ease_weights

import tabembed.sampling
from tabembed.datasets import load_movielens, load_movielens_items
from tabembed.interaction_splits import leave_last_out, random_holdout
from tabembed.ranking_metrics import ndcg_at_k, recall_at_k, top_k
from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender

K = 10
LAMBDAS = (50, 100, 200, 400, 800, 1600)
WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
BETAS = (0.0, 0.25, 0.5, 1.0)
# Blends of standardised scores (each user's scores less their mean, over their standard
# deviation): EASE + a * rating model, for every lambda; then, at the best lambda,
# EASE + a * rating + c * ranker.
EASE_RATING = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
EASE_RANKER = (0.0, 0.25, 0.5, 1.0)
NEIGHBOURS = 50

# Ranker variants: ImplicitRecommender parameters (genres: the item's genres as a
# multi-valued feature; full: every item is a negative of every row).
RANKERS = {
    "default": {},
    "1024 negatives": {"n_negatives": 1024},
    "uniform negatives": {"negatives": "uniform"},
    "full softmax": {"negatives": "uniform", "full": True},
    "full softmax, 5 epochs, EMA": {"negatives": "uniform", "full": True, "epochs": 5,
                                    "averaging": "ema"},
    "5 epochs, EMA": {"epochs": 5, "averaging": "ema"},
    "10 epochs, EMA": {"epochs": 10, "averaging": "ema"},
    "5 epochs": {"epochs": 5},
    "genres": {"genres": True},
    # Fewer, larger steps: a step of the default ranker costs about as much at batch 4096
    # as at 1024 on one thread (the per-step overhead dominates).
    "batch 2048, lr 1e-2": {"batch_size": 2048, "lr": 1e-2},
    "batch 4096, lr 1e-2": {"batch_size": 4096, "lr": 1e-2},
    "batch 4096, lr 2e-2": {"batch_size": 4096, "lr": 2e-2},
    "10 epochs, lr 1e-2": {"epochs": 10, "lr": 1e-2},
    "batch 4096, lr 2e-2, 10 epochs": {"batch_size": 4096, "lr": 2e-2, "epochs": 10},
}


class FullSoftmax:
    """While active, every shared draw of NegativeSampling is the whole catalogue (the
    positive among them is masked by CandidateScores): the full softmax, uniform weights."""

    def __enter__(self):
        self.original = tabembed.sampling.NegativeSampling._draw

        def draw(sampling, n_rows):
            if sampling.shared:
                return torch.arange(1, sampling.n_items + 1)
            return self.original(sampling, n_rows)

        tabembed.sampling.NegativeSampling._draw = draw
        return self

    def __exit__(self, *exc):
        tabembed.sampling.NegativeSampling._draw = self.original


class Split:
    """The inner training part, its seen matrix and the relevant held-out pairs."""

    def __init__(self, inner: pd.DataFrame, valid: pd.DataFrame):
        self.inner = inner
        relevant = valid[valid["rating"] >= 4]
        self.users = pd.Index(relevant["user"].unique())
        self.items = pd.Index(np.sort(inner["item"].unique()))
        self.relevant = self.matrix(relevant)
        if not self.users.isin(inner["user"]).all():
            raise ValueError("a validation user has no training row")
        self.seen = self.matrix(inner)      # the users' histories, rows as self.users

    def matrix(self, frame, users=None) -> sp.csr_matrix:
        users = self.users if users is None else users
        rows, columns = users.get_indexer(frame["user"]), self.items.get_indexer(frame["item"])
        keep = (rows >= 0) & (columns >= 0)
        matrix = sp.csr_matrix((np.ones(int(keep.sum()), np.float32),
                                (rows[keep], columns[keep])),
                               shape=(len(users), len(self.items)))
        matrix.sum_duplicates()
        matrix.data[:] = 1
        return matrix

    def score(self, scores: np.ndarray) -> tuple[float, float]:
        lists, _ = top_k(scores, K, exclude=self.seen)
        return recall_at_k(lists, self.relevant), ndcg_at_k(lists, self.relevant)


def grid(model, split: Split) -> np.ndarray:
    """The model's ranking scores of the split's users x items (its own private scorer:
    a bench probe, not an API)."""
    codes = model.preprocessor_.encode("user", list(split.users)).astype(np.int64)
    scores = model._scores(codes)
    order = pd.Index(model.preprocessor_.categories_["item"]).get_indexer(split.items)
    return np.asarray(scores[:, order], dtype=np.float64)


def item_item(ranker, split: Split) -> np.ndarray:
    """``X_u @ S``: S the cosine of the ranker's item vectors, each column kept for its
    ``NEIGHBOURS`` most similar items (positive parts), diagonal zero."""
    vectors = np.array(ranker.item_vectors().reindex(split.items), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, 0.0)
    keep = min(NEIGHBOURS, len(similarity) - 1)
    cut = np.partition(similarity, len(similarity) - keep, axis=0)[len(similarity) - keep]
    similarity[similarity < np.maximum(cut, 0)[None, :]] = 0.0
    return np.asarray(split.seen @ similarity, dtype=np.float64)


def spread(scores: np.ndarray) -> np.ndarray:
    return scores.std(axis=1, keepdims=True) + 1e-12


def standardised(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(axis=1, keepdims=True)) / spread(scores)


def fit_ranker(split: Split, options: dict, genres: pd.Series | None):
    options = dict(options)
    full, with_genres = options.pop("full", False), options.pop("genres", False)
    columns = ["user", "item"]
    frame = split.inner[columns]
    if with_genres:
        frame = frame.assign(genres=split.inner["item"].map(genres).to_numpy())
    start = time.process_time()
    if full:
        with FullSoftmax():
            ranker = ImplicitRecommender(random_state=1, **options).fit(frame)
    else:
        ranker = ImplicitRecommender(random_state=1, **options).fit(frame)
    return ranker, time.process_time() - start


def splits(ratings: pd.DataFrame) -> dict:
    train, _ = random_holdout(ratings, test_fraction=0.2, random_state=0)
    inner = random_holdout(train, test_fraction=0.2, random_state=1)
    train_last, _ = leave_last_out(ratings)
    return {"random 80/20": inner, "leave last out": leave_last_out(train_last)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_home", nargs="?", default="../shared/datasets")
    parser.add_argument("--data", default="100k,latest-small")
    parser.add_argument("--rankers", default="default;10 epochs, lr 1e-2;1024 negatives",
                        help=f"names among {list(RANKERS)}, separated by ;")
    parser.add_argument("--splits", default="random 80/20;leave last out", help="separated by ;")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# Hybrid ranking: validation evidence ({machine()})\n")
    print(f"Command: `{' '.join(['OMP_NUM_THREADS=1', 'python', *sys.argv])}`\n")
    for name in args.data.split(","):
        ratings = load_movielens(name, data_home=args.data_home)
        genres = load_movielens_items(name, data_home=args.data_home).set_index("item")[
            "genres"]
        for split_name, (inner, valid) in splits(ratings).items():
            if split_name not in args.splits.split(";"):
                continue
            split = Split(inner, valid)
            print(f"\n### ml-{name}, {split_name}, validation ({len(inner)} rows, "
                  f"{len(split.users)} users)\n")
            print("| model | recall@10 | NDCG@10 | fit CPU s |")
            print("| --- | --- | --- | --- |")
            full_history = split.matrix(inner, pd.Index(inner["user"].unique()))
            ease_best, ease_all = (-1.0, None, None, 0.0), {}
            for strength in LAMBDAS:
                start = time.process_time()
                weights = ease_weights(full_history, strength)
                seconds = time.process_time() - start
                ease_scores = np.asarray(split.seen @ weights, dtype=np.float64)
                recall, ndcg = split.score(ease_scores)
                print(f"| EASE, lambda {strength} | {recall:.4f} | {ndcg:.4f} | "
                      f"{seconds:.1f} |", flush=True)
                ease_all[strength] = standardised(ease_scores)
                if ndcg > ease_best[0]:
                    ease_best = (ndcg, strength, ease_all[strength], seconds)
            del weights
            _, strength, ease_z, ease_seconds = ease_best
            start = time.process_time()
            rating_model = EmbeddingRecommender(ranking="rating", ranking_shrinkage=0,
                                                min_support=0, random_state=0)
            rating_model.fit(inner[["user", "item"]], inner["rating"])
            rating_seconds = time.process_time() - start
            rating = grid(rating_model, split)
            recall, ndcg = split.score(rating)
            print(f"| rating model alone | {recall:.4f} | {ndcg:.4f} | "
                  f"{rating_seconds:.1f} |", flush=True)
            rating_z = standardised(rating)
            pairs = []
            for each, standard in ease_all.items():
                blends = [(w, *split.score(standard + w * rating_z)) for w in EASE_RATING]
                w, recall, ndcg = max(blends, key=lambda row: row[2])
                pairs.append((ndcg, each, w, recall))
                curve = ", ".join(f"{row[0]:g}: {row[2]:.4f}" for row in blends)
                print(f"| EASE (lambda {each}) + a x rating model, standardised, best a {w:g} "
                      f"(NDCG by a {curve}) | {recall:.4f} | {ndcg:.4f} | "
                      f"{ease_seconds + rating_seconds:.1f} |", flush=True)
            # The three-way blend at the lambda best for EASE + rating.
            strength = max(pairs)[1]
            ease_z = ease_all[strength]
            del ease_all
            for label in args.rankers.split(";"):
                ranker, seconds = fit_ranker(split, RANKERS[label], genres)
                scores = grid(ranker, split)
                neighbours = standardised(item_item(ranker, split))
                results = []
                for weight in WEIGHTS:
                    base = scores + weight * rating
                    for beta in BETAS:
                        blend = base + beta * spread(base) * neighbours if beta else base
                        results.append((weight, beta, *split.score(blend)))
                table = pd.DataFrame(results, columns=["w", "beta", "recall", "ndcg"])
                for (weight, beta), title in (((0.0, 0.0), "alone"),
                                              ((1.0, 0.0), "+ rating (w 1, today's hybrid)")):
                    row = table[(table.w == weight) & (table.beta == beta)].iloc[0]
                    total = seconds + (rating_seconds if weight else 0)
                    print(f"| ranker {label}, {title} | {row.recall:.4f} | {row.ndcg:.4f} | "
                          f"{total:.1f} |", flush=True)
                ranker_z = standardised(scores)
                with_ease = [(weight, c, *split.score(ease_z + weight * rating_z + c * ranker_z))
                             for weight in EASE_RATING for c in EASE_RANKER]
                weight, c, recall, ndcg = max(with_ease, key=lambda row: row[3])
                print(f"| EASE (lambda {strength}) + a x rating + c x ranker {label}, "
                      f"standardised, best a {weight:g} c {c:g} | {recall:.4f} | {ndcg:.4f} | "
                      f"{seconds + rating_seconds + ease_seconds:.1f} |", flush=True)
                plain = table[table.beta == 0].sort_values("ndcg").iloc[-1]
                best = table.sort_values("ndcg").iloc[-1]
                print(f"| ranker {label} + rating, best w {plain.w:g} | {plain.recall:.4f} | "
                      f"{plain.ndcg:.4f} | {seconds + rating_seconds:.1f} |")
                print(f"| ranker {label} + rating + item-item, best w {best.w:g} beta "
                      f"{best.beta:g} | {best.recall:.4f} | {best.ndcg:.4f} | "
                      f"{seconds + rating_seconds:.1f} |")
                curve = "; ".join(
                    f"w {w:g}: " + ", ".join(
                        f"{v:.4f}" for v in table[(table.w == w)].sort_values("beta").ndcg)
                    for w in WEIGHTS)
                print(f"<!-- {label}: NDCG by w, then beta {BETAS}: {curve} -->", flush=True)


if __name__ == "__main__":
    main()
