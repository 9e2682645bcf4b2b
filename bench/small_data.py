"""Small data on the suite (issue 30, part 5).

1. ``encodings``: on every suite table under 5,000 training rows, a parameter
   set (``--params``, JSON) against the same set with each of our continuous
   encodings (PLR, PLR-lite, piecewise-linear, none): its test error may not
   exceed the best encoding's by more than 1% (relative), mean over seeds.
2. ``subsamples``: 500, 1,000 and 2,000 rows drawn from each table's training
   part (two draws); fitted with ``--params`` and scored on the full test
   part against LightGBM's defaults on the same rows and against a constant
   (the majority class, or the training mean). A fit that raises (divergence
   included) or predicts a non-finite number is counted, never hidden.

The test parts are the protocol's (bench/suite.py); nothing is chosen here,
this only checks a set chosen on validation (bench/tune_suite.py).
Run: ``python bench/small_data.py encodings|subsamples [--params JSON|recommended]
[--seeds 2]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from suite import fit_score, load_spec, load_table, parse_params, scores, split

SMALL_ROWS = 5_000
ENCODINGS = ("plr", "plr_lite", "piecewise_linear", None)
SIZES = (500, 1_000, 2_000)
DRAWS = 2


def _mean_error(table, parts, params, seeds) -> float:
    return float(np.mean([fit_score("tabembed", table, *parts, seed=seed, params=params)["error"]
                          for seed in range(seeds)]))


def encodings(params: dict, seeds: int) -> str:
    lines = ["| table | train rows | chosen set | " + " | ".join(
        f"{e}" for e in ENCODINGS) + " | chosen / best encoding |",
        "|" + " --- |" * (4 + len(ENCODINGS))]
    worst = []
    for entry in load_spec():
        table = load_table(entry)
        parts = split(table)
        if len(parts[0]) >= SMALL_ROWS:
            continue
        by_encoding = [_mean_error(table, parts, {**params, "continuous_encoding": e}, seeds)
                       for e in ENCODINGS]
        # "auto" is PLR: the same fits.
        chosen = (by_encoding[0] if params.get("continuous_encoding", "auto") == "auto"
                  else _mean_error(table, parts, params, seeds))
        ratio = chosen / min(by_encoding)
        worst.append((ratio, table.name))
        lines.append(f"| {table.name} | {len(parts[0]):,} | {chosen:.4f} | " + " | ".join(
            f"{e:.4f}" for e in by_encoding) + f" | {ratio:.3f} |")
    ratio, name = max(worst)
    over = [n for r, n in worst if r > 1.01]
    lines += ["", f"Worst: {ratio:.3f} ({name}); tables more than 1% worse than the best "
              f"encoding: {', '.join(over) if over else 'none'}. Test error, mean over seeds "
              f"0..{seeds - 1}; chosen set {json.dumps(params)}."]
    return "\n".join(lines)


def subsamples(params: dict) -> str:
    lines = ["| table | rows | tabembed error | LightGBM error | constant error | tabembed / "
             "LightGBM | tabembed / constant | failed or non-finite |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ratios, constant_ratios, failures = [], [], []
    for entry in load_spec():
        table = load_table(entry)
        X_train, X_test, y_train, y_test = split(table)
        for size in SIZES:
            if size >= len(X_train):
                continue
            ours, theirs, constant, failed = [], [], [], 0
            for draw in range(DRAWS):
                rows = np.random.default_rng(draw).choice(len(X_train), size, replace=False)
                X, y = X_train.iloc[rows], y_train.iloc[rows]
                if table.classification and y.nunique() < table.y.nunique():
                    # A draw missing a class: LightGBM and the log loss need them all.
                    keep = y_train.groupby(y_train).head(1).index
                    X = X_train.loc[X.index.union(keep)]
                    y = y_train.loc[X.index]
                try:
                    result = fit_score("tabembed", table, X, X_test, y, y_test, seed=draw,
                                       params=params)
                    if not np.isfinite(result["error"]):
                        raise FloatingPointError("non-finite error")
                    ours.append(result["error"])
                except Exception as error:      # counted and shown, never hidden
                    failed += 1
                    failures.append(f"{table.name} {size} draw {draw}: "
                                    f"{type(error).__name__}: {error}"[:200])
                    continue
                theirs.append(fit_score("lightgbm", table, X, X_test, y, y_test)["error"])
                if table.classification:
                    majority = y.value_counts().index[0]
                    constant.append(scores(table.task, y_test,
                                           np.full(len(y_test), majority, dtype=object))["error"])
                else:
                    constant.append(scores(table.task, y_test,
                                           np.full(len(y_test), y.mean()))["error"])
            if not ours:
                lines.append(f"| {table.name} | {size:,} | | | | | | {failed} |")
                continue
            mine, gbm, const = np.mean(ours), np.mean(theirs), np.mean(constant)
            ratios.append(mine / gbm)
            constant_ratios.append((mine / const, table.name, size))
            lines.append(f"| {table.name} | {size:,} | {mine:.4f} | {gbm:.4f} | {const:.4f} | "
                         f"{mine / gbm:.3f} | {mine / const:.3f} | {failed} |")
    worst = max(constant_ratios)
    lines += ["", f"{len(ratios)} table-size pairs, {DRAWS} draws each. Geometric-mean ratio "
              f"to LightGBM on the same rows: {np.exp(np.mean(np.log(ratios))):.3f}; worst "
              f"ratio to the constant: {worst[0]:.3f} ({worst[1]}, {worst[2]:,} rows); failed "
              f"or non-finite fits: {len(failures)}."]
    lines += [f"- {f}" for f in failures]
    lines += [f"Parameters: {json.dumps(params)}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["encodings", "subsamples"])
    parser.add_argument("--params", default="recommended",
                        help="JSON of parameters, or 'recommended' (bench/suite.py)")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    params = parse_params(args.params)
    print(f"Machine: {machine()}; one thread.\n")
    print(encodings(params, args.seeds) if args.part == "encodings" else subsamples(params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
