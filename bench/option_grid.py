"""Validation evidence for one estimator option (issue 17: defaults that fit faster).

Fits the estimators as shipped, changing one constructor parameter only, on
validation splits (20% of each training part, as bench/accuracy.py; the test
parts are never read), and prints one Markdown row per dataset and value.
Run in .venv-bench (diamonds and the ISLP datasets need
``pip install --no-deps plotnine==0.15.9 ISLP==0.6.0``)::

    python bench/option_grid.py epochs 8 5
    python bench/option_grid.py n_frequencies 48 32 --datasets adult,diamonds,bikeshare
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import load_dataset, validation_split

from tabembed import EmbeddingMLPClassifier, EmbeddingMLPRegressor

DATASETS = ("adult", "diamonds", "caravan", "bikeshare", "default", "wage")


def value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(parameter: str, values, datasets=DATASETS, seeds=(0, 1, 2)) -> None:
    torch.set_num_threads(1)
    print(f"| dataset | {parameter} | accuracy or RMSE | AUC or - | log loss or - "
          "| fit s (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in datasets:
        X, y, _, _, task = load_dataset(name)
        X_fit, y_fit, X_valid, y_valid = validation_split(X, y, task)
        for setting in values:
            rows, seconds = [], []
            for seed in seeds:
                cls = EmbeddingMLPRegressor if task == "regression" else EmbeddingMLPClassifier
                start = time.perf_counter()
                model = cls(**{parameter: setting}, random_state=seed).fit(X_fit, y_fit)
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
            print(f"| {name} | {setting} | {' | '.join(cells)} | {np.median(seconds):.2f} |",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parameter")
    parser.add_argument("values", nargs="+", type=value)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.parameter, arguments.values, arguments.datasets.split(","),
         tuple(range(arguments.seeds)))
