"""Fold-in: a new user's vector and bias fitted to the items they picked, the model fixed.

As ``recalculate_user=True`` in the ``implicit`` package: no retraining, a few
hundred Adam steps on ``factors @ vector + bias``. Implicit feedback fits the
full softmax over the catalogue; ratings fit their squared error.
"""

from __future__ import annotations

import numpy as np
import torch

from tabembed.models import DotBias
from tabembed.recommenders.scoring import GridScorer
from tabembed.training import optimizers

__all__ = ["fold_in_logits"]

STEPS = 200
LEARNING_RATE = 0.05


def fold_in_logits(scorer: GridScorer, positions: np.ndarray, *, ratings=None,
                   implicit: bool, strength: float) -> torch.Tensor:
    """Item logits ``[n_items]`` (before the output range) of a user fitted to the item
    ``positions`` (and their ``ratings``), every other weight fixed; ``strength`` is the L2
    penalty on the new vector and bias. Explicit feedback without ratings: the prior."""
    model = scorer.model
    if not isinstance(model, DotBias):
        raise ValueError("recommend_for_items (fold-in) needs model='dot': a neural "
                         "model's user vector enters its MLP, with no closed role to refit")
    device = scorer.device
    base, factors = scorer.unknown_user_logits()
    if ratings is None and not implicit:
        return base
    positions = torch.as_tensor(positions, dtype=torch.long, device=device)
    vector = torch.zeros(factors.shape[1], device=device, requires_grad=True)
    bias = torch.zeros((), device=device, requires_grad=True)
    optimizer = optimizers.Adam([vector, bias], lr=LEARNING_RATE)
    target = None if ratings is None else torch.tensor(np.asarray(ratings),
                                                       dtype=torch.float32, device=device)
    with torch.enable_grad():
        for _ in range(STEPS):
            logits = base + factors @ vector + bias
            if target is None:      # the full softmax over the catalogue
                loss = -torch.log_softmax(logits, dim=0)[positions].mean()
            else:
                loss = torch.mean((model.output_range(logits[positions]) - target) ** 2)
            loss = loss + strength * (vector.pow(2).sum() + bias.pow(2))
            optimizer.zero_grad()
            loss.backward()
            optimizers.step(optimizer)
    return (base + factors @ vector + bias).detach()
