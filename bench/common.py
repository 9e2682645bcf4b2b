"""Helpers shared by the benchmarks: machine description and timing."""

from __future__ import annotations

import os
import platform
import statistics
import time


def machine() -> str:
    import numpy
    import pandas
    import sklearn
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"pandas {pandas.__version__}, numpy {numpy.__version__}, "
            f"scikit-learn {sklearn.__version__}")


def best_of(function, repeat: int = 5) -> tuple[float, float]:
    """Minimum and median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def fold_rmse(folds, **options) -> tuple[float, list[float]]:
    """Mean test RMSE over ``folds`` (``(train, test)`` rating frames) of an
    ``EmbeddingRecommender(**options)`` fitted on each, and each fit's seconds."""
    import numpy as np

    from tabembed.recommenders import EmbeddingRecommender

    errors, seconds = [], []
    for train, test in folds:
        start = time.perf_counter()
        model = EmbeddingRecommender(**options).fit(train[["user", "item"]], train["rating"])
        seconds.append(time.perf_counter() - start)
        error = model.predict(test[["user", "item"]]) - test["rating"].to_numpy()
        errors.append(np.sqrt(np.mean(error ** 2)))
    return float(np.mean(errors)), seconds
