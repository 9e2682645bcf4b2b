"""Training-time augmentation for tables, as modules that are the identity in eval mode.

- :class:`SwapNoise`: each cell is, with probability ``p``, replaced by the
  same column's value in another row of the batch (Porto Seguro's winning
  denoising recipe). Values stay valid codes and each column's marginal
  distribution is kept, unlike Gaussian noise on a category code.
- :class:`EmbeddingMixup`: mixup (Zhang et al., 2018) of the encoded inputs
  (embeddings and numeric encodings, before the body). The target must be
  mixed the same way: the module records ``(lam, permutation)`` of its last
  training forward and :class:`MixupLoss` reads it, so the training loop
  needs no hook and never learns that mixup exists.
"""

from __future__ import annotations

import torch
from torch import nn


class SwapNoise(nn.Module):
    """Replace each cell, with probability ``p``, by the same column's value in a random row."""

    def __init__(self, *, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"swap noise p must be in [0, 1), got {p=}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.shape[0] < 2 or x.shape[1] == 0:
            return x
        n, d = x.shape
        rows = torch.randint(0, n, (n, d), device=x.device)
        swapped = torch.gather(x, 0, rows)
        mask = torch.rand((n, d), device=x.device) < self.p
        return torch.where(mask, swapped, x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EmbeddingMixup(nn.Module):
    """Mix each row's encoding with another row's: ``lam * h + (1 - lam) * h[perm]``.

    ``lam`` is drawn from ``Beta(alpha, alpha)`` once per batch and folded to
    ``max(lam, 1 - lam)`` so the row keeps its own label as the larger part.
    """

    def __init__(self, *, alpha: float):
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"mixup alpha must be non-negative, got {alpha=}")
        self.alpha = float(alpha)
        self.mixing: tuple[float, torch.Tensor] | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.mixing = None
        if not self.training or self.alpha == 0 or h.shape[0] < 2:
            return h
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        lam = max(lam, 1 - lam)
        permutation = torch.randperm(h.shape[0], device=h.device)
        self.mixing = (lam, permutation)
        return lam * h + (1 - lam) * h[permutation]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class MixupLoss(nn.Module):
    """``lam * loss(output, y) + (1 - lam) * loss(output, y[perm])`` after a mixed forward
    (sample weights, when given, follow their rows the same way).

    Any other time (eval mode, alpha 0) it is ``loss(output, y)``. ``mixup`` is
    the model's :class:`EmbeddingMixup`; each mixing is used once, so a
    validation pass after a training step is never mixed by accident.
    """

    def __init__(self, loss: nn.Module, mixup: EmbeddingMixup):
        super().__init__()
        self.loss = loss
        self.mixup = mixup

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        mixing, self.mixup.mixing = self.mixup.mixing, None
        if mixing is None:
            return self._loss(output, target, weight)
        lam, permutation = mixing
        partner_weight = None if weight is None else weight[permutation]
        return (lam * self._loss(output, target, weight)
                + (1 - lam) * self._loss(output, target[permutation], partner_weight))

    def _loss(self, output, target, weight):
        # Two arguments when unweighted, so plain two-argument losses work too.
        return self.loss(output, target) if weight is None else self.loss(output, target, weight)
