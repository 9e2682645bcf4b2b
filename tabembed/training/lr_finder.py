"""The learning-rate range test (Smith 2015; fastai's lr_find).

The rate grows exponentially each batch from ``start_lr`` to ``end_lr`` while
the loss, smoothed with an exponential moving average (``beta``, debiased),
is recorded. The sweep stops when the smoothed loss passes ``divergence``
times its best; then the model, optimizer and random state are restored
bit for bit, so the range test leaves no trace.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from tabembed.training.callbacks import EVENTS, copy_state


@dataclass
class LRFinderResult:
    """Rates tried, smoothed losses, and the suggested rates."""

    lrs: np.ndarray
    losses: np.ndarray
    suggestions: dict[str, float] = field(default_factory=dict)

    def plot(self, path=None):
        """Loss against learning rate on a log axis, with the suggestions marked."""
        from tabembed.plotting import plot_lr_find

        return plot_lr_find(self, path=path)


def _valley(losses: np.ndarray) -> int:
    """Index a third of the way into the longest run of decreasing loss (fastai's valley)."""
    n = len(losses)
    run = np.ones(n, dtype=int)      # longest decreasing subsequence ending at i
    best_end = 0
    for i in range(1, n):
        earlier = run[:i][losses[:i] > losses[i]]
        if earlier.size:
            run[i] = earlier.max() + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end] + 1
    section = (best_end - start) / 3
    return int(start + int(section) + int(section / 2))


def suggest(lrs: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """Steepest descent, valley, and minimum / 10, skipping the noisy ends like fastai."""
    if len(lrs) < 5:
        return {}
    head, tail = len(lrs) // 10, max(1, min(5, len(lrs) // 10))
    lrs, losses = lrs[head:-tail], losses[head:-tail]
    slopes = np.gradient(losses, np.log(lrs))
    return {
        "valley": float(lrs[_valley(losses)]),
        "steepest": float(lrs[int(np.argmin(slopes))]),
        "minimum": float(lrs[int(np.argmin(losses))] / 10),
    }


def lr_find(learner, *, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            beta: float = 0.98, divergence: float = 4.0) -> LRFinderResult:
    """Sweep the learning rate on ``learner``'s training data and restore its state."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr=}, {end_lr=}")
    if learner.optimizer is None:
        learner.set_learning_rates(start_lr)
    saved_model = copy_state(learner.model)
    saved_optimizer = copy.deepcopy(learner.optimizer.state_dict())
    saved_rng = torch.get_rng_state()
    saved_batches = (copy.deepcopy(learner.train_data.state_dict())
                     if hasattr(learner.train_data, "state_dict") else None)
    saved_step, saved_epoch = learner.step, learner.epoch
    bases = [group.get("base_lr", group["lr"]) for group in learner.optimizer.param_groups]
    saved_rates = [group["lr"] for group in learner.optimizer.param_groups]
    top = max(bases)
    saved_losses = len(learner.history.batch_losses)
    saved_handlers = getattr(learner, "_handlers", None)
    learner._handlers = {event: [] for event in EVENTS}   # the sweep runs no callbacks
    lrs, losses = [], []
    average, best = 0.0, math.inf
    learner.batch_index = 0
    try:
        with learner._threads():
            learner._train_mode()
            step = 0
            while step < num_steps:
                for batch in learner.train_data:
                    lr = start_lr * (end_lr / start_lr) ** (step / (num_steps - 1))
                    for group, base in zip(learner.optimizer.param_groups, bases):
                        group["lr"] = lr * base / top   # keep discriminative ratios
                    try:
                        loss = learner._train_step(batch)
                    except FloatingPointError:
                        loss = math.inf
                    average = beta * average + (1 - beta) * loss
                    smoothed = average / (1 - beta ** (step + 1))
                    lrs.append(lr)
                    losses.append(smoothed)
                    best = min(best, smoothed)
                    step += 1
                    if not math.isfinite(smoothed) or smoothed > divergence * best \
                            or step >= num_steps:
                        step = num_steps
                        break
    finally:
        learner.model.load_state_dict(saved_model)
        learner.optimizer.load_state_dict(saved_optimizer)
        for group, base, rate in zip(learner.optimizer.param_groups, bases, saved_rates):
            group["base_lr"], group["lr"] = base, rate
        torch.set_rng_state(saved_rng)
        if saved_batches is not None:
            learner.train_data.load_state_dict(saved_batches)
        learner.step, learner.epoch = saved_step, saved_epoch
        del learner.history.batch_losses[saved_losses:]
        if saved_handlers is None:
            del learner._handlers
        else:
            learner._handlers = saved_handlers
    lrs_array, losses_array = np.array(lrs), np.array(losses)
    finite = np.isfinite(losses_array)
    result = LRFinderResult(lrs_array, losses_array)
    result.suggestions = suggest(lrs_array[finite], losses_array[finite])
    return result
