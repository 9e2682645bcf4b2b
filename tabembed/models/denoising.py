"""Self-supervised pretraining of an EntityEmbeddingMLP: a denoising autoencoder.

Rows are corrupted with swap noise and the model's own embeddings and body
must reconstruct every original category code (cross-entropy per column)
and every continuous value (squared error). The target is the clean row
itself, packed as ``[codes as floats | continuous]`` (:func:`clean_target`),
so the training loop sees an ordinary ``(inputs..., target)`` batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from tabembed.models.augmentation import SwapNoise
from tabembed.models.layers import init_linear


def clean_target(codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
    """The reconstruction target of :class:`ReconstructionLoss`: ``[n, n_cat + n_cont]``."""
    return torch.cat([codes.to(continuous.dtype), continuous], dim=1)


class DenoisingAutoencoder(nn.Module):
    """The embeddings and body of ``model`` (shared, not copied) with reconstruction heads.

    Parameters
    ----------
    model : EntityEmbeddingMLP
        Its ``encode`` and ``body`` are trained; its head is not used.
    swap_noise : float
        Fraction of cells swapped with another row's value before encoding.
    """

    def __init__(self, *, model: nn.Module, swap_noise: float = 0.15):
        super().__init__()
        self.model = model
        self.corruption = SwapNoise(p=swap_noise)
        self.cardinalities = [e.num_embeddings for e in model.embeddings.embeddings]
        d = model.body.d_out
        self.category_head = (init_linear(nn.Linear(d, sum(self.cardinalities)))
                              if self.cardinalities else None)
        self.continuous_head = (init_linear(nn.Linear(d, model.n_continuous))
                                if model.n_continuous else None)

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        hidden = self.model.body(self.model.encode(self.corruption(codes),
                                                   self.corruption(continuous)))
        parts = [head(hidden) for head in (self.category_head, self.continuous_head)
                 if head is not None]
        return torch.cat(parts, dim=1)

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList([self.model.embeddings, self.model.continuous_norm]),
                self.model.body,
                nn.ModuleList([h for h in (self.category_head, self.continuous_head)
                               if h is not None])]


class ReconstructionLoss(nn.Module):
    """Mean over columns of cross-entropy (categorical) and squared error (continuous).

    ``output`` is :class:`DenoisingAutoencoder`'s ``[n, sum(cardinalities) + n_cont]``;
    ``target`` is :func:`clean_target`'s ``[n, n_cat + n_cont]``.
    """

    def __init__(self, cardinalities, n_continuous: int):
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.n_continuous = n_continuous

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_categorical = len(self.cardinalities)
        logits = torch.split(output[:, :sum(self.cardinalities)], self.cardinalities, dim=1)
        total = output.new_zeros(())
        for j, column_logits in enumerate(logits):
            total = total + functional.cross_entropy(column_logits, target[:, j].long())
        if self.n_continuous:
            squared = (output[:, sum(self.cardinalities):] - target[:, n_categorical:]) ** 2
            total = total + squared.mean(dim=0).sum()
        return total / (n_categorical + self.n_continuous)
