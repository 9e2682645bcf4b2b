"""Validation evidence for the MLP's default number of epochs (issue 17: a shorter fit).

Fits the estimators as shipped, changing ``epochs`` only, on validation splits
(20% of each training part, as bench/accuracy.py; the test parts are never
read). Run: ``python bench/epochs.py [EPOCHS ...]`` in .venv-bench (diamonds
and Caravan need ``pip install --no-deps plotnine==0.15.9 ISLP==0.6.0``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import load_dataset, validation_split

from tabembed import EmbeddingMLPClassifier, EmbeddingMLPRegressor


def main(epochs_grid=(8, 5), seeds=(0, 1, 2)) -> None:
    torch.set_num_threads(1)
    print("| dataset | epochs | accuracy or RMSE | AUC or - | log loss or - | fit s (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("adult", "diamonds", "caravan"):
        X, y, _, _, task = load_dataset(name)
        X_fit, y_fit, X_valid, y_valid = validation_split(X, y, task)
        for epochs in epochs_grid:
            rows, seconds = [], []
            for seed in seeds:
                cls = EmbeddingMLPRegressor if task == "regression" else EmbeddingMLPClassifier
                start = time.perf_counter()
                model = cls(epochs=epochs, random_state=seed).fit(X_fit, y_fit)
                seconds.append(time.perf_counter() - start)
                if task == "regression":
                    error = model.predict(X_valid) - np.asarray(y_valid)
                    rows.append((float(np.sqrt(np.mean(error ** 2))), np.nan, np.nan))
                else:
                    probability = model.predict_proba(X_valid)
                    rows.append((accuracy_score(y_valid, model.predict(X_valid)),
                                 roc_auc_score(y_valid, probability[:, 1]),
                                 log_loss(y_valid, probability, labels=model.classes_)))
            mean, spread = np.mean(rows, axis=0), np.std(rows, axis=0)
            cells = [f"{m:.4f} ± {s:.4f}" if np.isfinite(m) else "-" for m, s in zip(mean, spread)]
            print(f"| {name} | {epochs} | {' | '.join(cells)} | {np.median(seconds):.1f} |",
                  flush=True)


if __name__ == "__main__":
    main(tuple(int(e) for e in sys.argv[1:]) or (8, 5))
