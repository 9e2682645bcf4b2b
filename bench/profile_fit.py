"""One default Adult fit under cProfile: wall time and the top functions by own time.

Run: ``python bench/profile_fit.py`` from the repository root (in .venv or .venv-bench).
To profile another version, run it with ``PYTHONPATH`` pointing at that checkout.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

import torch

from tabembed.datasets import load_adult
from tabembed.estimators import EmbeddingMLPClassifier


def main(n_functions: int = 12) -> None:
    torch.set_num_threads(1)
    train, _ = load_adult()
    X, y = train.drop(columns="income"), train["income"]
    EmbeddingMLPClassifier(random_state=0, epochs=1).fit(X, y)      # warm-up
    start = time.perf_counter()
    EmbeddingMLPClassifier(random_state=0).fit(X, y)
    print("wall s (no profiler):", round(time.perf_counter() - start, 2))
    profiler = cProfile.Profile()
    profiler.enable()
    EmbeddingMLPClassifier(random_state=0).fit(X, y)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(n_functions)
    print("\n".join(line[:140] for line in out.getvalue().splitlines()[4:]))


if __name__ == "__main__":
    main()
