"""Figures people would rather look at than read. Needs matplotlib (``pip install tabembed[plot]``).

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so
nothing here touches global backend state and it works on headless machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tabembed._io import atomic_write


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
    # The format comes from the destination's suffix, not the temporary file's.
    fmt = path.suffix[1:].lower() or "png"
    atomic_write(path, lambda stream: figure.savefig(stream, dpi=110, format=fmt))


_SUGGESTION_LABELS = {"valley": "valley", "steepest": "steepest descent",
                      "minimum": "minimum / 10"}


def plot_lr_find(result, path=None):
    """Smoothed loss against the rate, the suggestions marked, and the rate used."""
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
                  label=f"{_SUGGESTION_LABELS.get(name, name)}: {lr:.2e}")
    if getattr(result, "used", None) is not None:
        axes.axvline(result.used, color="tab:red", linestyle="--",
                     label=f"used for training: {result.used:.2e}")
    if result.suggestions or getattr(result, "used", None) is not None:
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
    """Losses (every batch, and per epoch for training and validation data), validation
    metrics when there are any, and the learning rate of every step."""
    frame = history.to_frame()
    metrics = [c for c in frame.columns
               if c not in ("epoch", "train_loss", "valid_loss", "lr", "time")]
    panels = 2 + bool(metrics)
    figure = _figure(4.0 * panels, 3.6)
    axes = figure.subplots(1, panels)
    losses = axes[0]
    if history.batch_losses:
        per_epoch = len(history.batch_losses) / max(len(frame), 1)
        steps = (np.arange(len(history.batch_losses)) + 1) / per_epoch
        losses.plot(steps, history.batch_losses, linewidth=0.5, alpha=0.4, color="tab:blue",
                    label="training (each batch)")
    for column, style in (("train_loss", "o-"), ("valid_loss", "s-")):
        if column in frame:
            name = "training" if column == "train_loss" else "validation"
            losses.plot(frame["epoch"], frame[column], style, label=f"{name} (epoch)")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.set_title("losses")
    losses.legend()
    if metrics:
        for column in metrics:
            axes[1].plot(frame["epoch"], frame[column], "o-", label=column)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("validation metric")
        axes[1].set_title("validation metrics")
        axes[1].legend()
    rates = axes[-1]
    if history.batch_lrs:
        per_epoch = len(history.batch_lrs) / max(len(frame), 1)
        rates.plot(np.arange(len(history.batch_lrs)) / per_epoch, history.batch_lrs)
    elif "lr" in frame:
        rates.plot(frame["epoch"], frame["lr"], "o-")
    rates.set_xlabel("epoch")
    rates.set_ylabel("learning rate")
    rates.set_title("learning rate")
    _save(figure, path)
    return figure


def plot_embeddings(vectors, labels=None, path=None, title: str = "embeddings (PCA)"):
    """2-D projection (PCA) of embedding vectors, with optional labels."""
    vectors = np.asarray(vectors, dtype=np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(float((singular**2).sum()), 1e-300)
    if vectors.shape[1] >= 2:
        points = centred @ components[:2].T
    else:
        points = np.c_[centred, 0 * centred]
        variance = np.r_[variance, 0.0]
    figure = _figure(6.0, 6.0)
    axes = figure.subplots()
    axes.scatter(points[:, 0], points[:, 1], s=12)
    if labels is not None:
        for (x, y), label in zip(points, labels):
            axes.annotate(str(label), (x, y), fontsize=7)
    axes.set_xlabel(f"PC1 ({variance[0]:.0%} of variance)")
    axes.set_ylabel(f"PC2 ({variance[1]:.0%} of variance)")
    axes.set_title(title)
    _save(figure, path)
    return figure
