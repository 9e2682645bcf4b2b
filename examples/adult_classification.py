"""Adult income classification with tabembed: LR finder, SGDR, SWA, plots.

Run: python examples/adult_classification.py   (TABEMBED_FAST=1 for a quick smoke run)
"""

import os
import time
from pathlib import Path

from sklearn.metrics import accuracy_score, roc_auc_score

from tabembed import SGDR, SWA, EmbeddingMLPClassifier
from tabembed.datasets import load_adult

FAST = os.environ.get("TABEMBED_FAST") == "1"
OUTPUT = Path(os.environ.get("TABEMBED_OUTPUT", "example_output"))

# %% Load the data: pandas frames with categorical and numeric columns.
train, test = load_adult()
if FAST:
    train, test = train.sample(3000, random_state=0), test.sample(2000, random_state=0)
X_train, y_train = train.drop(columns="income"), train["income"]
X_test, y_test = test.drop(columns="income"), test["income"]

# %% 1. The defaults: LR finder (loss minimum / 10) and one-cycle.
default = EmbeddingMLPClassifier(random_state=0, epochs=2 if FAST else 8)
start = time.perf_counter()
default.fit(X_train, y_train)
accuracy = accuracy_score(y_test.astype(object), default.predict(X_test))
print(f"defaults      : accuracy {accuracy:.4f}"
      f"  AUC {roc_auc_score(y_test == '>50K', default.predict_proba(X_test)[:, 1]):.4f}"
      f"  ({time.perf_counter() - start:.1f} s, lr {default.lr_:.1e})")
OUTPUT.mkdir(exist_ok=True)
default.lr_finder_.plot(OUTPUT / "adult_lr_finder.png")

# %% 2. SGDR (cosine with warm restarts, cycles of 1, 2, 4 epochs) and SWA at the low points.
sgdr_swa = EmbeddingMLPClassifier(
    schedule=SGDR(cycle_len=1, cycle_mult=2), epochs=3 if FAST else 7,
    averaging=SWA(start=0.0), random_state=0,
)
sgdr_swa.fit(X_train, y_train)
probabilities = sgdr_swa.predict_proba(X_test)[:, 1]
accuracy = accuracy_score(y_test.astype(object), sgdr_swa.predict(X_test))
print(f"SGDR + SWA    : accuracy {accuracy:.4f}"
      f"  AUC {roc_auc_score(y_test == '>50K', probabilities):.4f}")

# %% 3. Snapshot ensemble: one model per SGDR cycle, predictions averaged.
snapshots = EmbeddingMLPClassifier(schedule=SGDR(cycle_len=1, cycle_mult=2),
                                   epochs=3 if FAST else 7, averaging="snapshot", random_state=0)
snapshots.fit(X_train, y_train)
accuracy = accuracy_score(y_test.astype(object), snapshots.predict(X_test))
print(f"snapshots     : accuracy {accuracy:.4f}"
      f"  ({len(snapshots.learner_.predictor.snapshots)} snapshots)")

# %% Plots: training curves of the SGDR run, and the schedule it followed.
sgdr_swa.learner_.history.plot(OUTPUT / "adult_sgdr_history.png")
sgdr_swa.learner_.schedule.plot(epochs=7, steps_per_epoch=sgdr_swa.learner_.steps_per_epoch,
                                lr=sgdr_swa.lr_, path=OUTPUT / "adult_sgdr_schedule.png")
print(f"plots in {OUTPUT}/")
