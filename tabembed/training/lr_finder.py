"""The learning-rate range test (Smith 2015; fastai's lr_find), as a callback.

:meth:`Learner.lr_find <tabembed.training.learner.Learner.lr_find>` runs an
ordinary :meth:`~tabembed.training.learner.Learner.fit` whose schedule is a
:class:`~tabembed.training.schedules.RangeTest` (the rate grows exponentially
each batch from ``start_lr`` to ``end_lr``) and whose only callback is an
:class:`LRFinder`. The finder records the loss, smoothed with an exponential
moving average (``beta``, debiased), and stops the fit when the smoothed loss
passes ``divergence`` times its best; the learner then restores its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tabembed.training import checkpoint
from tabembed.training.callbacks import Callback, StepProgress, TrainingDivergedError
from tabembed.training.schedules import RangeTest

__all__ = ["LRFinder", "LRFinderResult", "range_test", "suggest"]


@dataclass
class LRFinderResult:
    """Rates tried, smoothed losses, and the suggested rates."""

    lrs: np.ndarray
    losses: np.ndarray
    suggestions: dict[str, float] = field(default_factory=dict)
    used: float | None = None     # the rate training then used, when known

    def plot(self, path=None):
        """Loss against learning rate on a log axis, with the suggestions and the rate
        used marked."""
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


def suggest(lrs: np.ndarray, losses: np.ndarray, *,
            minimum_floor: float | None = None) -> dict[str, float]:
    """Steepest descent, valley, and minimum / 10, skipping the noisy ends like fastai.

    ``minimum_floor``: "minimum" looks for the lowest loss among rates of at
    least ten times the floor only, so it never suggests less than the floor.
    On small data (a few hundred rows, batches of 16) the loss hardly moves
    during the sweep, and its noise put the lowest point at 1e-7 to 1e-6 in 2
    of 5 seeds.
    """
    if len(lrs) < 5:
        return {}
    head, tail = len(lrs) // 10, max(1, min(5, len(lrs) // 10))
    lrs, losses = lrs[head:-tail], losses[head:-tail]
    slopes = np.gradient(losses, np.log(lrs))
    candidates = np.ones(len(lrs), dtype=bool)
    if minimum_floor is not None and (lrs >= 10 * minimum_floor).any():
        candidates = lrs >= 10 * minimum_floor
    lowest = int(np.flatnonzero(candidates)[np.argmin(losses[candidates])])
    return {
        "valley": float(lrs[_valley(losses)]),
        "steepest": float(lrs[int(np.argmin(slopes))]),
        "minimum": float(lrs[lowest] / 10),
    }


class LRFinder(Callback):
    """Record the smoothed loss at each rate of a range test; stop when it explodes.

    Parameters
    ----------
    start_lr, end_lr : float
        The sweep's first and last rate (of the fastest layer group).
    num_steps : int
        Batches in the sweep, at most (fastai's 100; the estimators' default
        ``lr="auto"`` sweeps 37 from 1e-4, see ``tabembed.defaults.LR_FINDER_OPTIONS``).
    beta : float, optional
        Smoothing of the recorded loss (debiased exponential moving average);
        default ``0.98 ** (100 / num_steps)``, fastai's 0.98 per 100 steps, so
        the smoothing spans the same range of rates whatever ``num_steps``.
    divergence : float
        Stop once the smoothed loss exceeds this multiple of its best.
    minimum_floor : float, optional
        The lowest rate the "minimum" suggestion may give (see :func:`suggest`).
    """

    order = 0

    def __init__(self, *, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
                 beta: float | None = None, divergence: float = 4.0,
                 minimum_floor: float | None = None):
        if beta is None:
            beta = 0.98 ** (100 / num_steps)
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta=}")
        self.schedule = RangeTest(start_lr, end_lr, num_steps)
        self.num_steps, self.beta, self.divergence = num_steps, beta, divergence
        self.minimum_floor = minimum_floor
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._average, self._best = 0.0, math.inf

    def on_batch_end(self, learner) -> None:
        step = len(self.lrs)
        self._record(self.schedule.rate(step), learner.last_loss)
        smoothed = self.losses[-1]
        if (not math.isfinite(smoothed) or smoothed > self.divergence * self._best
                or len(self.lrs) >= self.num_steps):
            learner.stop("LR finder: sweep finished", immediately=True)

    def _record(self, lr: float, loss: float) -> None:
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smoothed = self._average / (1 - self.beta ** (len(self.lrs) + 1))
        self.lrs.append(lr)
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)

    def diverged(self) -> None:
        """The loop stopped on a non-finite loss: record it as the sweep's last point."""
        step = len(self.lrs)
        if step < self.num_steps:
            self._record(self.schedule.rate(step), math.inf)

    def result(self) -> LRFinderResult:
        lrs, losses = np.array(self.lrs), np.array(self.losses)
        finite = np.isfinite(losses)
        return LRFinderResult(lrs, losses, suggest(lrs[finite], losses[finite],
                                                   minimum_floor=self.minimum_floor))


def range_test(learner, **options) -> LRFinderResult:
    """The LR range test on ``learner``, through its ``fit`` with an :class:`LRFinder`
    callback (``options`` are its parameters).

    The rate grows from ``start_lr`` to ``end_lr`` over at most ``num_steps``
    batches (keeping the ratios of discriminative rates) while the smoothed
    loss is recorded; the sweep stops when it passes ``divergence`` times its
    best. Weights, optimizer, random state, batch order and history are then
    restored bit for bit. None of the learner's callbacks run, nor validation.
    """
    finder = LRFinder(**options)
    start_lr, end_lr = finder.schedule.start_lr, finder.schedule.end_lr
    num_steps = finder.num_steps
    if learner.optimizer is None:
        learner.set_learning_rates(start_lr)
    peaks = {g.get("layer_group", 0): g["base_lr"] for g in learner.optimizer.param_groups}
    top = max(peaks.values())
    rates = [end_lr * peaks.get(i, top) / top for i in range(len(learner.layer_groups))]
    saved = checkpoint.capture(learner, callbacks=False)
    saved_active = learner.active_callbacks
    epochs = math.ceil(num_steps / max(len(learner.train_data), 1))
    progress = [StepProgress(num_steps, "LR finder")] if learner.verbose else []
    try:
        learner.fit(epochs, rates, schedule=finder.schedule, callbacks=[finder, *progress],
                    learner_callbacks=False, validate=False)
    except TrainingDivergedError:
        finder.diverged()     # a non-finite loss ends the sweep: the expected way out
    finally:
        for bar in progress:
            if bar.bar is not None:
                bar.bar.close()
        checkpoint.restore(learner, saved)     # the optimizer's peak rates included
        learner.active_callbacks = saved_active
    return finder.result()
