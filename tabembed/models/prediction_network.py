"""PredictionMLP: an EntityEmbeddingMLP's prediction-time function, its algebra merged.

At prediction time (eval mode, no gradients) three parts of the network are
linear maps that can be merged ahead of time:

- a categorical column's embedding followed by its slice of the first linear
  layer is one table lookup: ``E_j[code] @ W_j.T == (E_j @ W_j.T)[code]``, so
  all columns together are one ``embedding_bag`` (sum) over tables of the
  first hidden width, instead of nine lookups, a concatenation and a third
  of the first matrix product;
- batch norm with frozen statistics is ``a * x + c``, which folds into the
  next linear layer (``W a``, ``W c + b``);
- the periodic embeddings' linear layer is applied to the cosines and to the
  sines separately, so they are never concatenated;
- a continuous input that took few distinct values in training (ages, counts:
  the model's ``continuous_values``, from the preprocessor) has its periodic
  embedding and first-layer product precomputed for each of them: a table
  looked up in the same ``embedding_bag`` as the categories. A value not in the
  table (a new age) is computed as before, for its rows only.

The result equals the model's output up to float rounding (tests compare at
1e-5), and does about a quarter fewer multiply-adds per row on Adult's
default network. Folded tables that would hold more than
``MAX_TABLE_VALUES`` numbers (high-cardinality columns times the first
width) are not built: the model then predicts unfolded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tabembed.models.layers import Dropout
from tabembed.models.numeric_embeddings import PerFeatureLinear, PeriodicEmbeddings

MAX_TABLE_VALUES = 16_000_000    # 64 MB of float32
# Buckets an input's value lookup may use (12 bytes each): Adult's capital_gain, 119
# values from 0 to 99,999 at least 2 apart, needs 100,000. All inputs together: 12 MB.
MAX_BUCKETS = 1 << 17
MAX_TOTAL_BUCKETS = 1 << 20
# Below this many rows a pass computes the continuous inputs instead of looking them up:
# the lookup's fixed cost is larger (Adult, one row: 111 vs 54 us; 128 rows: even).
LOOKUP_MIN_ROWS = 128


class PredictionMLP(nn.Module):
    """The prediction-time network; build it with :func:`prediction_mlp`, not directly."""

    def __init__(self, *, tables, offsets, continuous, first_continuous, first_bias, layers,
                 output_range, lookup=None):
        super().__init__()
        # [rows, h1]: each categorical column's table, then the value tables; or None.
        self.tables = tables
        self.offsets = offsets                  # [n_cat] start row of each column's table
        self.continuous = continuous            # a module, a _Periodic, or None
        self.first_continuous = first_continuous  # [h1, d_cont] or None
        self.first_bias = first_bias            # [h1]
        self.layers = layers                    # [(weight [out, in], bias [out])], after ReLU
        self.output_range = output_range
        self.lookup = lookup                    # a _ValueTables, or None

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        n = codes.shape[0]
        looked_up = self.lookup is not None and n >= LOOKUP_MIN_ROWS
        if looked_up:
            hidden = self.lookup.first_layer(codes, self.offsets, continuous, self.tables,
                                             self.first_bias)
        elif self.offsets.numel():      # the first bias is inside the first table
            hidden = F.embedding_bag(codes + self.offsets, self.tables, mode="sum")
        else:
            hidden = self.first_bias.expand(n, -1)
        if self.first_continuous is not None and not looked_up:
            encoded = self.continuous(continuous)
            if self.offsets.numel():        # a new tensor: updated in place, no copy
                hidden.addmm_(encoded, self.first_continuous.t())
            else:
                hidden = torch.addmm(hidden, encoded, self.first_continuous.t())
        for weight, bias in self.layers:
            # The product, then the bias in place: addmm's bias (copied into its result
            # before the product) cost ~6% more for Adult's [2048, 200] x [200, 100].
            hidden = torch.mm(hidden.relu_() if hidden.is_contiguous() else torch.relu(hidden),
                              weight.t()).add_(bias)
        return self.output_range(hidden)


class _Periodic(nn.Module):
    """PLR with the linear layer split into its cosine and sine halves (no concatenation)."""

    def __init__(self, embeddings: PeriodicEmbeddings, features: list[int]):
        super().__init__()
        k = embeddings.periodic.weight.shape[1]
        weight = embeddings.linear.weight.detach()[features]        # [f, 2k, d]
        self.frequencies = (2 * math.pi * embeddings.periodic.weight.detach()[features]
                            ).unsqueeze(1)
        self.cosine = weight[:, :k].contiguous()
        self.sine = weight[:, k:].contiguous()
        self.bias = embeddings.linear.bias.detach()[features].unsqueeze(1)     # [f, 1, d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_major(x.t()).transpose(0, 1).reshape(x.shape[0], -1)

    def feature_major(self, values: torch.Tensor) -> torch.Tensor:
        """The embeddings ``[f, n, d]`` of ``values`` ``[f, n]``."""
        phase = self.frequencies * values.unsqueeze(-1)            # [f, n, k]
        hidden = torch.baddbmm(self.bias, torch.cos(phase), self.cosine)
        return hidden.baddbmm_(torch.sin(phase), self.sine).relu_()


class _ValueTables(nn.Module):
    """The first layer's continuous part, with tables for the inputs that have them.

    Input ``features[i]`` has its training values in a table of rows from row
    ``starts[i]`` of the folded tables, each the first-layer contribution of one
    value, then a row of zeros for a value not in the table, whose contribution
    is computed (for those rows only). The other inputs are computed as in the
    unfolded network.

    A value finds its row by arithmetic, not by search: input ``i``'s range is
    cut into equal buckets, fine enough that no two training values share one
    (:func:`_buckets`); a bucket holds the row and the value of the one training
    value in it, and a value is found when it equals its bucket's. The same
    float operations put a training value and an equal query into the same
    bucket, so the lookup is exact. 4 x 2048 values: ~40 us against ~200 us for
    ``searchsorted`` and its checks.
    """

    def __init__(self, *, features, origins, scales, first_buckets, last_buckets, bucket_starts,
                 rows, keys, missing_rows, tabled, tabled_weight, dense, computed, dense_weight):
        super().__init__()
        self.features = features              # [t] continuous input positions with tables
        self.feature_index = torch.tensor(features, device=origins.device)
        self.origins = origins                # [t, 1] smallest training value of each input
        self.scales = scales                  # [t, 1] buckets per unit of the input
        self.first_buckets = first_buckets    # [t, 1] zeros (clamp's lower bound)
        self.last_buckets = last_buckets      # [t, 1] each input's bucket count - 1
        self.bucket_starts = bucket_starts    # [t, 1] first bucket of each input in rows/keys
        self.rows = rows                      # [buckets] table row (the zero row if empty)
        self.keys = keys                      # [buckets] the training value in it, or NaN
        self.missing_rows = missing_rows      # [t, 1] each input's row of zeros
        self.tabled = tabled                  # _Periodic of the tabled inputs
        self.tabled_weight = tabled_weight    # [t, d, h1]
        self.dense = dense                    # [inputs without a table], or []
        self.computed = computed              # _Periodic of those, or None
        self.dense_weight = dense_weight      # [h1, (f - t) * d] or None

    def locate(self, continuous: torch.Tensor):
        """``(values [t, n], table rows [t, n], missing [t, n])`` of the tabled inputs
        (``missing``: the value is not in its table)."""
        values = torch.index_select(continuous.t(), 0, self.feature_index)
        bucket = _bucket(values, self.origins, self.scales, self.first_buckets,
                         self.last_buckets)
        bucket += self.bucket_starts
        missing = torch.take(self.keys, bucket) != values
        return values, torch.where(missing, self.missing_rows, torch.take(self.rows, bucket)), \
            missing

    def first_layer(self, codes: torch.Tensor, offsets: torch.Tensor, continuous: torch.Tensor,
                    tables: torch.Tensor, first_bias: torch.Tensor) -> torch.Tensor:
        """The first layer's output before its ReLU: the categorical ``codes`` (their
        tables start at ``offsets`` in the folded ``tables``) and every continuous input."""
        values, value_rows, missing = self.locate(continuous)
        n, c = codes.shape
        rows = codes.new_empty(n, c + len(self.features))
        torch.add(codes, offsets, out=rows[:, :c])
        rows[:, c:] = value_rows.t()
        hidden = F.embedding_bag(rows, tables, mode="sum")
        if not c:             # no categorical table holds the first bias
            hidden += first_bias
        if self.computed is not None:
            # In place: out of place, addmm first copies ``hidden`` ([n, h1]) into its result.
            hidden.addmm_(self.computed(continuous[:, self.dense]), self.dense_weight.t())
        if bool(missing.any()):
            # Values not in their table (rare): every tabled input of the rows that have
            # one is computed, and kept only where it was not found.
            where = missing.any(dim=0).nonzero().squeeze(1)
            encoded = self.tabled.feature_major(values.index_select(1, where))   # [t, r, d]
            encoded *= missing.index_select(1, where).unsqueeze(-1)
            hidden.index_add_(0, where, torch.bmm(encoded, self.tabled_weight).sum(dim=0))
        return hidden


def _affine(norm: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as ``scale * x + shift``."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def _blocks(model) -> list[tuple[nn.Linear, nn.BatchNorm1d | None]] | None:
    """``(linear, norm after its ReLU)`` per hidden block, or None for an unknown layout."""
    blocks = []
    for block in model.body:
        parts = list(block)
        if len(parts) < 2 or not isinstance(parts[0], nn.Linear) \
                or not isinstance(parts[1], nn.ReLU):
            return None
        rest = parts[2:]
        norm = rest.pop(0) if rest and isinstance(rest[0], nn.BatchNorm1d) else None
        if norm is not None and (norm.running_mean is None or norm.running_var is None):
            return None
        if any(not isinstance(part, Dropout | nn.Dropout | nn.Identity) for part in rest):
            return None
        blocks.append((parts[0], norm))
    return blocks


def prediction_mlp(model) -> PredictionMLP | None:
    """The folded network of an :class:`~tabembed.models.EntityEmbeddingMLP`, or None
    where folding does not apply (several members, an unknown layout, or folded tables
    above ``MAX_TABLE_VALUES`` numbers)."""
    if model.member_scaling is not None or not isinstance(model.head, nn.Linear):
        return None
    blocks = _blocks(model)
    if not blocks:
        return None
    with torch.no_grad():
        first, norm = blocks[0]
        weight = first.weight.detach()
        embeddings = list(model.embeddings.embeddings)
        if sum(e.num_embeddings for e in embeddings) * weight.shape[0] > MAX_TABLE_VALUES:
            return None
        bias = (first.bias.detach().clone() if first.bias is not None
                else weight.new_zeros(weight.shape[0]))
        tables, offsets, start, row = [], [], 0, 0
        for embedding in embeddings:
            width = embedding.embedding_dim
            tables.append(embedding.weight.detach() @ weight[:, start:start + width].t())
            offsets.append(row)
            start, row = start + width, row + embedding.num_embeddings
        first_continuous, continuous, lookup, value_tables = None, None, None, []
        if model.n_continuous:
            first_continuous = weight[:, start:].clone()
            encoder = model.continuous_norm
            periodic = isinstance(encoder, PeriodicEmbeddings) and isinstance(
                encoder.linear, PerFeatureLinear)
            continuous = _Periodic(encoder, list(range(model.n_continuous))) if periodic \
                else encoder
            if periodic:
                lookup, value_tables = _value_tables(model, encoder, first_continuous, row)
        if tables:
            # Every row sums exactly one row of each table: adding the bias to all rows
            # of the first table adds it once.
            tables[0] = tables[0] + bias
        table = torch.cat(tables + value_tables) if tables or value_tables else None
        layers, previous_norm = [], norm
        following = [linear for linear, _ in blocks[1:]] + [model.head]
        norms = [n for _, n in blocks[1:]] + [None]
        for linear, next_norm in zip(following, norms):
            w = linear.weight.detach()
            b = linear.bias.detach() if linear.bias is not None else w.new_zeros(w.shape[0])
            if previous_norm is not None:
                scale, shift = _affine(previous_norm)
                w, b = w * scale, b + w @ shift
            layers.append((w.contiguous(), b.clone()))
            previous_norm = next_norm
        offsets = torch.tensor(offsets, dtype=torch.int64, device=weight.device)
    return PredictionMLP(tables=table, offsets=offsets, continuous=continuous,
                     first_continuous=first_continuous, first_bias=bias, layers=layers,
                     output_range=model.output_range, lookup=lookup)


def _value_tables(model, encoder, first_continuous, row):
    """``(_ValueTables, [table per input])`` for the continuous inputs with
    ``model.continuous_values``, the tables starting at row ``row`` of the folded tables;
    ``(None, [])`` where there are none or they would not fit in ``MAX_TABLE_VALUES``.
    An input whose values no bucketing up to ``MAX_BUCKETS`` separates, or whose buckets
    would take the inputs' total past ``MAX_TOTAL_BUCKETS``, is computed."""
    values = getattr(model, "continuous_values", None) or []
    device, dtype = first_continuous.device, first_continuous.dtype
    width, d = first_continuous.shape[0], encoder.linear.weight.shape[2]
    room, bucket_room = MAX_TABLE_VALUES - row * width, MAX_TOTAL_BUCKETS
    features, tables, layouts, keys, rows = [], [], [], [], []

    def columns(inputs):
        return first_continuous[:, [c for j in inputs for c in range(j * d, (j + 1) * d)]]

    for j, given in enumerate(values):
        if given is None or len(given) == 0 or (len(given) + 1) * width > room:
            continue
        given = given.to(device=device, dtype=dtype)
        layout = _buckets(given, min(MAX_BUCKETS, bucket_room))
        if layout is None:
            continue
        origin, scale, count, bucket = layout
        bucket_room -= count
        contributions = _Periodic(encoder, [j])(given.unsqueeze(1)) @ columns([j]).t()
        tables.append(torch.cat([contributions, contributions.new_zeros(1, width)]))
        missing = row + len(given)
        keys.append(torch.full((count,), math.nan, device=device, dtype=dtype).index_put_(
            (bucket,), given))
        rows.append(torch.full((count,), missing, device=device, dtype=torch.int64).index_put_(
            (bucket,), torch.arange(row, missing, device=device)))
        layouts.append((origin, scale, count, missing))
        row = missing + 1
        room -= (len(given) + 1) * width
        features.append(j)
    if not features:
        return None, []

    def column(index, kind=torch.int64):
        return torch.tensor([[layout[index]] for layout in layouts], dtype=kind, device=device)

    counts = [layout[2] for layout in layouts]
    dense = [j for j in range(model.n_continuous) if j not in features]
    lookup = _ValueTables(
        features=features, origins=torch.stack([layout[0] for layout in layouts]).view(-1, 1),
        scales=torch.stack([layout[1] for layout in layouts]).view(-1, 1),
        first_buckets=torch.zeros(len(layouts), 1, dtype=dtype, device=device),
        last_buckets=column(2, dtype) - 1,
        bucket_starts=torch.tensor([[sum(counts[:i])] for i in range(len(counts))],
                                   dtype=torch.int64, device=device),
        rows=torch.cat(rows), keys=torch.cat(keys), missing_rows=column(3),
        tabled=_Periodic(encoder, features),
        tabled_weight=columns(features).view(width, len(features), d).permute(1, 2, 0).contiguous(),
        dense=dense, computed=_Periodic(encoder, dense) if dense else None,
        dense_weight=columns(dense).contiguous() if dense else None)
    return lookup, tables


def _bucket(values: torch.Tensor, origins, scales, lows, highs) -> torch.Tensor:
    """``floor((values - origins) * scales)`` clamped to ``[lows, highs]`` (tensors: 0 and
    the last bucket), as int64 (NaN to bucket 0, where no key equals it)."""
    position = torch.nan_to_num_((values - origins).mul_(scales), nan=0.0)
    return position.clamp_(lows, highs).long()


def _buckets(points: torch.Tensor, most: int):
    """``(origin, scale, count, bucket of each point)``, the first two as 0-d tensors of the
    points' dtype: ``count`` buckets over the sorted ``points`` that put each in a bucket of
    its own (:func:`_bucket`), or None if that needs more than ``most``."""
    origin = points[0].clone()
    span = float(points[-1]) - float(origin)
    if span == 0:
        return (origin, torch.zeros_like(origin), 1,
                torch.zeros(len(points), dtype=torch.int64, device=points.device)) \
            if most >= 1 else None
    finest = float((points[1:] - points[:-1]).min())
    count = math.ceil(2 * span / finest) + 1
    while count <= most:
        scale = torch.tensor((count - 1) / span, dtype=points.dtype, device=points.device)
        bucket = _bucket(points, origin, scale, torch.zeros_like(origin),
                         torch.full_like(origin, count - 1))
        if bool((bucket[1:] > bucket[:-1]).all()):
            return origin, scale, count, bucket
        count *= 2
    return None
