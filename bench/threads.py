"""Epoch time with 1 and 2 torch threads, on a quiet machine and with the other core busy.

Run: ``python bench/threads.py``. "Busy" starts one pure-Python spinning
process (as a second notebook or a data loader would) for the duration.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from loop_overhead import adult_tensors, bare_epoch, make_model

from tabembed.models import loss_for_task


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def epoch_time(threads: int, batch_size: int, tensors) -> float:
    pre, codes, continuous, target = tensors
    torch.set_num_threads(threads)
    model = make_model(pre)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_function = loss_for_task("binary")
    bare_epoch(model, optimizer, loss_function, codes[:4096], continuous[:4096], target[:4096],
               batch_size)   # warm-up
    start = time.perf_counter()
    bare_epoch(model, optimizer, loss_function, codes, continuous, target, batch_size)
    return time.perf_counter() - start


def main() -> None:
    tensors = adult_tensors()
    print(f"# Threads ({machine()})\n")
    print("| load | batch size | 1 thread s/epoch | 2 threads s/epoch | 2 / 1 |")
    print("| --- | --- | --- | --- | --- |")
    for load in ("quiet", "busy"):
        spinner = None
        if load == "busy":
            spinner = multiprocessing.Process(target=_spin, args=(600,), daemon=True)
            spinner.start()
        for batch_size in (64, 1024, 8192):
            one = epoch_time(1, batch_size, tensors)
            two = epoch_time(2, batch_size, tensors)
            print(f"| {load} | {batch_size} | {one:.3f} | {two:.3f} | {two / one:.2f} |")
        if spinner is not None:
            spinner.terminate()


if __name__ == "__main__":
    main()
