"""Figures people would rather look at than read. Needs matplotlib (``pip install tabembed[plot]``).

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so
nothing here touches global backend state and it works on headless machines.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _figure(width: float = 6.0, height: float = 4.0):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:   # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'tabembed[plot]'"
        ) from error
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, path) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=path.suffix or ".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def plot_lr_find(result, path=None):
    figure = _figure()
    axes = figure.subplots()
    axes.plot(result.lrs, result.losses)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("smoothed training loss")
    axes.set_title("LR finder")
    markers = {"valley": "o", "steepest": "s", "minimum": "^"}
    for name, lr in result.suggestions.items():
        index = int(np.argmin(np.abs(np.log(result.lrs) - np.log(lr))))
        axes.plot(result.lrs[index], result.losses[index], markers.get(name, "x"),
                  label=f"{name}: {lr:.2e}")
    if result.suggestions:
        axes.legend()
    _save(figure, path)
    return figure


def plot_schedule(schedule, epochs: int, steps_per_epoch: int, lr: float = 1.0, path=None):
    total = epochs * steps_per_epoch
    steps = np.arange(total)
    figure = _figure()
    axes = figure.subplots()
    axes.plot(steps / steps_per_epoch, schedule.simulate(epochs, steps_per_epoch, lr=lr))
    axes.set_xlabel("epoch")
    axes.set_ylabel("learning rate")
    axes.set_title(repr(schedule))
    for point in schedule.low_points(steps_per_epoch, total):
        axes.axvline(point / steps_per_epoch, color="grey", linewidth=0.5, linestyle=":")
    momentum = [schedule.momentum(s, steps_per_epoch, total) for s in steps]
    if momentum and momentum[0] is not None:
        twin = axes.twinx()
        twin.plot(steps / steps_per_epoch, momentum, color="tab:orange", linestyle="--")
        twin.set_ylabel("momentum", color="tab:orange")
    _save(figure, path)
    return figure


def plot_history(history, path=None):
    figure = _figure(9.0, 4.0)
    left, right = figure.subplots(1, 2)
    if history.batch_losses:
        left.plot(history.batch_losses, linewidth=0.5, alpha=0.6)
        left.set_xlabel("batch")
        left.set_ylabel("training loss")
        left.set_title("batch losses")
    frame = history.to_frame()
    if len(frame):
        for column in ("train_loss", "valid_loss"):
            if column in frame:
                right.plot(frame["epoch"], frame[column], marker="o", label=column)
        right.set_xlabel("epoch")
        right.set_ylabel("loss")
        right.legend()
        right.set_title("epoch losses")
    _save(figure, path)
    return figure


def plot_embeddings(vectors, labels=None, path=None, title: str = "embeddings (PCA)"):
    """2-D projection (PCA) of embedding vectors, with optional labels."""
    vectors = np.asarray(vectors, dtype=np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T if vectors.shape[1] >= 2 else np.c_[centred, 0 * centred]
    figure = _figure(6.0, 6.0)
    axes = figure.subplots()
    axes.scatter(points[:, 0], points[:, 1], s=12)
    if labels is not None:
        for (x, y), label in zip(points, labels):
            axes.annotate(str(label), (x, y), fontsize=7)
    axes.set_title(title)
    _save(figure, path)
    return figure
