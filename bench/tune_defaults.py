"""Choose defaults on validation splits (never the test split).

Adult: 20% of the training file, stratified, seed 0, held out for validation.
Each round names the base it was measured around (``bases`` in ``main``).
MovieLens 100K: 10% of fold u1's training ratings, seed 0, held out.
One factor at a time around a base configuration, 2 seeds each (round8: 6; round9: 12).
Run: ``python bench/tune_defaults.py adult|movielens DATA_HOME [round2]``; prints a
markdown table (DATA_HOME holds ml-100k/; any value for adult).
``python bench/tune_defaults.py movielens-folds DATA_HOME`` checks round 9's candidates
on the test sets of u1..u5 (4 seeds), once chosen on validation.
``python bench/tune_defaults.py widths`` runs the fifth Adult round's widths on the other
datasets of bench/accuracy.py (6 seeds; needs its plotnine and ISLP data files).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from common import fold_rmse
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

from tabembed.datasets import load_adult, load_movielens
from tabembed.estimators import EmbeddingMLPClassifier
from tabembed.recommenders import EmbeddingRecommender

SEEDS = (0, 1)


def adult_split():
    train, _ = load_adult()
    fit, valid = train_test_split(train, test_size=0.2, random_state=0,
                                  stratify=train["income"])
    return (fit.drop(columns="income"), fit["income"], valid.drop(columns="income"),
            valid["income"])


def evaluate_adult(options, split, seeds=SEEDS):
    X, y, Xv, yv = split
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        model = EmbeddingMLPClassifier(random_state=seed, **options).fit(X, y)
        seconds = time.perf_counter() - start
        p = model.predict_proba(Xv)[:, 1]
        positive = np.asarray(yv == ">50K")
        rows.append((accuracy_score(positive, p > 0.5), roc_auc_score(positive, p),
                     log_loss(positive, p), seconds))
    return np.mean(rows, axis=0)


ADULT_GRID = [
    {},
    {"dropout": 0.0}, {"dropout": 0.3}, {"dropout": 0.5},
    {"embedding_dropout": 0.1},
    {"weight_decay": 0.1}, {"weight_decay": 0.0},
    {"epochs": 5}, {"epochs": 12},
    {"batch_size": 128}, {"batch_size": 512},
    {"lr": "steepest"}, {"lr": "minimum"}, {"lr": 1e-2},
    {"hidden": (400, 200)},
    {"averaging": "ema"}, {"averaging": "swa"},
]


ADULT_ROUND_2 = [
    {"continuous_scaling": "quantile"},
    {"batch_size": 512, "lr": "minimum"},
    {"batch_size": 512, "lr": "minimum", "dropout": 0.3},
    {"batch_size": 512, "lr": "minimum", "dropout": 0.3, "embedding_dropout": 0.1},
    {"batch_size": 512, "lr": "minimum", "dropout": 0.3, "epochs": 12},
    {"batch_size": 512, "lr": "minimum", "dropout": 0.3, "averaging": "ema"},
    {"batch_size": 512, "lr": "minimum", "dropout": 0.3, "averaging": "ema", "epochs": 12},
    {"batch_size": 1024, "lr": "minimum", "dropout": 0.3, "epochs": 12},
]


PLE = {"continuous_encoding": "piecewise_linear"}
ADULT_ROUND_3 = [
    PLE,
    {**PLE, "n_bins": 16}, {**PLE, "n_bins": 96},
    {**PLE, "batch_size": 512, "lr": "minimum"},
    {**PLE, "dropout": 0.3},
    {**PLE, "weight_decay": 0.1},
    {**PLE, "embedding_dropout": 0.1},
    {**PLE, "epochs": 5},
    {**PLE, "epochs": 12},
    {**PLE, "averaging": "ema"},
    {**PLE, "averaging": "ema", "epochs": 12},
    {**PLE, "averaging": "swa", "epochs": 12},
]


# At the final defaults (piecewise-linear inputs, automatic batch size, "minimum" rate).
ADULT_ROUND_4 = [
    {}, {"dropout": 0.0}, {"dropout": 0.3}, {"dropout": 0.5},
    {"averaging": "ema"}, {"averaging": "swa"}, {"averaging": "fge"},
    {"averaging": "snapshot", "schedule": "sgdr", "cycle_len": 2, "cycle_mult": 1},
]


# Narrower hidden layers, for prediction speed (issue 17: the second layer's product is
# most of a prediction pass), at the shipped defaults; 12 seeds.
ADULT_ROUND_5 = [
    {}, {"hidden": (200, 64)}, {"hidden": (200, 50)}, {"hidden": (256, 64)},
    {"hidden": (128, 64)}, {"hidden": (160, 80)},
]


def movielens_split(data_home):
    train, _ = load_movielens("100k", data_home=data_home, fold="u1")
    held = np.random.default_rng(0).random(len(train)) < 0.1
    return train[~held], train[held]


MOVIELENS_ROUND_2 = [
    {"weight_decay": 0.5, "batch_size": 1024},
    {"weight_decay": 0.5, "lr": 2e-3},
    {"weight_decay": 1.0},
    {"weight_decay": 1.0, "batch_size": 1024},
    {"weight_decay": 0.5, "batch_size": 1024, "lr": 1e-2},
    {"weight_decay": 0.5, "batch_size": 1024, "epochs": 10},
    {"weight_decay": 0.3, "batch_size": 1024, "n_factors": 20},
    {"lr": 2e-3, "batch_size": 1024},
    {"weight_decay": 0.5, "batch_size": 1024, "averaging": "ema"},
    {"weight_decay": 0.5, "batch_size": 1024, "averaging": "swa"},
    {"weight_decay": 0.5, "batch_size": 1024, "model": "neural", "dropout": 0.3},
]


BIG = {"weight_decay": 0.5, "batch_size": 1024}
MOVIELENS_ROUND_3 = [
    {**BIG, "weight_decay": 0.7},
    {**BIG, "lr": 3e-3},
    {**BIG, "epochs": 8, "weight_decay": 0.7},
    {**BIG, "n_factors": 100},
    {**BIG, "batch_size": 2048, "lr": 1e-2},
    {**BIG, "schedule": "sgdr", "cycle_len": 1, "cycle_mult": 2, "epochs": 7,
     "averaging": "snapshot"},
    {**BIG, "averaging": "fge", "epochs": 8},
    {**BIG, "model": "neural", "dropout": 0.5},
]


# Batch-only L2 on the embeddings (embedding_l2) instead of decoupled decay.
MOVIELENS_ROUND_4 = [
    {"embedding_l2": 0.0, "weight_decay": 0.5, "batch_size": 1024},
    {"embedding_l2": 0.05, "weight_decay": 0.0, "batch_size": 1024},
    {"embedding_l2": 0.03, "weight_decay": 0.0, "batch_size": 1024},
    {"embedding_l2": 0.02, "weight_decay": 0.1, "batch_size": 1024},
    {"embedding_l2": 0.1, "weight_decay": 0.0, "batch_size": 1024, "epochs": 10},
    {"embedding_l2": 0.05, "weight_decay": 0.0, "batch_size": 512},
    {"embedding_l2": 0.1, "weight_decay": 0.0, "batch_size": 512},
    {"embedding_l2": 0.05, "weight_decay": 0.0, "batch_size": 256},
]


# Fewer, larger batches for the fit-time goal (issue 17), around the shipped defaults
# (batch 512, lr 5e-3, embedding_l2 0.05); the rating model alone (ranking="rating").
MOVIELENS_ROUND_5 = [
    {},
    {"batch_size": 1024, "lr": 7e-3},
    {"batch_size": 1024, "lr": 1e-2},
    {"batch_size": 2048, "lr": 1e-2},
    {"batch_size": 2048, "lr": 1.5e-2},
    {"batch_size": 2048, "lr": 2e-2},
    {"batch_size": 2048, "lr": 1.5e-2, "embedding_l2": 0.03},
    {"batch_size": 2048, "lr": 1.5e-2, "embedding_l2": 0.08},
    {"batch_size": 4096, "lr": 2e-2},
    {"batch_size": 4096, "lr": 3e-2},
]

# Round 5 showed larger batches need a lower rate and a stronger penalty.
MOVIELENS_ROUND_6 = [
    {"batch_size": 1024, "lr": 5e-3},
    {"batch_size": 1024, "lr": 5e-3, "embedding_l2": 0.08},
    {"batch_size": 2048, "lr": 7e-3, "embedding_l2": 0.08},
    {"batch_size": 2048, "lr": 1e-2, "embedding_l2": 0.08},
    {"batch_size": 2048, "lr": 1e-2, "embedding_l2": 0.12},
    {"batch_size": 2048, "lr": 7e-3, "embedding_l2": 0.12},
    {"batch_size": 2048, "lr": 5e-3, "embedding_l2": 0.05},
    {"batch_size": 4096, "lr": 1e-2, "embedding_l2": 0.12},
]

# Fewer epochs instead of larger batches (issue 17, fifth session): the step count at
# batch 512, each with the rate and penalty re-tuned around the defaults.
MOVIELENS_ROUND_7 = [
    {},
    {"epochs": 4},
    {"epochs": 4, "lr": 7e-3},
    {"epochs": 4, "lr": 7e-3, "embedding_l2": 0.07},
    {"epochs": 4, "lr": 1e-2, "embedding_l2": 0.07},
    {"epochs": 3},
    {"epochs": 3, "lr": 1e-2},
    {"epochs": 3, "lr": 1e-2, "embedding_l2": 0.07},
    {"epochs": 3, "lr": 1.5e-2, "embedding_l2": 0.1},
]

# Round 7's closest settings again over 6 seeds (mean ± sd), to tell them from noise.
MOVIELENS_ROUND_8 = [
    {},
    {"epochs": 4},
    {"epochs": 4, "embedding_l2": 0.04},
    {"epochs": 4, "lr": 4e-3},
    {"epochs": 4, "lr": 6e-3},
    {"epochs": 4, "embedding_l2": 0.06},
    {"epochs": 4, "lr": 4e-3, "embedding_l2": 0.04},
]

# Larger batches again, now with the other defaults settled (issue 17, eighth session):
# 12 seeds not used before, since single-seed differences here are ~0.002.
MOVIELENS_ROUND_9 = [
    {},
    {"batch_size": 768},
    {"batch_size": 896},
    {"batch_size": 1024},
    {"batch_size": 1024, "embedding_l2": 0.06},
    {"batch_size": 1024, "lr": 6e-3, "embedding_l2": 0.06},
    {"batch_size": 1024, "epochs": 6},
    {"batch_size": 768, "epochs": 4},
]
SEEDS_BY_ROUND = {"round8": tuple(range(6)), "round9": tuple(range(6, 18)),
                  "adult-round5": tuple(range(12))}
# Round 9's candidates on the canonical test sets (a check after choosing, not a search).
MOVIELENS_FOLD_CHECK = [{"batch_size": 512}, {"batch_size": 768}, {"batch_size": 896},
                        {"batch_size": 1024}, {"batch_size": 1024, "epochs": 6}]


def movielens_folds(data_home, seeds=(0, 1, 2, 3)) -> None:
    """Test RMSE, mean over u1..u5, of the rating model for each seed and candidate."""
    folds = {f"u{k}": load_movielens("100k", data_home=data_home, fold=f"u{k}")
             for k in range(1, 6)}
    print("| options | RMSE per seed (mean of u1..u5) | mean | fit s (median) |")
    print("| --- | --- | --- | --- |")
    for options in MOVIELENS_FOLD_CHECK:
        means, seconds = [], []
        for seed in seeds:
            rmse, fits = fold_rmse(folds.values(), ranking="rating", random_state=seed,
                                   **options)
            means.append(rmse)
            seconds += fits
        print(f"| {options} | {', '.join(f'{m:.4f}' for m in means)} | {np.mean(means):.4f} "
              f"| {np.median(seconds):.2f} |", flush=True)


def evaluate_movielens(options, split, seeds=SEEDS):
    fit, valid = split
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        model = EmbeddingRecommender(random_state=seed, **options)
        model.fit(fit[["user", "item"]], fit["rating"])
        seconds = time.perf_counter() - start
        error = model.predict(valid[["user", "item"]]) - valid["rating"].to_numpy()
        rows.append((np.sqrt(np.mean(error ** 2)), seconds))
    return np.mean(rows, axis=0), np.std([rmse for rmse, _ in rows])


MOVIELENS_GRID = [
    {},
    {"weight_decay": 0.05}, {"weight_decay": 0.2}, {"weight_decay": 0.5},
    {"epochs": 10}, {"epochs": 15},
    {"lr": 1e-2}, {"lr": 2e-3},
    {"batch_size": 64}, {"batch_size": 1024},
    {"n_factors": 20}, {"n_factors": 100},
    {"y_range": None},
    {"averaging": "ema"}, {"averaging": "swa"},
    {"model": "neural", "dropout": 0.0}, {"model": "neural", "dropout": 0.1},
    {"model": "neural", "dropout": 0.3}, {"model": "neural", "dropout": 0.5},
]


# The fifth Adult round's widths on the other datasets of bench/accuracy.py (validation
# splits as there), through the estimators: the width is every MLP's default.
WIDTH_DATASETS = ("diamonds", "bikeshare", "wage", "caravan", "default")
WIDTHS = [(200, 100), (200, 64)]


def widths(seeds=tuple(range(6))) -> None:
    from accuracy import load_dataset, validation_split

    from tabembed.estimators import EmbeddingMLPRegressor

    print("| dataset | hidden | valid RMSE, or accuracy / AUC / log loss | fit s |")
    print("| --- | --- | --- | --- |")
    for name in WIDTH_DATASETS:
        X, y, _, _, task = load_dataset(name)
        X_fit, y_fit, X_valid, y_valid = validation_split(X, y, task)
        for hidden in WIDTHS:
            rows = []
            for seed in seeds:
                start = time.perf_counter()
                if task == "regression":
                    model = EmbeddingMLPRegressor(random_state=seed, hidden=hidden)
                    model.fit(X_fit, y_fit)
                    error = model.predict(X_valid) - np.asarray(y_valid)
                    rows.append((np.sqrt(np.mean(error ** 2)), time.perf_counter() - start))
                    continue
                model = EmbeddingMLPClassifier(random_state=seed, hidden=hidden).fit(X_fit, y_fit)
                seconds = time.perf_counter() - start
                positive = np.asarray(y_valid) == model.classes_[1]
                p = model.predict_proba(X_valid)[:, 1]
                rows.append((accuracy_score(positive, p > 0.5), roc_auc_score(positive, p),
                             log_loss(positive, p), seconds))
            mean = np.mean(rows, axis=0)
            shown = " / ".join(f"{v:.4f}" for v in mean[:-1])
            print(f"| {name} | {hidden} | {shown} | {mean[-1]:.1f} |", flush=True)


def main() -> None:
    which = sys.argv[1]
    if which == "movielens-folds":
        movielens_folds(sys.argv[2])
        return
    if which == "widths":
        widths()
        return
    round_name = sys.argv[3] if len(sys.argv) > 3 else "round1"
    # Each round keeps the base it was measured on, so its table reproduces exactly.
    bases = {
        ("adult", "round1"): {"continuous_encoding": None, "batch_size": 256, "lr": "valley",
                              "averaging": None},
        ("adult", "round2"): {"continuous_encoding": None, "batch_size": 256, "lr": "valley",
                              "averaging": None},
        ("adult", "round3"): {"batch_size": 256, "lr": "valley", "averaging": None},
        ("adult", "round4"): {"averaging": None},
        ("movielens", "round1"): {"embedding_l2": 0.0, "weight_decay": 0.1, "batch_size": 256},
        ("movielens", "round2"): {"embedding_l2": 0.0, "weight_decay": 0.1, "batch_size": 256},
        ("movielens", "round3"): {"embedding_l2": 0.0, "weight_decay": 0.1, "batch_size": 256},
        ("movielens", "round5"): {"ranking": "rating", "batch_size": 512},
        ("movielens", "round6"): {"ranking": "rating", "batch_size": 512},
        ("movielens", "round7"): {"ranking": "rating", "batch_size": 512},
        ("movielens", "round8"): {"ranking": "rating", "batch_size": 512},
        ("movielens", "round9"): {"ranking": "rating", "batch_size": 512},
    }
    extra = bases.get((which, round_name), {})
    if which == "adult":
        split = adult_split()
        print("| change from base | valid accuracy | valid AUC | valid log loss | fit s |")
        print("| --- | --- | --- | --- | --- |")
        grid = {"round1": ADULT_GRID, "round2": ADULT_ROUND_2, "round3": ADULT_ROUND_3,
                "round4": ADULT_ROUND_4, "round5": ADULT_ROUND_5}
        for change in grid[round_name]:
            accuracy, auc, loss, seconds = evaluate_adult(
                {**extra, **change}, split, SEEDS_BY_ROUND.get(f"adult-{round_name}", SEEDS))
            print(f"| {change or 'base'} | {accuracy:.4f} | {auc:.4f} | {loss:.4f} | "
                  f"{seconds:.1f} |", flush=True)
    else:
        split = movielens_split(sys.argv[2])
        print("| change from base | valid RMSE | fit s |")
        print("| --- | --- | --- |")
        grid = {"round1": MOVIELENS_GRID, "round2": MOVIELENS_ROUND_2,
                "round3": MOVIELENS_ROUND_3, "round4": MOVIELENS_ROUND_4,
                "round5": MOVIELENS_ROUND_5, "round6": MOVIELENS_ROUND_6,
                "round7": MOVIELENS_ROUND_7, "round8": MOVIELENS_ROUND_8,
                "round9": MOVIELENS_ROUND_9}
        for change in grid[round_name]:
            (rmse, seconds), spread = evaluate_movielens(
                {**extra, **change}, split, SEEDS_BY_ROUND.get(round_name, SEEDS))
            shown = f"{rmse:.4f} ± {spread:.4f}" if round_name in SEEDS_BY_ROUND else f"{rmse:.4f}"
            print(f"| {change or 'base'} | {shown} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
