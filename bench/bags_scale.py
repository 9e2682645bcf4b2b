"""Multi-valued features at scale: one item with a huge bag of tags (issue 31, item 6).

Run: ``OMP_NUM_THREADS=1 python bench/bags_scale.py big [--tags 20000 --ratings 3000]``
and ``python bench/bags_scale.py genres --save DIR`` / ``--compare DIR``.

``big``: synthetic ratings, 3,000 of 100 ordinary items (1-3 tags each from 50)
plus ``--ratings`` of one item carrying ``--tags`` distinct tags, fitted by
``EmbeddingRecommender(ranking="rating", epochs=3)``; the fit runs in a child
process, so its wall time and peak RSS (``ru_maxrss``, imports included) are its
own. Also printed: the size of the encoded training rows and of the bag tables.

``genres``: ml-latest-small with each movie's genres as a bag, a seeded 80/20
split of the ratings; ``--save DIR`` fits, writes the test predictions and the
model file, ``--compare DIR`` fits again with this checkout, loads the saved
model and prints the largest differences: a refit against the saved
predictions, and the saved file loaded by this checkout against them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "ml-latest-small"


def big_frame(tags: int, ratings: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_other = 3_000
    items = rng.integers(0, 100, n_other)
    vocabulary = np.array([f"t{i}" for i in range(50)], dtype=object)
    item_tags = ["|".join(rng.choice(vocabulary, rng.integers(1, 4), replace=False))
                 for _ in range(100)]
    big_tags = "|".join(f"tag{i}" for i in range(tags))
    frame = pd.DataFrame({
        "user": np.concatenate([rng.integers(0, 2_000, n_other),
                                rng.integers(0, 2_000, ratings)]),
        "item": np.concatenate([items, np.full(ratings, 100)]),
        "tags": [item_tags[i] for i in items] + [big_tags] * ratings,
    })
    return frame, rng.integers(1, 6, len(frame)).astype(float)


def run_big(tags: int, ratings: int) -> dict:
    import torch

    from tabembed import EmbeddingRecommender

    torch.set_num_threads(1)
    frame, y = big_frame(tags, ratings)
    before_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model = EmbeddingRecommender(ranking="rating", epochs=3, random_state=0).fit(frame, y)
    seconds = time.perf_counter() - start
    predictions = model.predict(frame.iloc[-5:])
    sizes = {}
    table = getattr(model.bags_, "table", None)
    if table is not None:       # the flat bag tables (tokens + offsets)
        tokens, offsets = table("tags")
        sizes["bag table elements"] = int(tokens.numel() + offsets.numel())
    from tabembed.recommenders.interaction_data import encode

    codes, _ = encode(model.preprocessor_, model.bags_, model.bags_.canonical(frame))
    sizes["training codes elements"] = int(codes.numel())
    return {"fit_s": seconds, "rss_before_fit_mb": before_fit, "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "prediction": float(predictions[0]), **sizes}


def genres_split():
    ratings = pd.read_csv(DATA / "ratings.csv")
    movies = pd.read_csv(DATA / "movies.csv")
    frame = ratings.merge(movies[["movieId", "genres"]], on="movieId")
    frame["genres"] = frame["genres"].replace("(no genres listed)", None)
    test = np.random.default_rng(0).random(len(frame)) < 0.2
    X = frame[["userId", "movieId", "genres"]]
    return X[~test], frame["rating"][~test].to_numpy(), X[test]


def fit_genres():
    import torch

    from tabembed import EmbeddingRecommender

    torch.set_num_threads(1)
    X, y, X_test = genres_split()
    model = EmbeddingRecommender(user_column="userId", item_column="movieId",
                                 ranking="rating", epochs=4, random_state=0).fit(X, y)
    return model, X_test


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["big", "big-child", "genres"])
    parser.add_argument("--tags", type=int, default=20_000)
    parser.add_argument("--ratings", type=int, default=3_000)
    parser.add_argument("--save")
    parser.add_argument("--compare")
    args = parser.parse_args()
    if args.case == "big-child":
        print(json.dumps(run_big(args.tags, args.ratings)))
    elif args.case == "big":
        done = subprocess.run([sys.executable, __file__, "big-child", "--tags", str(args.tags),
                               "--ratings", str(args.ratings)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        result = json.loads(done.stdout.splitlines()[-1])
        print(f"| {args.tags} tags x {args.ratings} ratings | {result['fit_s']:.1f} s | "
              f"{result['peak_rss_mb']:.0f} MB ({result['rss_before_fit_mb']:.0f} MB before "
              f"the fit) | {result.get('training codes elements')} |")
    else:
        import tabembed

        start = time.perf_counter()
        model, X_test = fit_genres()
        print(f"fit (data preparation included): {time.perf_counter() - start:.1f} s")
        predictions = model.predict(X_test)
        if args.save:
            folder = Path(args.save)
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "predictions.npy", predictions)
            model.save(folder / "genres.tabembed")
            print(f"saved {len(predictions)} predictions and the model in {folder}")
        if args.compare:
            folder = Path(args.compare)
            saved = np.load(folder / "predictions.npy")
            loaded = tabembed.load(folder / "genres.tabembed").predict(X_test)
            print(f"refit vs saved: max |difference| {np.abs(predictions - saved).max():.3g}; "
                  f"saved file loaded here vs saved: {np.abs(loaded - saved).max():.3g} "
                  f"({len(saved)} test ratings)")


if __name__ == "__main__":
    main()
