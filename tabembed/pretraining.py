"""Pretrain an EntityEmbeddingMLP on unlabeled rows, then fine-tune it on labels.

1. :func:`pretrain`: a denoising autoencoder (swap noise; reconstruct every
   code and value, :mod:`tabembed.models.denoising`) trains the model's
   embeddings and body in place on all rows, labelled or not.
2. :func:`fine_tune`: the head alone first (body and embeddings frozen), then
   one more layer group unfreezes each epoch (:class:`Unfreezing`) with
   discriminative rates, fastai's ``fine_tune`` convention: the head's rate
   halved, each earlier group ``lr_ratio`` times lower than the next.

Both run the ordinary :class:`~tabembed.training.learner.Learner` (LR finder
"minimum", one-cycle, EMA as the estimators) and return a log of which groups
trained at which peak rate in each epoch (:class:`ScheduleLog`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tabembed.models.denoising import DenoisingAutoencoder, ReconstructionLoss, clean_target
from tabembed.training.averaging import EMA
from tabembed.training.callbacks import Callback
from tabembed.training.learner import Learner
from tabembed.training.schedules import get_schedule

__all__ = ["ScheduleLog", "Unfreezing", "fine_tune", "pretrain"]

LAYER_GROUP_NAMES = ("embeddings", "body", "head")


class Unfreezing(Callback):
    """Epoch ``e`` of a fit trains the last ``start + e`` layer groups (ULMFiT's gradual
    unfreezing, started ``start`` groups deep: ``start=2`` after a head-only phase)."""

    order = -20

    def __init__(self, start: int = 1):
        if start < 1:
            raise ValueError(f"start must be at least 1, got {start=}")
        self.start = start

    def on_epoch_begin(self, learner) -> None:
        # The loop sets train/eval modes after this event, so batch norm follows
        # the new freezing in this very epoch.
        learner.freeze_to(max(0, len(learner.layer_groups) - self.start - learner.epoch))


class ScheduleLog(Callback):
    """Per epoch: the phase, the trainable layer groups and each group's peak learning rate."""

    order = 40

    def __init__(self, phase: str, records: list | None = None):
        self.phase = phase
        self.records = [] if records is None else records

    def on_epoch_begin(self, learner) -> None:
        self.peaks = {}

    def on_batch_end(self, learner) -> None:
        for group in learner.optimizer.param_groups:
            index = group.get("layer_group", 0)
            self.peaks[index] = max(self.peaks.get(index, 0.0), group["lr"])

    def on_epoch_end(self, learner) -> None:
        n_groups = len(learner.layer_groups)
        names = (LAYER_GROUP_NAMES if n_groups == 3 else
                 tuple(f"group {i}" for i in range(n_groups)))
        self.records.append({
            "phase": self.phase, "epoch": learner.epoch + 1,
            "trainable": [names[i] for i in range(learner.frozen_groups, n_groups)],
            "peak_lr": {names[i]: self.peaks.get(i, 0.0) for i in range(n_groups)},
            "train_loss": learner.history.records[-1]["train_loss"],
        })


def _rate(learner, lr) -> float:
    if isinstance(lr, str):
        return learner.lr_find().suggestions.get(lr, 1e-3)
    return float(lr)


def pretrain(model: nn.Module, codes: torch.Tensor, continuous: torch.Tensor, *,
             epochs: int = 10, swap_noise: float = 0.15, batch_size: int = 512,
             lr="minimum", weight_decay: float = 0.01, random_state: int | None = None,
             log: list | None = None) -> Learner:
    """Train ``model``'s embeddings and body in place to denoise rows ``(codes, continuous)``.

    Returns the Learner of the autoencoder (its history holds the reconstruction loss).
    """
    autoencoder = DenoisingAutoencoder(model=model, swap_noise=swap_noise)
    loss = ReconstructionLoss(autoencoder.cardinalities, model.n_continuous)
    learner = Learner(autoencoder, loss, (codes, continuous, clean_target(codes, continuous)),
                      weight_decay=weight_decay, batch_size=batch_size,
                      random_state=random_state, device=next(model.parameters()).device)
    rate = _rate(learner, lr)
    learner.fit(epochs, rate, schedule=get_schedule("one_cycle"),
                callbacks=[ScheduleLog("pretrain", log)])
    return learner


def fine_tune(model: nn.Module, loss: nn.Module, train, *, head_epochs: int = 1,
              epochs: int = 8, lr="minimum", lr_ratio: float = 10.0, batch_size: int = 256,
              weight_decay: float = 0.01, ema_decay: float | None = 0.999,
              random_state: int | None = None, output_activation=None,
              log: list | None = None) -> Learner:
    """Head first (the rest frozen), then gradual unfreezing with discriminative rates.

    Parameters
    ----------
    model : nn.Module with ``layer_groups()`` (embeddings, body, head)
    loss : the task's loss
    train : tuple of tensors ``(codes, continuous, target)``
    head_epochs : int
        Epochs training the head alone, at the LR finder's rate for the frozen model.
    epochs : int
        Epochs of the second phase: one more group unfreezes each epoch.
    lr_ratio : float
        Each layer group's rate is this many times lower than the next one's.
    """
    callbacks = [EMA(decay=ema_decay)] if ema_decay else []
    learner = Learner(model, loss, train, weight_decay=weight_decay, batch_size=batch_size,
                      random_state=random_state, callbacks=callbacks,
                      output_activation=output_activation,
                      device=next(model.parameters()).device)
    learner.freeze()
    rate = _rate(learner, lr)
    learner.fit(head_epochs, rate, schedule=get_schedule("one_cycle"),
                callbacks=[ScheduleLog("head", log)])
    n_groups = len(learner.layer_groups)
    top = rate / 2
    rates = [top / lr_ratio ** (n_groups - 1 - i) for i in range(n_groups)]
    learner.fit(epochs, rates, schedule=get_schedule("one_cycle"),
                callbacks=[Unfreezing(start=2), ScheduleLog("unfreeze", log)])
    learner.fitted_lr = float(np.max(rates))
    learner.unfreeze()
    return learner
