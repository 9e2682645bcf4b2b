"""k members in one model: TabM-mini (Gorishniy et al., 2024, "TabM: Advancing Tabular
Deep Learning with Parameter-Efficient Ensembling"), BatchEnsemble-style.

The members share the embeddings and the body. Each member ``j`` scales the
body's input by its own vector ``r_j`` (the one adapter of TabM-mini) and has a
head of its own, so a batch of ``n`` rows trains as ``n * k`` rows in one pass.
Outputs are ``[n, k, d_out]``; :func:`tabembed.models.heads.loss_for_task`
averages the k losses and :func:`~tabembed.models.heads.predictions_from_output`
averages the k predictions after the activation, so the loop never knows.
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER_INITS = ("random_signs", "ones")


class MemberScaling(nn.Module):
    """``[n, d] -> [n, k, d]``: row ``i`` of member ``j`` is ``x_i * r_j``.

    ``init="random_signs"`` draws each ``r_j`` from {-1, +1} (TabM-mini: it makes
    the members differ from the first step); ``"ones"`` makes them start equal.
    """

    def __init__(self, *, n_members: int, d: int, init: str = "random_signs"):
        super().__init__()
        if n_members < 1 or d < 1:
            raise ValueError(f"sizes must be positive: {n_members=}, {d=}")
        if init not in ADAPTER_INITS:
            raise ValueError(f"init must be one of {ADAPTER_INITS}, got {init=}")
        self.weight = nn.Parameter(torch.ones(n_members, d))
        if init == "random_signs":
            with torch.no_grad():
                self.weight.bernoulli_(0.5).mul_(2).sub_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) * self.weight


class LinearMembers(nn.Module):
    """k independent linear layers on ``[n, k, d_in]`` -> ``[n, k, d_out]``."""

    def __init__(self, *, n_members: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(n_members, d_out))
        # Kaiming normal for ReLU inputs, per member, as init_linear does for one head.
        nn.init.normal_(self.weight, 0.0, (2.0 / d_in) ** 0.5)

    @classmethod
    def from_linear(cls, linear: nn.Linear, n_members: int) -> LinearMembers:
        """k copies of one ``nn.Linear`` (all members start as that head)."""
        ensemble = cls(n_members=n_members, d_in=linear.in_features, d_out=linear.out_features)
        with torch.no_grad():
            ensemble.weight.copy_(linear.weight.t().expand(n_members, -1, -1))
            bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
            ensemble.bias.copy_(bias.expand(n_members, -1))
        return ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nki,kio->nko", x, self.weight) + self.bias
