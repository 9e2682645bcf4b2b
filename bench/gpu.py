"""GPU: the Learner's epoch against a bare loop on the same device, and default fits (issue 17).

Where CUDA is present (or ``--device`` names another device): Adult's training tensors
on the device once (the Learner's ``TensorBatches.to``; the bare loop moves them
itself), epochs alternating between the Learner and a bare hand-written loop, both with
AdamW, in fp32, bf16 autocast and, on CUDA, fp16 autocast with a gradient scaler; then
the default classifier's fit, its 1M-row batch prediction, and the ml-100k rating
model's fit on the device against the CPU. Without CUDA it prints that nothing was
measured and exits 0 (``--device cpu`` runs the same code on CPU, to check it).

Run: ``python bench/gpu.py [DATA_HOME] [--device cuda] [--epochs 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from loop_overhead import adult_tensors, make_model

from tabembed.datasets import load_adult, load_movielens
from tabembed.estimators import EmbeddingMLPClassifier
from tabembed.models import loss_for_task
from tabembed.recommenders import EmbeddingRecommender
from tabembed.training.learner import Learner
from tabembed.training.schedules import OneCycle


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    function()
    _synchronize(device)
    return time.perf_counter() - start


def _autocast(device: torch.device, precision: str):
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def bare_epoch(model, optimizer, scaler, loss_function, tensors, batch_size, device, precision):
    """The loop a user would write: tensors already on the device, a random order, AdamW."""
    codes, continuous, target = tensors
    model.train()
    order = torch.randperm(len(target), device=device)
    for start in range(0, len(target), batch_size):
        rows = order[start:start + batch_size]
        if len(rows) < 2:
            continue
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss = loss_function(model(codes[rows], continuous[rows]), target[rows])
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()


def _epochs(pre, tensors, on_device, device, precision, batch_size, epochs):
    """Median seconds an epoch ``(Learner, bare loop)``, alternating, after one warm-up each."""
    loss_function = loss_for_task("binary")
    bare_model = make_model(pre).to(device)
    optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=0.01)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    learner = Learner(make_model(pre), loss_function, tensors, batch_size=batch_size,
                      weight_decay=0.01, device=str(device), precision=precision,
                      random_state=0)
    ours, bare = [], []
    for _ in range(epochs + 1):
        ours.append(_timed(lambda: learner.fit(1, 1e-3, schedule=OneCycle()), device))
        bare.append(_timed(lambda: bare_epoch(bare_model, optimizer, scaler, loss_function,
                                              on_device, batch_size, device, precision),
                           device))
    return statistics.median(ours[1:]), statistics.median(bare[1:])


def epoch_rows(device: torch.device, precisions, batch_sizes, epochs: int) -> list[str]:
    pre, codes, continuous, target = adult_tensors()
    tensors = (codes, continuous, target)
    on_device = tuple(t.to(device) for t in tensors)
    rows = []
    for precision in precisions:
        for batch_size in batch_sizes:
            ours, bare = _epochs(pre, tensors, on_device, device, precision, batch_size, epochs)
            rows.append(f"| {precision} | {batch_size} | {bare:.3f} | {ours:.3f} | "
                        f"{ours / bare:.2f}x |")
    return rows


def fit_rows(device: torch.device, data_home) -> list[str]:
    train, test = load_adult()
    X, y = train.drop(columns="income"), train["income"]
    big = pd.concat([test.drop(columns="income")] * 62, ignore_index=True)
    rows = []
    places = [device] + ([torch.device("cpu")] if device.type != "cpu" else [])
    for where in places:
        EmbeddingMLPClassifier(random_state=0, epochs=1, device=str(where)).fit(X, y)
        seconds, accuracies = [], []
        for seed in range(3):
            model = EmbeddingMLPClassifier(random_state=seed, device=str(where))
            seconds.append(_timed(lambda model=model: model.fit(X, y), where))
            accuracies.append(np.mean(model.predict(test.drop(columns="income"))
                                      == test["income"].to_numpy()))
        model.predict_proba(big.iloc[:20000])
        predict = statistics.median(_timed(lambda model=model: model.predict_proba(big), where)
                                    for _ in range(3))
        rows.append(f"| Adult default fit, LR finder included (s, median of 3) | {where} | "
                    f"{statistics.median(seconds):.2f} | test accuracy {np.mean(accuracies):.4f} |")
        rows.append(f"| batch prediction from a DataFrame ({len(big):,} rows) | {where} | "
                    f"{len(big) / predict:,.0f} rows/s | preprocessing on CPU included |")
    if data_home is not None:
        fold, fold_test = load_movielens("100k", data_home=data_home, fold="u1")
        pairs, ratings = fold[["user", "item"]], fold["rating"]
        for where in places:
            EmbeddingRecommender(epochs=1, ranking="rating", device=str(where)).fit(pairs, ratings)
            fits = []
            for _ in range(3):
                model = EmbeddingRecommender(ranking="rating", random_state=0, device=str(where))
                fits.append(_timed(lambda model=model: model.fit(pairs, ratings), where))
            error = model.predict(fold_test[["user", "item"]]) - fold_test["rating"].to_numpy()
            rmse = np.sqrt(np.mean(error ** 2))
            rows.append(f"| ml-100k dot-bias rating model fit, u1 (s, median of 3) | {where} | "
                        f"{statistics.median(fits):.3f} | test RMSE {rmse:.4f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_home", nargs="?", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024, 4096])
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"Not measured: no CUDA device on this machine ({machine()}).")
        return
    if device.type == "cpu":
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"# GPU ({name}; host: {machine()})\n")
    precisions = ["32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    print("| precision | batch size | bare loop s/epoch | Learner s/epoch | Learner / bare |")
    print("| --- | --- | --- | --- | --- |")
    for row in epoch_rows(device, precisions, args.batch_sizes, args.epochs):
        print(row, flush=True)
    print("\n| measure | device | result | note |")
    print("| --- | --- | --- | --- |")
    for row in fit_rows(device, args.data_home):
        print(row, flush=True)


if __name__ == "__main__":
    main()
