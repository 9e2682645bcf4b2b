"""Column statistics that can be accumulated over record batches.

Fitting a preprocessor over data larger than memory needs value counts,
means, standard deviations and medians computed batch by batch. Counts and
moments merge exactly (Chan et al.'s parallel variance update). The median is
also exact: a second pass histograms each column into ``MEDIAN_BINS`` bins
between its minimum and maximum, and a third pass keeps only the values that
fall into the bins holding the middle rank(s). Memory stays bounded by the
number of bins plus the occupancy of those bins. Quantiles for quantile
scaling are read off the same histograms, within one bin width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

MEDIAN_BINS = 1 << 16


class Moments:
    """Count, mean, sum of squared deviations, min, max and missing count of one column."""

    __slots__ = ("count", "maximum", "mean", "minimum", "missing", "squares")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.squares = 0.0
        self.minimum = np.inf
        self.maximum = -np.inf
        self.missing = 0

    def update(self, values: np.ndarray) -> None:
        present = values[~np.isnan(values)]
        self.missing += len(values) - len(present)
        n = len(present)
        if n == 0:
            return
        mean = float(present.mean())
        squares = float(((present - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.squares += squares + delta * delta * self.count * n / total
        self.count = total
        self.minimum = min(self.minimum, float(present.min()))
        self.maximum = max(self.maximum, float(present.max()))

    def filled(self, value: float) -> tuple[float, float]:
        """Mean and population std after every missing entry is replaced by ``value``."""
        total = self.count + self.missing
        mean = (self.count * self.mean + self.missing * value) / total
        squares = (self.squares + self.count * (self.mean - mean) ** 2
                   + self.missing * (value - mean) ** 2)
        return mean, float(np.sqrt(max(squares, 0.0) / total))


def column_histograms(
    batches: Callable[[], Iterator[dict[str, np.ndarray]]],
    moments: dict[str, Moments],
) -> dict[str, np.ndarray]:
    """``MEDIAN_BINS``-bin histograms of each column between its minimum and maximum (one pass)."""
    columns = [c for c, m in moments.items() if m.count > 0]
    histograms = {c: np.zeros(MEDIAN_BINS, dtype=np.int64) for c in columns}
    for batch in batches():
        for c in columns:
            values = batch[c][~np.isnan(batch[c])]
            histograms[c] += np.bincount(_bin_of(moments[c], values), minlength=MEDIAN_BINS)
    return histograms


def _bin_of(moment: Moments, values: np.ndarray) -> np.ndarray:
    low, high = moment.minimum, moment.maximum
    if high == low:
        return np.zeros(len(values), dtype=np.int64)
    scaled = (values - low) / (high - low) * MEDIAN_BINS
    return np.clip(scaled.astype(np.int64), 0, MEDIAN_BINS - 1)


def exact_medians(
    batches: Callable[[], Iterator[dict[str, np.ndarray]]],
    moments: dict[str, Moments],
    histograms: dict[str, np.ndarray],
) -> dict[str, float]:
    """Exact medians (NaN skipped) of float columns, from one more pass over ``batches``.

    ``batches()`` must start a fresh pass each call and yield ``{column: values}``.
    """
    columns = list(histograms)
    medians = {c: float("nan") for c in moments if c not in columns}
    if not columns:
        return medians
    # The median averages the values of ranks (n-1)//2 and n//2 (0-based).
    wanted = {}
    for c in columns:
        n = moments[c].count
        cumulative = np.cumsum(histograms[c])
        ranks = ((n - 1) // 2, n // 2)
        bins = [int(np.searchsorted(cumulative, r, side="right")) for r in ranks]
        before = [int(cumulative[b] - histograms[c][b]) for b in bins]
        wanted[c] = (bins, [r - s for r, s in zip(ranks, before)])
    kept: dict[str, list[list[np.ndarray]]] = {c: [[], []] for c in columns}
    for batch in batches():
        for c in columns:
            values = batch[c][~np.isnan(batch[c])]
            where = _bin_of(moments[c], values)
            for slot, b in enumerate(wanted[c][0]):
                kept[c][slot].append(values[where == b])
    for c in columns:
        picks = []
        for slot, offset in enumerate(wanted[c][1]):
            inside = np.sort(np.concatenate(kept[c][slot]))
            picks.append(inside[offset])
        medians[c] = float((picks[0] + picks[1]) / 2)
    return medians


def histogram_quantiles(histogram: np.ndarray, moment: Moments, levels: np.ndarray) -> np.ndarray:
    """Quantiles at ``levels`` read off a histogram, interpolating inside bins.

    Approximate: each value is within one bin width, ``(max - min) / MEDIAN_BINS``,
    of the exact quantile. Used for quantile scaling, where that is far finer
    than the ~1/1000 resolution of the mapping itself.
    """
    low, high = moment.minimum, moment.maximum
    if high == low:
        return np.full(len(levels), low)
    cumulative = np.cumsum(histogram).astype(np.float64)
    ranks = levels * (cumulative[-1] - 1)
    bins = np.searchsorted(cumulative, ranks, side="right")
    bins = np.clip(bins, 0, MEDIAN_BINS - 1)
    before = cumulative[bins] - histogram[bins]
    within = np.where(histogram[bins] > 0, (ranks - before + 0.5) / np.maximum(histogram[bins], 1),
                      0.5)
    width = (high - low) / MEDIAN_BINS
    values = low + (bins + np.clip(within, 0, 1)) * width
    values[0], values[-1] = low, high
    return np.maximum.accumulate(values)


def merge_counts(total: dict, counts: pd.Series) -> None:
    """Add one batch's value counts into ``total`` (a dict value -> count)."""
    for value, count in zip(counts.index.tolist(), counts.to_numpy().tolist()):
        total[value] = total.get(value, 0) + count
