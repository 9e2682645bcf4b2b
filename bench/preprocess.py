"""Preprocessing throughput: TabularPreprocessor vs a scikit-learn ColumnTransformer.

Adult's features replicated to 1M rows. The scikit-learn baseline does less
work (ordinal codes and scaling only: no missing-value fill, no indicators, no
unknown-token mapping of missing values). Run: ``python bench/preprocess.py``.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OrdinalEncoder, StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, machine

from tabembed.datasets import load_adult
from tabembed.preprocessing import TabularPreprocessor


def main(n_rows: int = 1_000_000) -> None:
    train, _ = load_adult()
    features = train.drop(columns="income")
    repeats = -(-n_rows // len(features))
    big = pd.concat([features] * repeats, ignore_index=True).iloc[:n_rows]
    print(f"# Preprocessing, {len(big):,} rows ({machine()})\n")
    print("| input dtype | tabembed rows/s | sklearn rows/s | tabembed / sklearn time "
          "| peak memory / output |")
    print("| --- | --- | --- | --- | --- |")
    for label, frame in [("category", big), ("string", big.astype(
            {c: "str" for c in big.columns if isinstance(big[c].dtype, pd.CategoricalDtype)}))]:
        pre = TabularPreprocessor().fit(frame)
        cats, conts = pre.cat_names_, pre.cont_names_
        baseline = ColumnTransformer([
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                   encoded_missing_value=-1), cats),
            ("num", StandardScaler(), conts),
        ]).fit(frame)
        ours, _ = best_of(lambda: pre.transform_arrays(frame), repeat=3)  # noqa: B023
        theirs, _ = best_of(lambda: baseline.transform(frame), repeat=3)  # noqa: B023
        tracemalloc.start()
        codes, values = pre.transform_arrays(frame)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        output = codes.nbytes + values.nbytes
        print(f"| {label} | {len(frame) / ours:,.0f} | {len(frame) / theirs:,.0f} | "
              f"{ours / theirs:.2f} | {peak / output:.2f} ({peak / 1e6:.0f} MB / "
              f"{output / 1e6:.0f} MB) |")
    assert np.isfinite(values).all()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
