"""Wrote this folder with tabembed at commit b813993 (bags padded per row to the longest):
``python tests/data/padded_bags/make.py tests/data/padded_bags``. test_recommender loads the
files with the current code (bag ids into flat tables) and compares the outputs."""
import sys

import numpy as np
import pandas as pd

from tabembed import EmbeddingRecommender

out = sys.argv[1]
rng = np.random.default_rng(0)
genres = ["a|x", "b|x", "a|b|c", "c", None, "b"]
items = rng.integers(0, 12, 120)
X = pd.DataFrame({"user": rng.integers(0, 20, 120), "item": items,
                  "genres": [genres[i % 6] for i in items]})
y = rng.integers(1, 6, 120).astype(float)
X.assign(rating=y).to_csv(f"{out}/ratings.csv", index=False)
for model in ("dot", "neural"):
    rec = EmbeddingRecommender(model=model, n_factors=4, epochs=2, random_state=0,
                               ranking="hybrid" if model == "dot" else "rating").fit(X, y)
    rec.save(f"{out}/{model}.tabembed")
    new = pd.DataFrame({"user": [0, 1, 2, 99, 3], "item": [0, 1, 99, 2, 98],
                        "genres": ["a|x", None, "b|c", "x", "zz|a"]})
    np.save(f"{out}/{model}_predict.npy", rec.predict(new))
    np.save(f"{out}/{model}_recommend.npy", rec.recommend([0, 1, 2], k=3)["score"].to_numpy())
    print(model, rec.model_kwargs_["bags"])
