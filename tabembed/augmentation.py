"""``augmentation=`` of the MLP estimators: training-only input noise, as option objects.

``SwapNoise(rate=0.15)`` replaces each cell, with probability ``rate``, by the
same column's value in another row of the batch; ``Mixup(alpha=0.2)`` mixes the
encoded inputs (and the loss's targets) of two rows with ``Beta(alpha, alpha)``
weights. Both are off at prediction time. ``"swap_noise"`` and ``"mixup"`` name
them with their default settings; a list holds both. The network's own modules
are :class:`tabembed.models.augmentation.SwapNoise` and
:class:`~tabembed.models.augmentation.EmbeddingMixup`; these objects only
describe them, so that a model file can record them (:data:`OPTION_CLASSES
<tabembed.estimators.parameters.OPTION_CLASSES>`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Mixup", "SwapNoise"]


@dataclass(frozen=True)
class SwapNoise:
    """Each cell replaced, with probability ``rate``, by its column's value in another row
    of the batch (training only)."""

    rate: float = 0.15

    def __post_init__(self):
        if not (isinstance(self.rate, int | float) and not isinstance(self.rate, bool)
                and 0 <= self.rate < 1):
            raise ValueError(f"SwapNoise: rate must be a number in [0, 1), got {self.rate!r}")


@dataclass(frozen=True)
class Mixup:
    """Mixup of the encoded inputs with ``Beta(alpha, alpha)`` weights (training only)."""

    alpha: float = 0.2

    def __post_init__(self):
        if not (isinstance(self.alpha, int | float) and not isinstance(self.alpha, bool)
                and math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"Mixup: alpha must be a finite number >= 0, got {self.alpha!r}")


AUGMENTATION_NAMES = {"swap_noise": SwapNoise, "mixup": Mixup}


def _parts(augmentation) -> list:
    if augmentation is None:
        return []
    if isinstance(augmentation, list | tuple):
        return [part for item in augmentation for part in _parts(item)]
    if isinstance(augmentation, str) and augmentation in AUGMENTATION_NAMES:
        return [AUGMENTATION_NAMES[augmentation]()]
    if isinstance(augmentation, SwapNoise | Mixup):
        return [augmentation]
    raise ValueError(f"augmentation must be None, 'swap_noise', 'mixup', SwapNoise(rate=...), "
                     f"Mixup(alpha=...) or a list of them; got {augmentation!r}")


def is_augmentation(value) -> bool:
    """Whether ``value`` is a valid ``augmentation=`` (at most one of each kind)."""
    try:
        parts = _parts(value)
    except ValueError:
        return False
    if isinstance(value, list | tuple) and any(isinstance(v, list | tuple) for v in value):
        return False
    kinds = [type(part) for part in parts]
    return len(kinds) == len(set(kinds))


def augmentation_rates(augmentation) -> dict:
    """``{"swap_noise": rate, "mixup_alpha": alpha}`` of an ``augmentation=`` value (0: off):
    the network's constructor arguments."""
    rates = {"swap_noise": 0.0, "mixup_alpha": 0.0}
    for part in _parts(augmentation):
        if isinstance(part, SwapNoise):
            rates["swap_noise"] = float(part.rate)
        else:
            rates["mixup_alpha"] = float(part.alpha)
    return rates


def augmentation_from_rates(swap_noise: float, mixup_alpha: float):
    """The ``augmentation=`` value of the retired ``swap_noise``/``mixup_alpha`` pair."""
    parts = ([SwapNoise(rate=swap_noise)] if swap_noise else []) + \
        ([Mixup(alpha=mixup_alpha)] if mixup_alpha else [])
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts
