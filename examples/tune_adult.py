"""Tuning the classifier on Adult with Optuna: TPE trials, pruning, a time budget.

tabembed.tuning.tune searches the default space (written from the benchmarks'
evidence), scores each trial on a 20% holdout of the training rows, prunes
trials whose validation loss trails the median, and refits the best on all
training rows. The test split only reports. Needs `pip install 'tabembed[tuning]'`.
Run: python examples/tune_adult.py   (TABEMBED_FAST=1 for a quick smoke run)
"""

import os
import time

import optuna

from tabembed import EmbeddingMLPClassifier
from tabembed.datasets import load_adult
from tabembed.tuning import tune

FAST = os.environ.get("TABEMBED_FAST") == "1"

# %% Load the data; the test split is never seen by the search.
train, test = load_adult()
if FAST:
    train, test = train.sample(3000, random_state=0), test.sample(2000, random_state=0)
X_train, y_train = train.drop(columns="income"), train["income"]
X_test, y_test = test.drop(columns="income"), test["income"]

# %% The defaults, for comparison.
default = EmbeddingMLPClassifier(random_state=0).fit(X_train, y_train)
print(f"defaults : test accuracy {default.score(X_test, y_test):.4f}")

# %% The search: at most 30 trials or 10 minutes (TabM's authors suggest 30-50 TPE trials).
start = time.perf_counter()
best, study = tune(EmbeddingMLPClassifier(random_state=0), X_train, y_train,
                   n_trials=3 if FAST else 30, timeout=60 if FAST else 600, random_state=0)
states = [trial.state for trial in study.trials]
print(f"search   : {len(states)} trials "
      f"({states.count(optuna.trial.TrialState.PRUNED)} pruned) "
      f"in {time.perf_counter() - start:.0f} s; best holdout accuracy {study.best_value:.4f}")
print(f"best parameters: {study.best_params}")
print(f"tuned    : test accuracy {best.score(X_test, y_test):.4f}")

# %% Every trial: its parameters, holdout accuracy and state.
columns = ["number", "value", "state", *[c for c in study.trials_dataframe().columns
                                         if c.startswith("params_")]]
print(study.trials_dataframe()[columns].to_string(index=False))
