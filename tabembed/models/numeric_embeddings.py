"""Periodic embeddings of numbers: PLR (Gorishniy et al., 2022, "On Embeddings for
Numerical Features in Tabular Deep Learning"; reference: rtdl_num_embeddings).

Feature ``j`` with value ``x`` becomes ``[cos(2 pi c_j x), sin(2 pi c_j x)]`` for
``n_frequencies`` trainable frequencies ``c_j`` (initialised from a normal
with std ``frequency_init_scale``, truncated at 3 std), then a linear layer of
its own (``P -> L``) and a ReLU (``R``): an embedding of ``d_embedding`` values
per feature. ``lite=True`` shares one linear layer between the features
(rtdl's "PLR(lite)"): fewer parameters, the frequencies stay per feature.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tabembed.models.layers import exporting


class _CosSin(torch.autograd.Function):
    """``phase [..., k] -> [..., 2k]``: cosines then sines.

    Autograd's own ``cos``/``sin`` recompute ``sin``/``cos`` of the phase in
    backward; here the two halves are saved and are each other's derivatives
    (``d cos = -sin``, ``d sin = cos``). Computing them into contiguous tensors
    and concatenating beat writing into the two strided halves of one output
    (~0.85 vs ~0.95 ms for this block's forward and backward at 512 rows).
    """

    @staticmethod
    def forward(ctx, phase):
        cosine, sine = torch.cos(phase), torch.sin(phase)
        ctx.save_for_backward(cosine, sine)
        return torch.cat([cosine, sine], dim=-1)

    @staticmethod
    def backward(ctx, grad):
        cosine, sine = ctx.saved_tensors
        k = cosine.shape[-1]
        return grad[..., k:] * cosine - grad[..., :k] * sine


def cos_sin(phase: torch.Tensor) -> torch.Tensor:
    """``[cos(phase), sin(phase)]`` along the last dimension."""
    if exporting():
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
    return _CosSin.apply(phase)


class _FeatureMajorToRows(torch.autograd.Function):
    """``[f, n, d] -> [n, f * d]`` whose gradient comes back contiguous.

    Plain ``transpose(0, 1).reshape`` hands the per-feature linear layer a
    transposed gradient in backward, and the batched matmuls of its backward
    ran ~3x slower on it than on a contiguous one.
    """

    @staticmethod
    def forward(ctx, x):
        f, n, d = x.shape
        ctx.shape = (f, d)
        return x.transpose(0, 1).reshape(n, f * d)

    @staticmethod
    def backward(ctx, grad):
        f, d = ctx.shape
        return grad.reshape(grad.shape[0], f, d).transpose(0, 1).contiguous()


def feature_major_to_rows(x: torch.Tensor) -> torch.Tensor:
    """``[f, n, d] -> [n, f * d]`` (row ``i`` holds feature 0's ``d`` values, then feature 1's)."""
    if exporting():
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    return _FeatureMajorToRows.apply(x)


class Periodic(nn.Module):
    """``x [n, n_features] -> [n, n_features, 2 * n_frequencies]`` (cosines, then sines)."""

    def __init__(self, *, n_features: int, n_frequencies: int, frequency_init_scale: float):
        super().__init__()
        if n_features < 1 or n_frequencies < 1:
            raise ValueError(f"sizes must be positive: {n_features=}, {n_frequencies=}")
        if not frequency_init_scale > 0:
            raise ValueError(f"frequency_init_scale must be positive, got {frequency_init_scale=}")
        self.frequency_init_scale = float(frequency_init_scale)
        self.weight = nn.Parameter(torch.empty(n_features, n_frequencies))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        scale = self.frequency_init_scale
        nn.init.trunc_normal_(self.weight, 0.0, scale, -3 * scale, 3 * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cos_sin(2 * math.pi * self.weight * x.unsqueeze(-1))

    def feature_major(self, x: torch.Tensor) -> torch.Tensor:
        """The same values laid out ``[n_features, n, 2 * n_frequencies]``."""
        return cos_sin(2 * math.pi * self.weight.unsqueeze(1) * x.t().unsqueeze(-1))


class PerFeatureLinear(nn.Module):
    """One linear layer per feature: ``[n, n_features, d_in] -> [n, n_features, d_out]``."""

    def __init__(self, *, n_features: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_features, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n_features, d_out))
        bound = d_in ** -0.5   # nn.Linear's default range, per feature (as rtdl)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [n, f, d_in] x [f, d_in, d_out]: one batched matmul over the features.
        return torch.einsum("nfi,fio->nfo", x, self.weight) + self.bias

    def feature_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[f, n, d_in] -> [f, n, d_out]``: contiguous batched matmuls, no transposes
        (forward and backward 1.5x faster than the row-major einsum at n=512, f=6)."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class PeriodicEmbeddings(nn.Module):
    """PLR embeddings of ``n_features`` numbers, flattened to ``[n, n_features * d_embedding]``.

    Parameters
    ----------
    n_features : int
    d_embedding : int
        Width of each feature's embedding (rtdl default 24).
    n_frequencies : int
        Frequencies per feature (rtdl default 48).
    frequency_init_scale : float
        Std of the initial frequencies, the one sensitive hyperparameter: it
        sets how fast the features oscillate over the inputs' scale. rtdl's
        default is 0.01; tuned values on Adult reach ~8 (bench/NOTES.md has
        ours, on standardised inputs).
    lite : bool
        Share the linear layer between the features.
    """

    def __init__(self, *, n_features: int, d_embedding: int = 24, n_frequencies: int = 48,
                 frequency_init_scale: float = 0.01, lite: bool = False):
        super().__init__()
        if d_embedding < 1:
            raise ValueError(f"d_embedding must be positive, got {d_embedding=}")
        self.periodic = Periodic(n_features=n_features, n_frequencies=n_frequencies,
                                 frequency_init_scale=frequency_init_scale)
        self.linear = (nn.Linear(2 * n_frequencies, d_embedding) if lite else
                       PerFeatureLinear(n_features=n_features, d_in=2 * n_frequencies,
                                        d_out=d_embedding))
        self.activation = nn.ReLU()
        self.d_out = n_features * d_embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.linear, PerFeatureLinear):
            hidden = self.activation(self.linear.feature_major(self.periodic.feature_major(x)))
            return feature_major_to_rows(hidden)
        return self.activation(self.linear(self.periodic(x))).flatten(1)
