"""How continuous values are scaled: standard, quantile (to a normal) or robust
(median and interquartile range, then a smooth clip, as RealMLP scales)."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

__all__ = ["SCALINGS", "SMOOTH_CLIP", "robust_center_scale", "smooth_clip", "to_normal"]

SCALINGS = ("standard", "quantile", "robust", None)
# Robust scaling's smooth clip: x / sqrt(1 + (x / SMOOTH_CLIP) ** 2) stays within +-3.
SMOOTH_CLIP = 3.0


def smooth_clip(values: np.ndarray) -> np.ndarray:
    """Squash robustly scaled values into (-3, 3), near the identity around 0."""
    return values / np.sqrt(1.0 + (values / SMOOTH_CLIP) ** 2)


def robust_center_scale(median: float, quantiles: np.ndarray) -> tuple[float, float]:
    """Center and scale of ``"robust"`` scaling: the median and the interquartile range;
    half the range where the quartiles tie (a mostly constant column), 1 for a constant.
    The quantiles come from a histogram of 65,536 bins, so quartiles within a few bins of
    each other count as tied."""
    levels = np.linspace(0, 1, len(quantiles))
    low, high = np.interp([0.25, 0.75], levels, quantiles)
    scale, spread = high - low, quantiles[-1] - quantiles[0]
    if not scale > max(1e-12, 1e-4 * spread):
        scale = spread / 2
    return float(median), float(scale) if scale > 1e-12 else 1.0


def to_normal(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Map values through the training CDF to a standard normal (ties get their mean rank)."""
    levels = np.linspace(0, 1, len(quantiles))
    # Interpolating both ways and averaging gives tied reference values their mid rank.
    rank = 0.5 * (np.interp(values, quantiles, levels)
                  - np.interp(-values, -quantiles[::-1], -levels[::-1]))
    return ndtri(np.clip(rank, 1e-7, 1 - 1e-7))
