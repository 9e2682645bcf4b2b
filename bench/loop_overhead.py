"""Learner epoch time vs a bare hand-written PyTorch loop: same model, tensors and batch size.

Run: ``python bench/loop_overhead.py [--threads N] [--epochs E]``. Both loops
train the default EntityEmbeddingMLP on Adult (one-cycle for the Learner, a
constant rate for the bare loop; the schedule costs one multiply per group).
Epochs alternate between the two loops so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine

from tabembed.datasets import load_adult
from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.preprocessing import TabularPreprocessor
from tabembed.targets import TargetTransformer
from tabembed.training.learner import Learner
from tabembed.training.schedules import OneCycle


def adult_tensors():
    train, _ = load_adult()
    pre = TabularPreprocessor().fit(train.drop(columns="income"))
    codes, continuous = pre.to_tensors(train)
    target = torch.tensor(TargetTransformer().fit_transform(train["income"]), dtype=torch.float32)
    return pre, codes, continuous, target


def make_model(pre, seed=0):
    torch.manual_seed(seed)
    return EntityEmbeddingMLP(embedding_sizes=list(pre.embedding_sizes_.values()),
                              n_continuous=len(pre.cont_columns_), task="binary")


def bare_epoch(model, optimizer, loss_function, codes, continuous, target, batch_size):
    model.train()
    order = torch.randperm(len(target))
    for start in range(0, len(target), batch_size):
        rows = order[start:start + batch_size]
        if len(rows) < 2:
            continue
        optimizer.zero_grad()
        loss_function(model(codes[rows], continuous[rows]), target[rows]).backward()
        optimizer.step()


def measure(batch_size: int, epochs: int) -> tuple[float, float]:
    pre, codes, continuous, target = adult_tensors()
    loss_function = loss_for_task("binary")
    bare_model = make_model(pre)
    bare_optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=0.01)
    learner = Learner(make_model(pre), loss_function, (codes, continuous, target),
                      batch_size=batch_size, weight_decay=0.01, num_threads=None,
                      random_state=0)
    bare_times, learner_times = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        bare_epoch(bare_model, bare_optimizer, loss_function, codes, continuous, target,
                   batch_size)
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        learner.fit(1, 1e-3, schedule=OneCycle())
        learner_times.append(time.perf_counter() - start)
    return statistics.median(bare_times), statistics.median(learner_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# Loop overhead ({machine()})\n")
    print("| batch size | bare loop s/epoch | Learner s/epoch | Learner / bare |")
    print("| --- | --- | --- | --- |")
    for batch_size in args.batch_sizes:
        bare, ours = measure(batch_size, args.epochs)
        print(f"| {batch_size} | {bare:.3f} | {ours:.3f} | {ours / bare:.2f} |")


if __name__ == "__main__":
    main()
