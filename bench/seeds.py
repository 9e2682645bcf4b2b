"""Adult test accuracy and AUC of the default classifier over several seeds.

Run: ``python bench/seeds.py [N_SEEDS]`` (default 5). Used to compare two
versions of the library (before/after a change) beyond one seed's noise.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from tabembed.datasets import load_adult
from tabembed.estimators import EmbeddingMLPClassifier


def main(n_seeds: int = 5) -> None:
    torch.set_num_threads(1)
    train, test = load_adult()
    X, y = train.drop(columns="income"), train["income"]
    X_test, y_test = test.drop(columns="income"), test["income"]
    print("| seed | accuracy | AUC | lr | fit s |\n| --- | --- | --- | --- | --- |")
    scores = []
    for seed in range(n_seeds):
        started = time.perf_counter()
        model = EmbeddingMLPClassifier(random_state=seed).fit(X, y)
        seconds = time.perf_counter() - started
        accuracy = accuracy_score(y_test.astype(object), model.predict(X_test))
        auc = roc_auc_score(y_test == ">50K", model.predict_proba(X_test)[:, 1])
        scores.append((accuracy, auc))
        print(f"| {seed} | {accuracy:.4f} | {auc:.4f} | {float(np.max(model.lr_)):.2e} | "
              f"{seconds:.1f} |", flush=True)
    accuracy, auc = np.mean(scores, axis=0)
    print(f"| mean | {accuracy:.4f} | {auc:.4f} | | |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
