"""Speed of tabembed against its peers and targets (issue 17), as ratios measured in one run.

Needs the bench environment (``make bench`` builds ``.venv-bench`` with fastai,
LightGBM and onnxruntime). Every library runs with one thread (the Makefile
sets ``OMP_NUM_THREADS=1``). Run: ``python bench/speed.py DATA_HOME``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from peers import (
    fastai_epoch_seconds,
    ours_epoch_seconds,
    quiet,
    run_fastai_adult,
    run_lightgbm_adult,
    table,
)

from tabembed.datasets import load_adult, load_movielens
from tabembed.defaults import LR_FINDER_OPTIONS
from tabembed.estimators import EmbeddingMLPClassifier
from tabembed.recommenders import EmbeddingRecommender


def _median_seconds(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def adult_fit_rows(train, test) -> list[dict]:
    """End-to-end default fit (LR finder included) vs fastai's and LightGBM's, same run."""
    X, y = train.drop(columns="income"), train["income"]
    # Warm-up, as in the other sections (fastai's fits come after ours, in a warm process).
    EmbeddingMLPClassifier(random_state=0, epochs=1).fit(X, y)
    ours, finder = [], []
    for seed in range(3):
        start = time.perf_counter()
        model = EmbeddingMLPClassifier(random_state=seed).fit(X, y)
        ours.append(time.perf_counter() - start)
        # The LR finder's share: the same sweep again on the fitted learner's data.
        start = time.perf_counter()
        model.learner_.lr_find(**LR_FINDER_OPTIONS["minimum"])   # the sweep lr="auto" runs
        finder.append(time.perf_counter() - start)
    with quiet():
        fastai = [run_fastai_adult(train, test, seed)[3] for seed in range(3)]
    lightgbm = [run_lightgbm_adult(train, test)[3] for _ in range(3)]
    ours_s, fastai_s, lightgbm_s = map(statistics.median, (ours, fastai, lightgbm))
    return [
        {"measure": "Adult default fit, LR finder included (s, median of 3)",
         "tabembed": f"{ours_s:.2f}", "peer": f"fastai {fastai_s:.2f}",
         "ratio": f"{fastai_s / ours_s:.2f}x less time", "goal": "5x less than fastai"},
        {"measure": "same, against LightGBM", "tabembed": f"{ours_s:.2f}",
         "peer": f"LightGBM {lightgbm_s:.2f}", "ratio": f"{ours_s / lightgbm_s:.2f}x its time",
         "goal": "within 2x (moonshot)"},
        {"measure": "LR finder's share of the default fit", "tabembed":
         f"{statistics.median(finder):.2f} s", "peer": "", "ratio":
         f"{statistics.median(finder) / ours_s:.0%}", "goal": "reported, then reduced"},
    ]


# One fit in a fresh process, as a script runs it: imports and data loading untimed.
FRESH_FIT = """
import sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from peers import quiet, run_fastai_adult, run_tabembed_adult
from tabembed.datasets import load_adult
train, test = load_adult()
seed = int(sys.argv[3])
if sys.argv[2] == "tabembed":
    seconds = run_tabembed_adult(train, test, seed, {})[3]
else:
    with quiet():
        seconds = run_fastai_adult(train, test, seed)[3]
print(seconds)
"""


def fresh_process_rows() -> list[dict]:
    """The default Adult fit as the first fit of a fresh process, ours and fastai's,
    alternating (the warm-process row above is the steady state)."""
    here = str(Path(__file__).resolve().parent)
    times: dict[str, list[float]] = {"tabembed": [], "fastai": []}
    for seed in range(3):
        for library in times:
            result = subprocess.run([sys.executable, "-c", FRESH_FIT, here, library, str(seed)],
                                    capture_output=True, text=True, check=True)
            times[library].append(float(result.stdout.strip().splitlines()[-1]))
    ours, fastai = statistics.median(times["tabembed"]), statistics.median(times["fastai"])
    return [{"measure": "Adult default fit as a fresh process's first fit (s, median of 3)",
             "tabembed": f"{ours:.2f}", "peer": f"fastai {fastai:.2f}",
             "ratio": f"{fastai / ours:.2f}x less time", "goal": "measured"}]


def epoch_rows() -> list[dict]:
    rows = []
    for batch_size in (64, 1024):
        ours, bare = ours_epoch_seconds(batch_size)
        fastai = fastai_epoch_seconds(batch_size)
        rows.append({"measure": f"Adult epoch at batch {batch_size} (s)",
                     "tabembed": f"{ours:.3f}", "peer": f"bare loop {bare:.3f}, fastai "
                     f"{fastai:.3f}", "ratio": f"{ours / bare:.2f}x the bare loop; fastai "
                     f"{fastai / ours:.2f}x ours", "goal": "below the bare loop; 3x fastai at 64"})
    return rows


def prediction_rows(train, test, folder: Path) -> list[dict]:
    model = EmbeddingMLPClassifier(random_state=0, epochs=1).fit(
        train.drop(columns="income"), train["income"])
    features = test.drop(columns="income")
    big = pd.concat([features] * 62, ignore_index=True)     # ~1M rows
    model.predict_proba(big.iloc[:20000])
    # The first full-size call of the process, then the steady state (median of 3 more):
    # first touches of memory are slow on the benchmark machine (bench/NOTES.md).
    first = _median_seconds(lambda: model.predict_proba(big), repeat=1)
    batch = _median_seconds(lambda: model.predict_proba(big))
    rows = [features.iloc[[i]] for i in range(300)]
    for row in rows[:30]:
        model.predict_proba(row)
    one = []
    for row in rows:
        start = time.perf_counter()
        model.predict_proba(row)
        one.append(time.perf_counter() - start)
    # The same rows from a Parquet file (categories as dictionary columns, row groups of
    # 64k rows) into a Parquet file of predictions, in bounded memory.
    source = folder / "adult-big.parquet"
    big.to_parquet(source, row_group_size=1 << 16)
    parquet = _median_seconds(lambda: model.predict_to_parquet(
        source, folder / "predictions.parquet", progress=False))
    result = [{"measure": "batch prediction from a DataFrame, preprocessing included",
               "tabembed": f"{len(big) / batch:,.0f} rows/s", "peer": "", "ratio": "",
               "goal": "1M rows/s"},
              {"measure": "same, the process's first call at that size",
               "tabembed": f"{len(big) / first:,.0f} rows/s", "peer": "",
               "ratio": f"{first / batch:.2f}x the time", "goal": "measured"},
              {"measure": "batch prediction from Parquet to Parquet (predict_to_parquet)",
               "tabembed": f"{len(big) / parquet:,.0f} rows/s", "peer": "",
               "ratio": f"{batch / parquet:.2f}x the DataFrame's speed", "goal": "1M rows/s"},
              {"measure": "one-row predict_proba from a DataFrame, p50",
               "tabembed": f"{1000 * np.median(one):.2f} ms", "peer": "", "ratio": "",
               "goal": "under 1 ms"}]
    try:
        import onnxruntime

        from tabembed.export import export_onnx, onnx_inputs
    except ImportError:
        return result
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(export_onnx(model, folder / "adult.onnx")),
                                           options, providers=["CPUExecutionProvider"])
    served = _median_seconds(lambda: session.run(None, onnx_inputs(model, big)))
    one_onnx = []
    for row in rows:
        start = time.perf_counter()
        session.run(None, onnx_inputs(model, row))
        one_onnx.append(time.perf_counter() - start)
    result += [{"measure": "batch prediction through onnxruntime (same preprocessing)",
                "tabembed": f"{len(big) / served:,.0f} rows/s", "peer": "", "ratio":
                f"{batch / served:.2f}x torch's speed", "goal": "measured"},
               {"measure": "one row through onnxruntime, p50", "tabembed":
                f"{1000 * np.median(one_onnx):.2f} ms", "peer": "", "ratio":
                f"{np.median(one) / np.median(one_onnx):.2f}x torch's speed",
                "goal": "measured"}]
    return result


def recommender_rows(data_home) -> list[dict]:
    train, _ = load_movielens("100k", data_home=data_home, fold="u1")
    X, y = train[["user", "item"]], train["rating"]
    # Warm-up at full size: a process's first fit of this size touches fresh memory, which
    # cost up to 1 s more on the benchmark machine (bench/NOTES.md, "Speed, fifth round").
    EmbeddingRecommender(epochs=1, ranking="rating", random_state=0).fit(X, y)
    # The rating model alone (what the RMSE tables measure), then the default, which
    # also trains the hybrid ranking's implicit ranker.
    rating_fit = _median_seconds(
        lambda: EmbeddingRecommender(ranking="rating", random_state=0).fit(X, y))
    default_fit = _median_seconds(lambda: EmbeddingRecommender(random_state=0).fit(X, y),
                                  repeat=1)
    small = load_movielens("latest-small")
    recommender = EmbeddingRecommender(random_state=0).fit(small[["user", "item"]],
                                                           small["rating"])
    users = list(small["user"].unique())
    recommender.recommend(users[:10], k=10)
    # One vectorised call for every user (median of 3: single calls varied 0.07-0.16 s).
    every_user = _median_seconds(lambda: recommender.recommend(users, k=10))
    return [{"measure": "ml-100k dot-bias rating model fit per fold (s)",
             "tabembed": f"{rating_fit:.3f}", "peer": "", "ratio": "", "goal": "under 0.5 s"},
            {"measure": "ml-100k default fit per fold, hybrid ranker included (s)",
             "tabembed": f"{default_fit:.2f}", "peer": "", "ratio": "", "goal": "measured"},
            {"measure": f"top-10 for every user of ml-latest-small ({len(users)} users)",
             "tabembed": f"{every_user:.3f} s", "peer": "", "ratio": "", "goal": "under 0.1 s"}]


def main() -> None:
    import tempfile

    torch.set_num_threads(1)
    data_home = Path(sys.argv[1])
    train, test = load_adult()
    print(f"# Speed ({machine()})\n")
    with tempfile.TemporaryDirectory() as folder:
        rows = (adult_fit_rows(train, test) + fresh_process_rows() + epoch_rows()
                + prediction_rows(train, test, Path(folder)) + recommender_rows(data_home))
    print(table(rows))


if __name__ == "__main__":
    main()
