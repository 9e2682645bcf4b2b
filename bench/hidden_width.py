"""The Adult classifier's hidden widths against prediction speed (issue 17).

The second hidden layer's product is about a third of a prediction pass and already
runs at the core's peak, so batch prediction speed is set by the network's width. For
each width: test accuracy and AUC (seeds 0-2, default fit otherwise), then batch
prediction from a DataFrame and from Parquet to Parquet on the ~1M-row copy of the
test set that bench/speed.py uses, widths alternating, median of 3 calls per round.

Run: ``OMP_NUM_THREADS=1 python bench/hidden_width.py`` (prints a markdown table).
Validation evidence for the widths: ``python bench/tune_defaults.py adult - round5``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import machine
from sklearn.metrics import accuracy_score, roc_auc_score

from tabembed.datasets import load_adult
from tabembed.estimators import EmbeddingMLPClassifier

WIDTHS = [(200, 100), (200, 64)]
SEEDS = (0, 1, 2)
ROUNDS = 3


def main() -> None:
    torch.set_num_threads(1)
    print(f"# Hidden widths and prediction speed ({machine()})\n")
    train, test = load_adult()
    X, y = train.drop(columns="income"), train["income"]
    X_test, positive = test.drop(columns="income"), np.asarray(test["income"] == ">50K")
    big = pd.concat([X_test] * 62, ignore_index=True)
    scores, models = {}, {}
    for hidden in WIDTHS:
        rows = []
        for seed in SEEDS:
            model = EmbeddingMLPClassifier(random_state=seed, hidden=hidden).fit(X, y)
            p = model.predict_proba(X_test)[:, list(model.classes_).index(">50K")]
            rows.append((accuracy_score(positive, p > 0.5), roc_auc_score(positive, p)))
        scores[hidden], models[hidden] = np.mean(rows, axis=0), model
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "adult-big.parquet"
        big.to_parquet(source, row_group_size=1 << 16)
        speeds = {hidden: ([], []) for hidden in WIDTHS}
        for model in models.values():      # warm-up at full size
            model.predict_proba(big)
            model.predict_to_parquet(source, Path(folder) / "p.parquet", progress=False)
        for _ in range(ROUNDS):
            for hidden, model in models.items():
                frame, parquet = [], []
                for _ in range(3):
                    start = time.perf_counter()
                    model.predict_proba(big)
                    frame.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    model.predict_to_parquet(source, Path(folder) / "p.parquet", progress=False)
                    parquet.append(time.perf_counter() - start)
                speeds[hidden][0].append(len(big) / statistics.median(frame))
                speeds[hidden][1].append(len(big) / statistics.median(parquet))
    print("| hidden | test accuracy (AUC), seeds 0-2 | DataFrame rows/s, per round "
          "| Parquet to Parquet rows/s, per round |")
    print("| --- | --- | --- | --- |")
    for hidden in WIDTHS:
        accuracy, auc = scores[hidden]
        frame, parquet = speeds[hidden]
        print(f"| {hidden} | {accuracy:.4f} ({auc:.4f}) | "
              f"{', '.join(f'{v / 1e6:.2f}M' for v in frame)} | "
              f"{', '.join(f'{v / 1e6:.2f}M' for v in parquet)} |")


if __name__ == "__main__":
    main()
