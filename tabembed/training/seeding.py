"""One seed per fit, the random streams derived from it, and the caller's generators untouched.

Under torchrun every rank must draw the same seed: :func:`draw_seed` takes rank
0's (the process group is joined before, by
:func:`tabembed.training.distributed.join_launched_group`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from tabembed.training import distributed

__all__ = ["Seeds", "draw_seed", "isolated_random_state"]


@dataclass(frozen=True)
class Seeds:
    """Independent streams derived from one seed per fit."""

    init: int       # the model's initial weights
    shuffle: int    # batch order and dropout (the Learner's random_state)
    split: int      # the validation split

    @classmethod
    def from_seed(cls, seed: int) -> Seeds:
        init, shuffle, split = np.random.SeedSequence(seed).generate_state(3)
        return cls(int(init), int(shuffle), int(split))


def draw_seed(random_state) -> int:
    """One integer seed per fit from ``random_state`` (None draws fresh entropy; every rank
    of a process group gets rank 0's)."""
    if random_state is None:
        return distributed.shared_seed(int(np.random.SeedSequence().generate_state(1)[0]))
    if isinstance(random_state, np.random.RandomState):
        return distributed.shared_seed(int(random_state.randint(0, 2**31 - 1)))
    if isinstance(random_state, np.random.Generator):
        return distributed.shared_seed(int(random_state.integers(0, 2**31 - 1)))
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state)
    raise ValueError(f"random_state must be None, an int, a numpy RandomState or Generator, "
                     f"got {random_state!r}")


@contextlib.contextmanager
def isolated_random_state():
    """Seed freely inside; the caller's global torch generators are left as they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
