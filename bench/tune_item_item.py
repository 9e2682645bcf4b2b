"""Validation evidence for the item-item ranking's defaults (issue 32).

On the validation splits of bench/tune_hybrid.py (the training part of each test
split, split again the same way; the test part never read):

- ``--grid dropout``: the blend ``z(EASE) + a x z(rating)`` for EASE's lambda,
  the rating weight ``a``, and a popularity-scaled L2 term (EDLAE, Steck 2020:
  each item's penalty ``lambda + p / (1 - p) x`` its count, the closed form of
  dropout with probability ``p`` in EASE's training), against EASE alone;
- ``--grid liked``: which rows the item-item part learns from: every rating
  (``all``), the liked ones (``liked``: from three quarters up the rating
  scale, 4 and 5 stars of 1-5, 4-5 of 0.5-5; for the Gram
  matrix and the users' rows), the liked weights applied to every row, and
  ``all + liked`` (both standardised and added: the default), each alone and
  plus ``a x z(rating)``.

    OMP_NUM_THREADS=1 python bench/tune_item_item.py DATA_HOME --data 100k --grid liked
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
import torch
from common import machine
from tune_hybrid import Split, grid, splits, standardised

from tabembed.datasets import load_movielens
from tabembed.recommenders import EmbeddingRecommender
from tabembed.recommenders.hybrid import liked_threshold
from tabembed.recommenders.item_item import ease_weights

LAMBDAS = (200.0, 400.0, 800.0)
DROPOUTS = (0.0, 0.1, 0.25, 0.5)
RATING_WEIGHTS = (0.5, 1.0, 1.5, 2.0)
LIKED_LAMBDAS = (200.0, 400.0)
LIKED_RATING_WEIGHTS = (0.5, 1.0, 1.5)


def liked_grid(split: Split, inner: pd.DataFrame, rating_z: np.ndarray) -> None:
    """The ``--grid liked`` table of one validation split."""
    print("| lambda | rows | alone recall / NDCG | + a x rating, recall / NDCG for a "
          f"{LIKED_RATING_WEIGHTS} |")
    print("| --- | --- | --- | --- |")
    users = pd.Index(inner["user"].unique())
    liked = inner[inner["rating"] >= liked_threshold((inner["rating"].min(),
                                                      inner["rating"].max()))]
    history, liked_history = split.matrix(inner, users), split.matrix(liked, users)
    liked_rows = split.matrix(liked)
    for strength in LIKED_LAMBDAS:
        every = standardised(np.asarray(split.seen @ ease_weights(history, strength),
                                        dtype=np.float64))
        weights = ease_weights(liked_history, strength)
        variants = {
            "all": every,
            "liked": standardised(np.asarray(liked_rows @ weights, dtype=np.float64)),
            "liked weights, every row": standardised(np.asarray(split.seen @ weights,
                                                                dtype=np.float64)),
        }
        variants["all + liked"] = every + variants["liked"]
        for label, scores in variants.items():
            alone = split.score(scores)
            blends = "; ".join("{:.4f} / {:.4f}".format(*split.score(scores + a * rating_z))
                               for a in LIKED_RATING_WEIGHTS)
            print(f"| {strength:g} | {label} | {alone[0]:.4f} / {alone[1]:.4f} | {blends} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_home", nargs="?", default="../shared/datasets")
    parser.add_argument("--data", default="100k,latest-small")
    parser.add_argument("--grid", default="liked", choices=("liked", "dropout"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# Item-item ranking: validation evidence ({machine()})\n")
    print(f"Command: `{' '.join(['OMP_NUM_THREADS=1', 'python', *sys.argv])}`\n")
    for name in args.data.split(","):
        ratings = load_movielens(name, data_home=args.data_home)
        for split_name, (inner, valid) in splits(ratings).items():
            split = Split(inner, valid)
            print(f"\n### ml-{name}, {split_name}, validation ({len(inner)} rows, "
                  f"{len(split.users)} users)\n")
            rating_model = EmbeddingRecommender(ranking="rating", ranking_shrinkage=0,
                                                min_support=0, random_state=0)
            rating_model.fit(inner[["user", "item"]], inner["rating"])
            rating_z = standardised(grid(rating_model, split))
            if args.grid == "liked":
                liked_grid(split, inner, rating_z)
                continue
            print("| lambda | p | EASE alone recall / NDCG | + a x rating, NDCG by a "
                  f"{RATING_WEIGHTS} | best a: recall / NDCG | inversion CPU s |")
            print("| --- | --- | --- | --- | --- | --- |")
            history = split.matrix(inner, pd.Index(inner["user"].unique()))
            for strength in LAMBDAS:
                for dropout in DROPOUTS:
                    start = time.process_time()
                    weights = ease_weights(history, strength, dropout=dropout)
                    seconds = time.process_time() - start
                    ease_z = standardised(np.asarray(split.seen @ weights, dtype=np.float64))
                    alone = split.score(ease_z)
                    blends = [split.score(ease_z + a * rating_z) for a in RATING_WEIGHTS]
                    best = int(np.argmax([b[1] for b in blends]))
                    by_a = ", ".join(f"{b[1]:.4f}" for b in blends)
                    print(f"| {strength:g} | {dropout:g} | {alone[0]:.4f} / {alone[1]:.4f} | "
                          f"{by_a} | {RATING_WEIGHTS[best]:g}: {blends[best][0]:.4f} / "
                          f"{blends[best][1]:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
