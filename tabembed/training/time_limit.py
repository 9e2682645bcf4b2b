"""A fit's time budget (``time_limit=`` of the MLP estimators): a deadline, and the
callback that ends training at the first epoch end past it.

:data:`clock` is read through this module, so a test can replace it
(``monkeypatch.setattr(time_limit, "clock", fake)``) and never sleep.
"""

from __future__ import annotations

import time

from tabembed.training.callbacks import Callback

__all__ = ["Deadline", "StopAtDeadline", "clock"]

clock = time.monotonic

STOP_REASON = "time limit"


class Deadline:
    """``seconds`` from now (by :data:`clock`); None never passes."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = clock()
        self.end = None if seconds is None else self.start + float(seconds)

    def remaining(self) -> float:
        return float("inf") if self.end is None else self.end - clock()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def elapsed(self) -> float:
        return clock() - self.start


class StopAtDeadline(Callback):
    """Stop the loop at the end of the first epoch that ends past ``deadline``; the
    epoch's weights (or what averaging and early stopping make of them) are kept.
    ``stopped``: whether it cut training short (the last epoch ends the loop anyway)."""

    order = 30      # after averaging and early stopping, which finish the epoch's bookkeeping

    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.stopped = False

    def on_epoch_end(self, learner) -> None:
        last = learner.epoch + 1 >= learner.epochs
        if not learner.stop_training and not last and self.deadline.passed():
            self.stopped = True
            learner.stop(f"{STOP_REASON}: {self.deadline.seconds:g} s spent")
