"""Building blocks shared by the tabular and collaborative-filtering models.

Initialisation, chosen once here for every model:

- embeddings: normal with std 0.01 (small, so that a fresh model's output is
  dominated by biases; fastai uses a truncated normal with the same std);
- linear layers: Kaiming normal for ReLU (fan-in), biases zero;
- batch norm: weight 1, bias 0 (PyTorch's default).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING_INIT_STD = 0.01
# Categorical embeddings train through one one-hot product when the block-diagonal table
# (all rows x all widths) is at most this many values and there are 3+ columns; measured
# at 512 rows: 124 x 65 (8k) 1.4x faster, 150 x 90 (30 columns) 2.2x, 250 x 125 1.3x slower.
ONE_HOT_MAX_VALUES = 16_384


def exporting() -> bool:
    """Whether a model is being traced for export: the TorchScript-based ONNX exporter
    cannot trace custom autograd functions or data-dependent fast paths."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def autocasting(device_type: str) -> bool:
    """Whether autocast (mixed precision) is on for ``device_type``: hand-written
    autograd functions and the folded prediction network then step aside, as autocast's
    casts do not reach inside them."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:       # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def init_embedding(embedding: nn.Embedding, std: float = EMBEDDING_INIT_STD) -> nn.Embedding:
    nn.init.normal_(embedding.weight, 0.0, std)
    if embedding.padding_idx is not None:
        with torch.no_grad():
            embedding.weight[embedding.padding_idx].zero_()
    return embedding


def init_linear(linear: nn.Linear) -> nn.Linear:
    nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, with a cheaper mask on CPU.

    ``nn.Dropout`` draws one random number per element from torch's CPU
    generator (mt19937, one value at a time), which made dropout the most
    expensive part of a small MLP's step. Here the mask's random bits come from
    numpy's SFC64, ~2.5x faster per bit, its state drawn from torch's generator
    at each call (so ``torch.manual_seed`` fixes the masks, and a checkpoint,
    which saves torch's state, resumes them exactly). Each 64-bit word gives
    four 16-bit lanes, compared with a threshold: ``p`` is applied with a
    resolution of 1/65536 and kept values are scaled by the exact inverse of
    the probability used, so the expected output equals the input. On other
    devices (fast counter-based generators) this is ``F.dropout``.

    ``inplace=True`` scales its input in place, as ``nn.Dropout(inplace=True)``:
    only for an input no other operation saved for its backward (batch norm's
    output is one; a ReLU's is not).
    """

    def __init__(self, p: float = 0.5, *, inplace: bool = False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p=}")
        self.p = float(p)
        self.inplace = bool(inplace)
        self.threshold = round(self.p * 65536) - 32768     # lanes below it are dropped
        self.scale = 1.0 / (1.0 - (self.threshold + 32768) / 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True, inplace=self.inplace)
        mask = self.mask(x.shape, x.dtype)
        return x.mul_(mask) if self.inplace else x * mask

    def mask(self, shape, dtype) -> torch.Tensor:
        """``scale`` where a lane is kept, else 0, as a tensor of ``dtype``.

        Built in numpy: there, a comparison into booleans and their conversion
        to float are one cheap pass each (in torch on this CPU they cost 5-7x a
        float product).
        """
        n = math.prod(shape)
        lanes = _mask_bits((n + 3) // 4).view(np.int16)[:n]
        keep = (lanes >= self.threshold).astype(np.float32)
        keep *= np.float32(self.scale)
        return torch.from_numpy(keep).view(shape).to(dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=True" if self.inplace else f"p={self.p}"


class CategoricalEmbeddings(nn.Module):
    """One ``nn.Embedding`` per categorical column, concatenated, then dropout."""

    def __init__(self, embedding_sizes: Sequence[tuple[int, int]], *, dropout: float = 0.0):
        super().__init__()
        for cardinality, width in embedding_sizes:
            if cardinality < 1 or width < 1:
                raise ValueError(f"embedding sizes must be positive, got {(cardinality, width)=}")
        self.embeddings = nn.ModuleList(
            init_embedding(nn.Embedding(cardinality, width))
            for cardinality, width in embedding_sizes
        )
        self.d_out = sum(width for _, width in embedding_sizes)
        # No dropout module at p=0: torch draws a mask even then, at a real cost.
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        cardinalities = [cardinality for cardinality, _ in embedding_sizes]
        self.one_hot = (len(cardinalities) >= 3
                        and sum(cardinalities) * self.d_out <= ONE_HOT_MAX_VALUES)
        starts = np.cumsum([0, *cardinalities[:-1]]).tolist()
        self.register_buffer("starts", torch.tensor(starts, dtype=torch.int64),
                             persistent=False)
        self.register_buffer("cardinalities", torch.tensor(cardinalities, dtype=torch.int64),
                             persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if not self.embeddings:
            return codes.new_zeros((codes.shape[0], 0), dtype=torch.get_default_dtype())
        # CPU only (where it was measured; the range check would sync a GPU every step).
        if self.one_hot and codes.device.type == "cpu" and torch.is_grad_enabled() \
                and not exporting() and not ((codes < 0) | (codes >= self.cardinalities)).any():
            return self.dropout(self._one_hot_lookup(codes))
        vectors = [embedding(codes[:, i]) for i, embedding in enumerate(self.embeddings)]
        return self.dropout(torch.cat(vectors, dim=1))

    def _one_hot_lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The same values as the per-column lookups, as ``one_hot(codes) @ block_diag(tables)``.

        With a few small tables (Adult: 9 columns, 124 rows, 65 values wide) one
        matrix product and its transpose in backward cost less than nine lookups, a
        concatenation and nine embedding backwards: 0.70 vs 1.0 ms per step of 512
        rows with the first layer included, 0.22 vs 0.38 ms at 64 rows. The values are
        exact (one 1 per column block); gradients agree to float rounding.
        """
        table = torch.block_diag(*(embedding.weight for embedding in self.embeddings))
        one_hot = torch.zeros((codes.shape[0], table.shape[0]), dtype=table.dtype,
                              device=codes.device)
        one_hot.scatter_(1, codes + self.starts, 1.0)
        return one_hot @ table


class LinearBlock(nn.Sequential):
    """Linear, ReLU, BatchNorm, Dropout: fastai's order, which trains well on tables.

    The ReLU works in place on the product (a linear layer's backward needs its input,
    not its output), and so does the dropout after batch norm (whose backward needs its
    input): two fewer fresh activations a block.
    """

    def __init__(self, d_in: int, d_out: int, *, dropout: float = 0.0, batch_norm: bool = True):
        layers = [init_linear(nn.Linear(d_in, d_out, bias=not batch_norm)), nn.ReLU(inplace=True)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(d_out))
        if dropout > 0:
            # Without batch norm its input is the ReLU's output, which the ReLU's backward reads.
            layers.append(Dropout(dropout, inplace=batch_norm))
        super().__init__(*layers)


class MLP(nn.Sequential):
    """A stack of :class:`LinearBlock`; ``dropout`` is one rate or one per layer."""

    def __init__(self, d_in: int, hidden: Sequence[int], *, dropout=0.0, batch_norm: bool = True):
        rates = list(dropout) if isinstance(dropout, Sequence) else [dropout] * len(hidden)
        if len(rates) != len(hidden):
            raise ValueError(f"one dropout rate per hidden layer: {hidden=}, {dropout=}")
        for rate in rates:
            if not 0 <= rate < 1:
                raise ValueError(f"dropout must be in [0, 1), got {dropout=}")
        blocks, width = [], d_in
        for size, rate in zip(hidden, rates):
            blocks.append(LinearBlock(width, size, dropout=rate, batch_norm=batch_norm))
            width = size
        super().__init__(*blocks)
        self.d_out = width


class ScaledSigmoid(nn.Module):
    """``low + (high - low) * sigmoid(x)``: outputs always inside ``y_range``."""

    def __init__(self, low: float, high: float):
        super().__init__()
        if not low < high:
            raise ValueError(f"y_range must be (low, high) with low < high, got {(low, high)=}")
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(x)

    def inverse(self, y: float) -> float:
        """The input giving output ``y`` (clipped inside the range)."""
        fraction = (y - self.low) / (self.high - self.low)
        fraction = min(max(fraction, 1e-4), 1 - 1e-4)
        return float(torch.logit(torch.tensor(fraction, device="cpu")))   # also under meta

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def output_range_(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, computed in place on ``x`` for a :class:`ScaledSigmoid` (ranking
    grids: millions of scores, no gradients)."""
    if isinstance(module, ScaledSigmoid):
        return x.sigmoid_().mul_(module.high - module.low).add_(module.low)
    return module(x)


class Offset(nn.Module):
    """A learned scalar added to the output (the global mean of a recommender)."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class PiecewiseLinearEncoding(nn.Module):
    """Piecewise-linear encoding of numbers (Gorishniy et al., 2022, "On Embeddings for
    Numerical Features in Tabular Deep Learning").

    Feature ``j`` with bin edges ``e_0 < ... < e_T`` becomes ``T`` values: 1 for
    bins entirely below ``x``, 0 for bins above, and the fraction of the bin
    below ``x`` for the bin holding it. Unlike the paper, the first and last
    bins do not extend linearly beyond the training range: with narrow bins
    (tied values) that extension made outputs explode on unseen extremes, so
    values outside the range saturate at all-0 or all-1. Features may have
    different numbers of bins; unused slots are zero.
    """

    def __init__(self, bin_edges: Sequence[Sequence[float]]):
        super().__init__()
        n_bins = max(len(edges) - 1 for edges in bin_edges)
        left = torch.zeros(len(bin_edges), n_bins)
        width = torch.ones(len(bin_edges), n_bins)
        used = torch.zeros(len(bin_edges), n_bins)
        for j, edges in enumerate(bin_edges):
            # Checked in numpy so that the layer can be built on the meta device (loading
            # checks a file's shapes that way before allocating anything).
            values = np.asarray(edges, dtype=np.float32)
            if values.ndim != 1 or len(values) < 2 or not (values[1:] > values[:-1]).all():
                raise ValueError(f"bin edges must be increasing, at least 2; feature {j}: "
                                 f"{values.tolist()}")
            edges = torch.as_tensor(values)
            count = len(edges) - 1
            left[j, :count] = edges[:-1]
            width[j, :count] = edges[1:] - edges[:-1]
            used[j, :count] = 1.0
        self.register_buffer("left", left)
        self.register_buffer("width", width)
        self.register_buffer("used", used)
        self.d_out = len(bin_edges) * n_bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fraction = ((x.unsqueeze(-1) - self.left) / self.width).clamp(0.0, 1.0)
        return (fraction * self.used).flatten(1)


_BIT_GENERATORS = threading.local()


def _mask_bits(words: int) -> np.ndarray:
    """``words`` random 64-bit words from an SFC64 whose state is drawn from torch's
    generator (one small draw), so torch's seed and saved state govern them."""
    generator = getattr(_BIT_GENERATORS, "sfc64", None)
    if generator is None:
        generator = _BIT_GENERATORS.sfc64 = np.random.SFC64(0)
    state = torch.randint(-(2**63), 2**63 - 1, (4,), dtype=torch.int64, device="cpu")
    generator.state = {"bit_generator": "SFC64", "state": {"state": state.numpy().view(np.uint64)},
                       "has_uint32": 0, "uinteger": 0}
    return generator.random_raw(words).view(np.int64)
