"""Plain training vs EMA, SWA, snapshot ensembles and FGE at the same epoch budget.

Adult: test accuracy, AUC and log loss; MovieLens 100K: RMSE, mean over folds
u1..u5. 3 seeds each, mean and standard deviation. Every method uses the
estimators' defaults (chosen on validation splits, bench/tune_defaults.py)
and the same number of epochs; only the schedule/averaging differs.
Run: ``python bench/averaging.py [data_home]`` (data_home holds ml-100k/).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fold_rmse, machine

from tabembed.datasets import load_adult, load_movielens
from tabembed.estimators import EmbeddingMLPClassifier

SEEDS = (0, 1, 2)
EPOCHS = 8
METHODS = {
    "plain (one-cycle)": {"averaging": None},
    "EMA": {"averaging": "ema"},
    "SWA (constant rate, last 25%)": {"averaging": "swa"},
    "snapshot (SGDR 4 x 2 epochs)": {"averaging": "snapshot", "schedule": "sgdr",
                                     "cycle_len": 2, "cycle_mult": 1},
    "FGE (last 2 x 2-epoch cycles)": {"averaging": "fge"},
}


def adult() -> None:
    train, test = load_adult()
    X, y = train.drop(columns="income"), train["income"]
    Xt, positive = test.drop(columns="income"), np.asarray(test["income"] == ">50K")
    print("\n### Adult (test split), 8 epochs\n")
    print("| method | accuracy | AUC | log loss | fit s |")
    print("| --- | --- | --- | --- | --- |")
    for name, options in METHODS.items():
        rows = []
        for seed in SEEDS:
            start = time.perf_counter()
            model = EmbeddingMLPClassifier(epochs=EPOCHS, random_state=seed, **options).fit(X, y)
            seconds = time.perf_counter() - start
            p = model.predict_proba(Xt)[:, 1]
            rows.append((accuracy_score(positive, p > 0.5), roc_auc_score(positive, p),
                         log_loss(positive, p), seconds))
        mean, std = np.mean(rows, axis=0), np.std(rows, axis=0)
        print(f"| {name} | {mean[0]:.4f} ± {std[0]:.4f} | {mean[1]:.4f} ± {std[1]:.4f} | "
              f"{mean[2]:.4f} ± {std[2]:.4f} | {mean[3]:.1f} |", flush=True)


def movielens(data_home) -> None:
    folds = [load_movielens("100k", data_home=data_home, fold=f"u{i}") for i in range(1, 6)]
    print(f"\n### MovieLens 100K, mean RMSE over u1..u5, {EPOCHS} epochs\n")
    print("| method | RMSE | fit s per fold |")
    print("| --- | --- | --- |")
    for name, options in METHODS.items():
        per_seed, seconds = [], []
        for seed in SEEDS:
            rmse, fits = fold_rmse(folds, epochs=EPOCHS, random_state=seed, **options)
            per_seed.append(rmse)
            seconds += fits
        print(f"| {name} | {np.mean(per_seed):.4f} ± {np.std(per_seed):.4f} | "
              f"{np.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    print(f"# Weight averaging ({machine()})")
    adult()
    movielens(sys.argv[1] if len(sys.argv) > 1 else None)
