"""Learning-rate schedules as pure functions of training progress.

A schedule maps ``(step, steps_per_epoch, total_steps)`` to a *factor* of the
peak learning rate given to ``fit`` (so discriminative per-group rates keep
their ratios). ``step`` counts batches from 0 over the whole fit, so a
schedule needs no state and a resumed run picks up exactly where it stopped.
Cyclical schedules also report their ``low_points``: the step counts after
which a cycle ends, where snapshot ensembles and SWA collect weights.

Our closed forms agree with ``torch.optim.lr_scheduler`` (``CyclicLR``,
``OneCycleLR``, ``CosineAnnealingWarmRestarts``, ``StepLR``, ``ExponentialLR``;
tests/test_schedules.py checks it); those classes are stateful objects bound to
an optimizer, which cannot be previewed, plotted or resumed from a step count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "SGDR",
    "AnnealTo",
    "Constant",
    "CyclicalLR",
    "CyclicalLinear",
    "ExponentialDecay",
    "FinalCycles",
    "InverseTimeDecay",
    "OneCycle",
    "Phases",
    "RangeTest",
    "Schedule",
    "SlantedTriangular",
    "StepDecay",
    "get_schedule",
]


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


class Schedule:
    """Base class: override :meth:`factor`; optionally :meth:`momentum` and :meth:`low_points`."""

    def factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        raise NotImplementedError

    def momentum(self, step: int, steps_per_epoch: int, total_steps: int) -> float | None:
        """First-moment coefficient to use (Adam's beta1, SGD's momentum), or None to leave it."""
        return None

    def low_points(self, steps_per_epoch: int, total_steps: int) -> list[int]:
        """Step counts (batches done) at which a cycle ends; empty for non-cyclical schedules."""
        return []

    def simulate(self, epochs: int, steps_per_epoch: int, lr: float = 1.0) -> np.ndarray:
        """The learning rate of every step of a fit of ``epochs`` epochs."""
        total = epochs * steps_per_epoch
        return np.array([lr * self.factor(s, steps_per_epoch, total) for s in range(total)])

    def plot(self, epochs: int, steps_per_epoch: int, lr: float = 1.0, path=None):
        """Plot the preview (and the momentum, if cycled); save to ``path`` when given."""
        from tabembed.plotting import plot_schedule

        return plot_schedule(self, epochs, steps_per_epoch, lr=lr, path=path)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Schedule):
    def factor(self, step, steps_per_epoch, total_steps):
        return 1.0


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``every_epochs`` epochs (``StepLR``)."""

    def __init__(self, every_epochs: float = 10, gamma: float = 0.1):
        if every_epochs <= 0:
            raise ValueError(f"every_epochs must be positive, got {every_epochs=}")
        self.every_epochs, self.gamma = every_epochs, gamma

    def factor(self, step, steps_per_epoch, total_steps):
        return self.gamma ** math.floor(step / steps_per_epoch / self.every_epochs)


class ExponentialDecay(Schedule):
    """``exp(-rate * t)``, ``t`` in epochs (fractional)."""

    def __init__(self, rate: float = 0.1):
        self.rate = rate

    def factor(self, step, steps_per_epoch, total_steps):
        return math.exp(-self.rate * step / steps_per_epoch)


class InverseTimeDecay(Schedule):
    """``1 / (1 + rate * t)``, ``t`` in epochs (fractional)."""

    def __init__(self, rate: float = 1.0):
        self.rate = rate

    def factor(self, step, steps_per_epoch, total_steps):
        return 1.0 / (1.0 + self.rate * step / steps_per_epoch)


class CyclicalLR(Schedule):
    """Smith's cyclical learning rate between ``base_fraction`` and 1 of the peak rate.

    Parameters
    ----------
    base_fraction : float
        The lowest rate, as a fraction of the peak.
    step_size : int, optional
        Iterations in half a cycle; default ``4 * steps_per_epoch`` (Smith
        recommends 2-10 epochs).
    mode : {"triangular", "triangular2", "exp_range"}
    gamma : float
        ``exp_range`` scales the amplitude by ``gamma ** iteration``.
    """

    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, base_fraction: float = 0.1, step_size: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode=}")
        if not 0 <= base_fraction <= 1:
            raise ValueError(f"base_fraction must be in [0, 1], got {base_fraction=}")
        self.base_fraction, self.step_size, self.mode, self.gamma = (
            base_fraction, step_size, mode, gamma)

    def _step_size(self, steps_per_epoch):
        return self.step_size or 4 * steps_per_epoch

    def factor(self, step, steps_per_epoch, total_steps):
        size = self._step_size(steps_per_epoch)
        cycle = math.floor(1 + step / (2 * size))
        x = abs(step / size - 2 * cycle + 1)
        amplitude = (1 - self.base_fraction) * max(0.0, 1 - x)
        if self.mode == "triangular2":
            amplitude /= 2 ** (cycle - 1)
        elif self.mode == "exp_range":
            amplitude *= self.gamma ** step
        return self.base_fraction + amplitude

    def low_points(self, steps_per_epoch, total_steps):
        length = 2 * self._step_size(steps_per_epoch)
        return list(range(length, total_steps + 1, length))


class OneCycle(Schedule):
    """Warm up from ``1/div_factor`` of the peak to the peak, then anneal far below.

    The final rate is ``1 / (div_factor * final_div_factor)`` of the peak.

    Both phases follow a cosine; the momentum moves the other way, from
    ``momentums[0]`` down to ``momentums[1]`` at the peak and back. The same
    formula as ``torch.optim.lr_scheduler.OneCycleLR``; fastai's defaults.
    """

    def __init__(self, pct_start: float = 0.25, div_factor: float = 25.0,
                 final_div_factor: float = 1e5,
                 momentums: tuple[float, float] | None = (0.95, 0.85)):
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start=}")
        self.pct_start, self.div_factor, self.final_div_factor, self.momentums = (
            pct_start, div_factor, final_div_factor, momentums)

    def _phase(self, step, total_steps):
        """(fraction done of the current phase, whether it is the warm-up)."""
        warm_end = self.pct_start * total_steps - 1
        if step <= warm_end:
            return (step / warm_end if warm_end > 0 else 1.0), True
        return (step - warm_end) / (total_steps - 1 - warm_end), False

    def factor(self, step, steps_per_epoch, total_steps):
        start = 1 / self.div_factor
        fraction, warming = self._phase(step, total_steps)
        if warming:
            return _cosine(start, 1.0, fraction)
        return _cosine(1.0, start / self.final_div_factor, fraction)

    def momentum(self, step, steps_per_epoch, total_steps):
        if self.momentums is None:
            return None
        high, low = self.momentums
        fraction, warming = self._phase(step, total_steps)
        return _cosine(high, low, fraction) if warming else _cosine(low, high, fraction)


class SGDR(Schedule):
    """Cosine annealing with warm restarts (Loshchilov & Hutter).

    Cycle ``i`` lasts ``cycle_len * cycle_mult**i`` epochs: ``cycle_len=1,
    cycle_mult=2`` gives cycles of 1, 2, 4 epochs, 7 epochs for 3 cycles
    (:meth:`total_epochs`). The rate falls from the peak to
    ``min_fraction`` of it within each cycle, then restarts.
    """

    def __init__(self, cycle_len: float = 1, cycle_mult: int = 1, min_fraction: float = 0.0):
        if cycle_len <= 0 or cycle_mult < 1:
            raise ValueError(f"need cycle_len > 0 and cycle_mult >= 1, got {cycle_len=}, "
                             f"{cycle_mult=}")
        self.cycle_len, self.cycle_mult, self.min_fraction = cycle_len, cycle_mult, min_fraction

    def total_epochs(self, n_cycles: int) -> float:
        return sum(self.cycle_len * self.cycle_mult ** i for i in range(n_cycles))

    def _cycle(self, step, steps_per_epoch):
        """(steps into the current cycle, its length in steps)."""
        length = max(1, round(self.cycle_len * steps_per_epoch))
        while step >= length:
            step -= length
            length *= self.cycle_mult
        return step, length

    def factor(self, step, steps_per_epoch, total_steps):
        position, length = self._cycle(step, steps_per_epoch)
        return _cosine(1.0, self.min_fraction, position / length)

    def low_points(self, steps_per_epoch, total_steps):
        points, end = [], 0
        length = max(1, round(self.cycle_len * steps_per_epoch))
        while end + length <= total_steps:
            end += length
            points.append(end)
            length *= self.cycle_mult
        return points


class SlantedTriangular(Schedule):
    """ULMFiT's slanted triangle: a short linear rise, a long linear decay."""

    def __init__(self, cut_fraction: float = 0.1, ratio: float = 32):
        self.cut_fraction, self.ratio = cut_fraction, ratio

    def factor(self, step, steps_per_epoch, total_steps):
        cut = max(1, math.floor(total_steps * self.cut_fraction))
        if step < cut:
            p = step / cut
        else:
            p = 1 - (step - cut) / max(1, total_steps - cut)
        return (1 + p * (self.ratio - 1)) / self.ratio


class CyclicalLinear(Schedule):
    """Fast geometric ensembling's ``/\\/\\`` cycles (Garipov et al.).

    Each cycle of ``cycle_epochs`` epochs goes linearly from the peak to
    ``low_fraction`` of it at mid-cycle and back; the low point is where FGE
    collects a model.
    """

    def __init__(self, cycle_epochs: float = 2, low_fraction: float = 0.01):
        self.cycle_epochs, self.low_fraction = cycle_epochs, low_fraction

    def length(self, steps_per_epoch: int) -> int:
        """Steps in one cycle."""
        return max(2, round(self.cycle_epochs * steps_per_epoch))

    def factor(self, step, steps_per_epoch, total_steps):
        length = self.length(steps_per_epoch)
        t = (step % length + 1) / length
        if t <= 0.5:
            return (1 - 2 * t) + 2 * t * self.low_fraction
        return (2 - 2 * t) * self.low_fraction + (2 * t - 1)

    def low_points(self, steps_per_epoch, total_steps):
        length = self.length(steps_per_epoch)
        return [k * length + length // 2 for k in range(total_steps // length + 1)
                if k * length + length // 2 <= total_steps]


class Phases(Schedule):
    """Schedules one after another: ``Phases([(2, Constant()), (7, SGDR(1, 2))])``.

    Durations are in epochs; a duration of ``None`` (last phase only) takes
    the rest of the fit. Each phase sees its own steps and length.
    """

    def __init__(self, phases: Sequence[tuple[float | None, Schedule]]):
        if not phases:
            raise ValueError("Phases needs at least one phase")
        if any(duration is None for duration, _ in phases[:-1]):
            raise ValueError("only the last phase may have an open duration (None)")
        self.phases = list(phases)

    def _spans(self, steps_per_epoch, total_steps):
        start = 0
        for duration, schedule in self.phases:
            length = (total_steps - start if duration is None
                      else round(duration * steps_per_epoch))
            yield start, max(1, length), schedule
            start += length

    def _locate(self, step, steps_per_epoch, total_steps):
        spans = list(self._spans(steps_per_epoch, total_steps))
        for start, length, schedule in spans:
            if step < start + length:
                return start, length, schedule
        return spans[-1]

    def factor(self, step, steps_per_epoch, total_steps):
        start, length, schedule = self._locate(step, steps_per_epoch, total_steps)
        return schedule.factor(step - start, steps_per_epoch, length)

    def momentum(self, step, steps_per_epoch, total_steps):
        start, length, schedule = self._locate(step, steps_per_epoch, total_steps)
        return schedule.momentum(step - start, steps_per_epoch, length)

    def low_points(self, steps_per_epoch, total_steps):
        return [start + point for start, length, schedule in self._spans(steps_per_epoch,
                                                                          total_steps)
                for point in schedule.low_points(steps_per_epoch, length)]


def start_step(start: float | int, steps_per_epoch: int, total_steps: int) -> int:
    """The step where a phase starts: ``start`` is a fraction of the fit (a float in
    [0, 1)) or an epoch index (an int), rounded down to a whole epoch."""
    if isinstance(start, float):
        return math.floor(start * total_steps / steps_per_epoch) * steps_per_epoch
    return int(start) * steps_per_epoch


class AnnealTo(Schedule):
    """``base`` until ``start``, then a cosine anneal to ``target`` held to the end.

    SWA's constant-rate phase (the schedule of ``torch.optim.swa_utils.SWALR``):
    from the start step, the factor moves from the base schedule's value there
    to ``target`` over ``anneal_epochs`` epochs, then stays at ``target``.

    Parameters
    ----------
    base : Schedule
    start : float or int
        A fraction of the fit (0.75 = the last quarter) or an epoch index.
    target : float
        The final factor of the peak rate (SWA's ``swa_lr``).
    anneal_epochs : float
    """

    def __init__(self, base: Schedule, *, start: float | int = 0.75, target: float = 0.5,
                 anneal_epochs: float = 1):
        if isinstance(start, float) and not 0 <= start < 1:
            raise ValueError(f"a fractional start must be in [0, 1), got {start=}")
        if not target > 0:
            raise ValueError(f"target must be positive, got {target=}")
        if anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be >= 0, got {anneal_epochs=}")
        self.base, self.start, self.target, self.anneal_epochs = base, start, target, anneal_epochs

    def factor(self, step, steps_per_epoch, total_steps):
        begin = start_step(self.start, steps_per_epoch, total_steps)
        if step < begin:
            return self.base.factor(step, steps_per_epoch, total_steps)
        length = round(self.anneal_epochs * steps_per_epoch)
        if step - begin >= length:
            return self.target
        initial = self.base.factor(begin, steps_per_epoch, total_steps)
        return _cosine(initial, self.target, (step - begin) / length)

    def momentum(self, step, steps_per_epoch, total_steps):
        return self.base.momentum(step, steps_per_epoch, total_steps)

    def low_points(self, steps_per_epoch, total_steps):
        begin = start_step(self.start, steps_per_epoch, total_steps)
        return [p for p in self.base.low_points(steps_per_epoch, total_steps) if p <= begin]


class FinalCycles(Schedule):
    """``base``, then ``n_cycles`` cycles of ``cycle`` times ``peak`` at the end of the fit.

    Fast geometric ensembling's tail: the last ``n_cycles * cycle.cycle_epochs``
    epochs follow :class:`CyclicalLinear` between ``peak`` and ``peak *
    cycle.low_fraction`` of the peak rate; :meth:`low_points` are the tail's.
    """

    def __init__(self, base: Schedule, *, cycle: CyclicalLinear, n_cycles: int = 4,
                 peak: float = 0.1):
        if n_cycles < 1:
            raise ValueError(f"n_cycles must be at least 1, got {n_cycles=}")
        self.base, self.cycle, self.n_cycles, self.peak = base, cycle, n_cycles, peak

    def tail_start(self, steps_per_epoch: int, total_steps: int) -> int:
        start = total_steps - self.n_cycles * self.cycle.length(steps_per_epoch)
        if start < 0:
            raise ValueError(
                f"{self.n_cycles} final cycles of {self.cycle.cycle_epochs} epochs need more "
                f"than the {total_steps / steps_per_epoch:g} epochs of this fit"
            )
        return start

    def factor(self, step, steps_per_epoch, total_steps):
        start = self.tail_start(steps_per_epoch, total_steps)
        if step < start:
            return self.base.factor(step, steps_per_epoch, total_steps)
        return self.peak * self.cycle.factor(step - start, steps_per_epoch, total_steps - start)

    def momentum(self, step, steps_per_epoch, total_steps):
        return self.base.momentum(step, steps_per_epoch, total_steps)

    def low_points(self, steps_per_epoch, total_steps):
        start = self.tail_start(steps_per_epoch, total_steps)
        return [start + p for p in self.cycle.low_points(steps_per_epoch, total_steps - start)]


class RangeTest(Schedule):
    """The LR finder's sweep: the rate grows exponentially from ``start_lr`` to ``end_lr``
    over ``num_steps`` steps; factors are relative to ``end_lr`` (the fit's peak)."""

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100):
        if not 0 < start_lr < end_lr:
            raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr=}, {end_lr=}")
        if num_steps < 2:
            raise ValueError(f"num_steps must be at least 2, got {num_steps=}")
        self.start_lr, self.end_lr, self.num_steps = start_lr, end_lr, num_steps

    def factor(self, step, steps_per_epoch, total_steps):
        fraction = min(step, self.num_steps - 1) / (self.num_steps - 1)
        return (self.start_lr / self.end_lr) ** (1 - fraction)

    def rate(self, step: int) -> float:
        """The sweep's learning rate at ``step``."""
        return self.end_lr * self.factor(step, 1, self.num_steps)


_NAMED = {
    "constant": Constant, "step": StepDecay, "exponential": ExponentialDecay,
    "inverse_time": InverseTimeDecay, "cyclical": CyclicalLR, "one_cycle": OneCycle,
    "sgdr": SGDR, "slanted_triangular": SlantedTriangular, "cyclical_linear": CyclicalLinear,
}


def get_schedule(spec, **options) -> Schedule:
    """A schedule from an instance, or from one of the names in ``_NAMED`` plus options."""
    if isinstance(spec, Schedule):
        return spec
    if spec is None:
        return Constant()
    if spec not in _NAMED:
        raise ValueError(f"unknown schedule {spec!r}; use a Schedule or one of {sorted(_NAMED)}")
    return _NAMED[spec](**options)
