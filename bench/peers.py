"""tabembed against fastai, LightGBM and Surprise: accuracy and speed, in one run.

Needs the bench environment (``make bench`` builds ``.venv-bench``). Test
splits are used only for reporting; every tabembed default was chosen on
validation splits (bench/tune_defaults.py). Threads: every library runs with
one torch/OpenMP thread (``OMP_WAIT_POLICY=PASSIVE`` set by the Makefile), so
like is compared with like on a 2-core machine.
Run: ``python bench/peers.py DATA_HOME [--quick]`` (DATA_HOME holds ml-100k/).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from loop_overhead import adult_tensors, bare_epoch, make_model

from tabembed.datasets import load_adult, load_movielens
from tabembed.estimators import EmbeddingMLPClassifier
from tabembed.models import loss_for_task
from tabembed.recommenders import EmbeddingRecommender
from tabembed.training.learner import Learner
from tabembed.training.schedules import OneCycle

warnings.filterwarnings("ignore")
ADULT_CATS = ["workclass", "education", "marital_status", "occupation", "relationship",
              "race", "sex", "native_country"]
ADULT_CONTS = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss",
               "hours_per_week"]
# The defaults are the best recipe measured on Adult's validation split (EMA
# included); the closest alternative there, plain training, is shown beside them.
ALTERNATIVE = {"averaging": None}


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def mean_std(values) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- Adult

def adult_scores(positive, probability) -> tuple[float, float, float]:
    probability = np.clip(probability, 1e-7, 1 - 1e-7)
    return (accuracy_score(positive, probability > 0.5), roc_auc_score(positive, probability),
            log_loss(positive, probability))


def run_tabembed_adult(train, test, seed, options):
    X, y = train.drop(columns="income"), train["income"]
    start = time.perf_counter()
    model = EmbeddingMLPClassifier(random_state=seed, **options).fit(X, y)
    seconds = time.perf_counter() - start
    probability = model.predict_proba(test.drop(columns="income"))[:, 1]
    return (*adult_scores(np.asarray(test["income"] == ">50K"), probability), seconds)


def run_fastai_adult(train, test, seed):
    from fastai.tabular.all import (
        Categorify,
        FillMissing,
        Normalize,
        RandomSplitter,
        TabularDataLoaders,
        accuracy,
        range_of,
        set_seed,
        tabular_learner,
    )

    set_seed(seed, reproducible=True)
    frame = train.astype({c: "object" for c in [*ADULT_CATS, "income"]})
    start = time.perf_counter()
    splits = RandomSplitter(valid_pct=0.2, seed=seed)(range_of(frame))
    loaders = TabularDataLoaders.from_df(
        frame, procs=[Categorify, FillMissing, Normalize], cat_names=ADULT_CATS,
        cont_names=ADULT_CONTS, y_names="income", valid_idx=splits[1], bs=64)
    learner = tabular_learner(loaders, metrics=accuracy)
    with quiet(), learner.no_bar(), learner.no_logging():
        valley = learner.lr_find(show_plot=False).valley
        learner.fit_one_cycle(5, valley)
    seconds = time.perf_counter() - start
    test_frame = test.astype({c: "object" for c in [*ADULT_CATS, "income"]})
    with quiet(), learner.no_bar():
        probabilities, _ = learner.get_preds(dl=learner.dls.test_dl(test_frame))
    positive_index = list(learner.dls.vocab).index(">50K")
    probability = probabilities[:, positive_index].numpy()
    return (*adult_scores(np.asarray(test["income"] == ">50K"), probability), seconds)


def run_lightgbm_adult(train, test):
    import lightgbm

    X, y = train.drop(columns="income"), (train["income"] == ">50K").astype(int)
    start = time.perf_counter()
    model = lightgbm.LGBMClassifier(verbose=-1).fit(X, y)
    seconds = time.perf_counter() - start
    probability = model.predict_proba(test.drop(columns="income"))[:, 1]
    return (*adult_scores(np.asarray(test["income"] == ">50K"), probability), seconds)


def adult_section(seeds) -> tuple[str, dict]:
    train, test = load_adult()
    runs = {
        "tabembed defaults (the best validated recipe)": [
            run_tabembed_adult(train, test, s, {}) for s in seeds],
        f"tabembed defaults + {ALTERNATIVE}": [
            run_tabembed_adult(train, test, s, ALTERNATIVE) for s in seeds],
        "fastai tabular_learner (lr_find valley, fit_one_cycle(5), bs 64)": [
            run_fastai_adult(train, test, s) for s in seeds],
        "LightGBM defaults": [run_lightgbm_adult(train, test)],
    }
    rows = []
    for name, results in runs.items():
        results = np.array(results)
        rows.append({"model": name, "seeds": len(results),
                     "accuracy": mean_std(results[:, 0]), "AUC": mean_std(results[:, 1]),
                     "log loss": mean_std(results[:, 2]),
                     "fit s (LR finder included)": f"{np.mean(results[:, 3]):.1f}"})
    return table(rows), runs


# ---------------------------------------------------------------- MovieLens

def rmse_mae(predicted, actual) -> tuple[float, float]:
    error = np.asarray(predicted) - np.asarray(actual)
    return float(np.sqrt(np.mean(error ** 2))), float(np.mean(np.abs(error)))


def run_tabembed_collab(train, test, seed, model):
    start = time.perf_counter()
    recommender = EmbeddingRecommender(model=model, random_state=seed)
    recommender.fit(train[["user", "item"]], train["rating"])
    seconds = time.perf_counter() - start
    return (*rmse_mae(recommender.predict(test[["user", "item"]]), test["rating"]), seconds)


def run_fastai_collab(train, test, seed):
    from fastai.collab import TabularCollab, collab_learner
    from fastai.tabular.all import Categorify, IndexSplitter, TransformBlock, range_of, set_seed

    set_seed(seed, reproducible=True)
    frame = pd.concat([train, test], ignore_index=True)[["user", "item", "rating"]]
    start = time.perf_counter()
    # What CollabDataLoaders.from_df builds, with the fold's test rows as the validation set
    # (used only to read predictions: fastai's defaults select nothing on it).
    splits = IndexSplitter(list(range(len(train), len(frame))))(range_of(frame))
    tabular = TabularCollab(frame, [Categorify], cat_names=["user", "item"],
                            y_names=["rating"], y_block=TransformBlock(), splits=splits)
    loaders = tabular.dataloaders(bs=64)
    learner = collab_learner(loaders, n_factors=50, y_range=(0, 5.5))
    with quiet(), learner.no_bar(), learner.no_logging():
        learner.fit_one_cycle(5, 5e-3, wd=0.1)
    seconds = time.perf_counter() - start
    with quiet(), learner.no_bar():
        predicted, target = learner.get_preds()
    return (*rmse_mae(predicted.view(-1).numpy(), target.view(-1).numpy()), seconds)


def run_surprise(train, test, algorithm):
    from surprise import SVD, Dataset, Reader, SVDpp

    reader = Reader(rating_scale=(min(train["rating"].min(), 0.5), 5))
    data = Dataset.load_from_df(train[["user", "item", "rating"]], reader).build_full_trainset()
    model = {"SVD": SVD, "SVD++": SVDpp}[algorithm](random_state=0)
    start = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - start
    predicted = [model.predict(u, i).est for u, i in zip(test["user"], test["item"])]
    return (*rmse_mae(predicted, test["rating"]), seconds)


def collab_rows(splits: dict, seeds, svdpp_splits, only=None) -> str:
    models = {
        "tabembed dot-bias (defaults)": lambda tr, te, s: run_tabembed_collab(tr, te, s, "dot"),
        "tabembed neural CF (defaults)": lambda tr, te, s: run_tabembed_collab(tr, te, s,
                                                                               "neural"),
        "fastai collab_learner (50 factors, y_range (0, 5.5), one-cycle 5, 5e-3, wd 0.1, "
        "bs 64)": run_fastai_collab,
        "Surprise SVD": lambda tr, te, s: run_surprise(tr, te, "SVD"),
        "Surprise SVD++": lambda tr, te, s: run_surprise(tr, te, "SVD++"),
    }
    rows = []
    for name, run in models.items():
        if only and only not in name:
            continue
        deterministic = name.startswith("Surprise")
        chosen = svdpp_splits if name == "Surprise SVD++" else list(splits)
        per_split = {}
        for split in chosen:
            train, test = splits[split]
            results = [run(train, test, s) for s in (seeds[:1] if deterministic else seeds)]
            per_split[split] = np.array(results)
        mean_rmse = [np.mean([per_split[k][i, 0] for k in chosen])
                     for i in range(len(next(iter(per_split.values()))))]
        mean_mae = [np.mean([per_split[k][i, 1] for k in chosen])
                    for i in range(len(next(iter(per_split.values()))))]
        first = chosen[0]
        rows.append({
            "model": name, "splits": ", ".join(chosen), "seeds": len(mean_rmse),
            "RMSE (mean over splits)": mean_std(mean_rmse),
            "MAE": mean_std(mean_mae),
            f"RMSE {first}": mean_std(per_split[first][:, 0]),
            "fit s per split": f"{np.mean([v[:, 2].mean() for v in per_split.values()]):.1f}",
        })
    return table(rows)


def movielens_sections(data_home, seeds, quick: bool, only=None) -> str:
    folds = {f"u{i}": load_movielens("100k", data_home=data_home, fold=f"u{i}")
             for i in range(1, 2 if quick else 6)}
    ratings = load_movielens("latest-small")
    held = np.random.default_rng(0).random(len(ratings)) < 0.1
    small = {"90/10 seed 0": (ratings[~held].reset_index(drop=True),
                              ratings[held].reset_index(drop=True))}
    return ("### MovieLens 100K, canonical folds\n\n" + collab_rows(folds, seeds, ["u1"], only)
            + "\n\n### MovieLens latest-small, random 90/10 split (seed 0)\n\n"
            + collab_rows(small, seeds, ["90/10 seed 0"], only))


# ---------------------------------------------------------------- speed

def fastai_epoch_seconds(batch_size: int) -> float:
    from fastai.tabular.all import (
        Categorify,
        FillMissing,
        Normalize,
        TabularDataLoaders,
        tabular_learner,
    )

    train, _ = load_adult()
    frame = train.astype({c: "object" for c in [*ADULT_CATS, "income"]})
    loaders = TabularDataLoaders.from_df(
        frame, procs=[Categorify, FillMissing, Normalize], cat_names=ADULT_CATS,
        cont_names=ADULT_CONTS, y_names="income", valid_idx=list(range(64)), bs=batch_size)
    learner = tabular_learner(loaders)
    times = []
    with quiet(), learner.no_bar(), learner.no_logging():
        for _ in range(3):
            start = time.perf_counter()
            learner.fit(1, 1e-3)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours_epoch_seconds(batch_size: int) -> tuple[float, float]:
    pre, codes, continuous, target = adult_tensors()
    loss = loss_for_task("binary")
    learner = Learner(make_model(pre), loss, (codes, continuous, target), batch_size=batch_size,
                      weight_decay=0.01, random_state=0)
    model = make_model(pre)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ours, bare = [], []
    for _ in range(3):
        start = time.perf_counter()
        learner.fit(1, 1e-3, schedule=OneCycle())
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_epoch(model, optimizer, loss, codes, continuous, target, batch_size)
        bare.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(bare)


def prediction_latency() -> dict:
    train, test = load_adult()
    model = EmbeddingMLPClassifier(random_state=0, epochs=1).fit(
        train.drop(columns="income"), train["income"])
    features = test.drop(columns="income")
    one = features.iloc[[0]]
    for _ in range(20):
        model.predict_proba(one)
    times = []
    for i in range(200):
        row = features.iloc[[i]]
        start = time.perf_counter()
        model.predict_proba(row)
        times.append(time.perf_counter() - start)
    big = pd.concat([features] * 62, ignore_index=True)   # ~1M rows
    start = time.perf_counter()
    model.predict_proba(big)
    batch = time.perf_counter() - start
    return {"p50_ms": 1000 * float(np.median(times)), "p99_ms": 1000 * float(np.quantile(times,
                                                                                       0.99)),
            "batch_rows_per_s": len(big) / batch, "rows": len(big)}


def speed_section(adult_runs: dict) -> str:
    ours_fit = np.mean([r[3] for r in adult_runs["tabembed defaults (the best validated recipe)"]])
    fastai_key = next(k for k in adult_runs if k.startswith("fastai"))
    fastai_fit = np.mean([r[3] for r in adult_runs[fastai_key]])
    lines = [f"End-to-end default fit on Adult (LR finder included): tabembed {ours_fit:.1f} s, "
             f"fastai {fastai_fit:.1f} s: **{fastai_fit / ours_fit:.1f}x less wall time** "
             "(target: at least 5x, while more accurate).", ""]
    rows = []
    for batch_size in (64, 1024):
        ours, bare = ours_epoch_seconds(batch_size)
        fastai = fastai_epoch_seconds(batch_size)
        rows.append({"batch size": batch_size, "tabembed Learner s/epoch": f"{ours:.3f}",
                     "bare PyTorch loop s/epoch": f"{bare:.3f}",
                     "fastai s/epoch": f"{fastai:.3f}", "Learner / bare": f"{ours / bare:.2f}",
                     "fastai / Learner": f"{fastai / ours:.2f}"})
    lines.append(table(rows))
    latency = prediction_latency()
    lines += ["", f"Prediction from a DataFrame (EmbeddingMLPClassifier on Adult): one row p50 "
              f"{latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms (target p50 < 2 ms); "
              f"batch {latency['batch_rows_per_s']:,.0f} rows/s over {latency['rows']:,} rows, "
              "preprocessing included (target > 1M rows/s)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_home")
    parser.add_argument("--quick", action="store_true", help="1 seed, fold u1 only")
    parser.add_argument("--recommenders", default=None, metavar="NAME",
                        help="only the MovieLens rows whose model name holds NAME")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    if args.recommenders:
        print(f"# MovieLens rows with {args.recommenders!r} ({machine()})\n")
        print(movielens_sections(args.data_home, seeds, args.quick, args.recommenders),
              flush=True)
        return
    import fastai
    import lightgbm
    import surprise

    print(f"# tabembed vs peers ({machine()}; fastai {fastai.__version__}, lightgbm "
          f"{lightgbm.__version__}, scikit-surprise {surprise.__version__})\n")
    adult_table, runs = adult_section(seeds)
    print("### Adult (test split)\n\n" + adult_table + "\n", flush=True)
    print(movielens_sections(args.data_home, seeds, args.quick) + "\n", flush=True)
    print("### Speed\n\n" + speed_section(runs), flush=True)


if __name__ == "__main__":
    main()
