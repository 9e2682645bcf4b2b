"""Collaborative filtering: DotBias (biased matrix factorisation) and NeuralCF.

Inputs follow the shared signature ``forward(codes, continuous)``: column 0 of
``codes`` is the user, column 1 the item, any further columns are categorical
side features (user age band, item genre, ...) and ``continuous`` holds the
numeric side features. So side features need no second model class.

Code 0 is the unknown user or item. Its factor vector and bias are fixed at
zero (``padding_idx``), so an unknown user gets ``global + item bias`` (plus
side-feature terms), an unknown item ``global + user bias``, and a pair of
unknowns the global offset alone: the prior, never an untrained random vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tabembed import defaults
from tabembed.models.dot_bias_terms import dot_bias_terms
from tabembed.models.layers import (
    MLP,
    CategoricalEmbeddings,
    Offset,
    ScaledSigmoid,
    init_embedding,
    init_linear,
)


def pool_bags(table, ids: torch.Tensor, embedding) -> torch.Tensor:
    """``embedding`` (an ``nn.EmbeddingBag``) pooled over the bags ``ids`` ``[n]`` of
    ``table`` (a :class:`~tabembed.recommenders.bags.BagTable`): each distinct bag of the
    batch once (its flat tokens gathered by index arithmetic), then one row per row."""
    tokens, offsets = table.tensors(ids.device)
    unique, inverse = torch.unique(ids, return_inverse=True)
    starts = offsets[unique]
    lengths = offsets[unique + 1] - starts
    bag_starts = torch.cumsum(lengths, 0) - lengths
    flat = (torch.arange(int(lengths.sum()), device=ids.device)
            + torch.repeat_interleave(starts - bag_starts, lengths))
    return embedding(tokens[flat], bag_starts)[inverse]


def bag_sizes(table, ids: torch.Tensor) -> torch.Tensor:
    """The number of known tokens in each bag of ``ids``."""
    offsets = table.tensors(ids.device)[1]
    return offsets[ids + 1] - offsets[ids]


class _Collaborative(nn.Module):
    """User/item embeddings, biases, side-feature terms, a global offset and ``y_range``."""

    def __init__(self, *, n_users, n_items, n_factors, y_range, side_embedding_sizes,
                 n_continuous, global_bias, bags=()):
        super().__init__()
        if n_users < 1 or n_items < 1 or n_factors < 1:
            raise ValueError(f"sizes must be positive: {n_users=}, {n_items=}, {n_factors=}")
        self.output_range = ScaledSigmoid(*y_range) if y_range is not None else nn.Identity()
        if y_range is not None:   # start the offset at the prior mean inside the range
            global_bias = self.output_range.inverse(global_bias)
        self.user_factors = init_embedding(nn.Embedding(n_users, n_factors, padding_idx=0))
        self.item_factors = init_embedding(nn.Embedding(n_items, n_factors, padding_idx=0))
        self.user_bias = nn.Embedding(n_users, 1, padding_idx=0)
        self.item_bias = nn.Embedding(n_items, 1, padding_idx=0)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        # Side features enter linearly: one learned bias per category value.
        self.side_bias = CategoricalEmbeddings([(c, 1) for c, _ in side_embedding_sizes])
        for embedding in self.side_bias.embeddings:
            nn.init.zeros_(embedding.weight)
        self.side_linear = nn.Linear(n_continuous, 1, bias=False) if n_continuous else None
        if self.side_linear is not None:
            nn.init.zeros_(self.side_linear.weight)
        self.offset = Offset(global_bias)
        # Multi-valued side features: each one column of ``codes`` after the categorical
        # side features, holding a bag id of a BagTable (attach_bag_tables), pooled by mean
        # into the user's or the item's vector and bias. ``length`` (the longest bag) is
        # kept in the arguments for the files that name it; the model needs no width.
        self.bags = []
        for index, (_, _, side) in enumerate(bags):
            if side not in ("user", "item"):
                raise ValueError(f"a bag belongs to the 'user' or the 'item' side, got {side=}")
            self.bags.append((2 + len(side_embedding_sizes) + index, side))
        self.__dict__["_bag_tables"] = None
        self.bag_factors = nn.ModuleList(
            init_embedding(nn.EmbeddingBag(int(n), n_factors, mode="mean", padding_idx=0))
            for n, _, _ in bags)
        self.bag_bias = nn.ModuleList(
            nn.EmbeddingBag(int(n), 1, mode="mean", padding_idx=0) for n, _, _ in bags)
        for embedding in self.bag_bias:
            nn.init.zeros_(embedding.weight)

    def interaction(self, codes, continuous, users, items):
        raise NotImplementedError

    def set_sparse_gradients(self, enabled: bool) -> None:
        """Make the user and item tables' gradients sparse (the rows a batch used), as
        ``nn.Embedding(sparse=True)``: with :mod:`tabembed.training.lazy_adam` a step then
        costs the batch's rows instead of the tables' (large catalogues)."""
        for table in (self.user_factors, self.item_factors, self.user_bias, self.item_bias,
                      *self.bag_factors, *self.bag_bias):
            table.sparse = bool(enabled)

    def attach_bag_tables(self, tables) -> None:
        """The :class:`~tabembed.recommenders.bags.BagTable` of each bag, in order: the bag
        ids in ``codes`` index them (tables are shared, never copied, by deep copies)."""
        tables = list(tables)
        if len(tables) != len(self.bags):
            raise ValueError(f"{len(self.bags)} bag(s) need as many tables, got {len(tables)}")
        self.__dict__["_bag_tables"] = tables

    def _bag_pool(self, index: int, codes: torch.Tensor, embedding) -> torch.Tensor:
        """Bag ``index``'s pooled ``embedding`` rows for each row of ``codes``."""
        tables = self.__dict__.get("_bag_tables")
        if tables is None:
            raise RuntimeError("this model has multi-valued features but no bag tables; "
                               "call attach_bag_tables (the recommender does it)")
        return pool_bags(tables[index], codes[:, self.bags[index][0]], embedding)

    def _pooled(self, codes: torch.Tensor, side: str, tables) -> torch.Tensor | None:
        """The sum over ``side``'s bags of their pooled ``tables`` rows (None: no bag)."""
        total = None
        for index, ((_, owner), table) in enumerate(zip(self.bags, tables, strict=True)):
            if owner == side:
                pooled = self._bag_pool(index, codes, table)
                total = pooled if total is None else total + pooled
        return total

    def user_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """The user factors of each row, plus the pooled factors of the user's bags."""
        vectors = self.user_factors(codes[:, 0])
        pooled = self._pooled(codes, "user", self.bag_factors)
        return vectors if pooled is None else vectors + pooled

    def item_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """The item factors of each row, plus the pooled factors of the item's bags (so a new
        item with known genres gets a vector)."""
        vectors = self.item_factors(codes[:, 1])
        pooled = self._pooled(codes, "item", self.bag_factors)
        return vectors if pooled is None else vectors + pooled

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        return self.output_range(self.logits(codes, continuous))

    def logits(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """The output ``[n, 1]`` before ``y_range``'s sigmoid (the same order of pairs)."""
        users, items = codes[:, 0], codes[:, 1]
        output = (self.interaction(codes, continuous, users, items)
                  + self.user_bias(users) + self.item_bias(items))
        return self.offset(self._side_terms(codes, continuous, output))

    def _side_terms(self, codes, continuous, output):
        """``output`` plus the side features' linear terms."""
        if self.side_bias.embeddings:
            output = output + self.side_bias(codes[:, 2:]).sum(dim=1, keepdim=True)
        if self.side_linear is not None:
            output = output + self.side_linear(continuous)
        for index, table in enumerate(self.bag_bias):
            output = output + self._bag_pool(index, codes, table)
        return output

    def score_grid(self, user_codes: torch.Tensor, user_continuous: torch.Tensor,
                   item_codes: torch.Tensor, item_continuous: torch.Tensor) -> torch.Tensor:
        """Logits ``[n_users, n_items]`` of every (user row, item row) pair.

        ``user_codes`` rows hold the user and user-side columns (zeros elsewhere),
        ``item_codes`` rows the item and item-side columns; a pair's input is their
        sum (likewise for the continuous columns). This generic version scores the
        ``n_users * n_items`` rows; :class:`DotBias` does it with one matrix product.
        """
        n_users, n_items = user_codes.shape[0], item_codes.shape[0]
        codes = (user_codes[:, None, :] + item_codes[None, :, :]).reshape(n_users * n_items, -1)
        continuous = (user_continuous[:, None, :] + item_continuous[None, :, :]).reshape(
            n_users * n_items, -1)
        return self.logits(codes, continuous).reshape(n_users, n_items)

    def embedding_penalty(self, codes: torch.Tensor, continuous=None) -> torch.Tensor:
        """Mean over the rows of ``codes`` of the squared user and item factors and biases.

        The classic matrix-factorisation regulariser: only the embeddings a batch
        uses are penalised, so rare users and items are not shrunk at every step
        the way a decoupled weight decay on whole tables shrinks them.
        """
        users, items = codes[:, 0], codes[:, 1]
        squares = (self.user_factors(users).pow(2).sum(1) + self.item_factors(items).pow(2).sum(1)
                   + self.user_bias(users).pow(2).sum(1) + self.item_bias(items).pow(2).sum(1))
        for index, table in enumerate(self.bag_factors):
            squares = squares + self._bag_pool(index, codes, table).pow(2).sum(1)
        return squares.mean()

    def _head_modules(self) -> list[nn.Module]:
        """The output-side modules every variant shares (offset, range, side linear term)."""
        modules = [self.offset, self.output_range]
        if self.side_linear is not None:
            modules.append(self.side_linear)
        return modules

    def _bias_modules(self) -> list[nn.Module]:
        return [self.user_factors, self.item_factors, self.user_bias, self.item_bias,
                self.side_bias, self.bag_factors, self.bag_bias]


class DotBias(_Collaborative):
    """``dot(user, item) + user bias + item bias + global`` (optionally squashed into ``y_range``).

    Parameters
    ----------
    n_users, n_items : int
        Vocabulary sizes, code 0 (unknown) included.
    n_factors : int
        Embedding width, default 50.
    y_range : (low, high), optional
        Scaled sigmoid on the output, e.g. ``(0, 5.5)`` for 1-5 star ratings.
    side_embedding_sizes : sequence of (cardinality, width)
        Categorical side features (columns 2.. of ``codes``); each adds a learned bias.
    n_continuous : int
        Numeric side features, entering through a linear term.
    global_bias : float
        Initial global offset (the training mean is a good start).
    bags : sequence of (n_tokens, length, "user" | "item")
        Multi-valued side features (genres), one column of ``codes`` each after
        the categorical side features, holding bag ids of the tables given to
        :meth:`attach_bag_tables` (``length``, the longest bag, is not used):
        each bag's mean token vector joins the user's or the item's factors,
        and its mean token bias the output.
    """

    def __init__(self, *, n_users: int, n_items: int, n_factors: int = defaults.FACTORS,
                 y_range: tuple[float, float] | None = None,
                 side_embedding_sizes: Sequence[tuple[int, int]] = (), n_continuous: int = 0,
                 global_bias: float = 0.0, bags: Sequence[tuple[int, int, str]] = ()):
        super().__init__(n_users=n_users, n_items=n_items, n_factors=n_factors, y_range=y_range,
                         side_embedding_sizes=side_embedding_sizes, n_continuous=n_continuous,
                         global_bias=global_bias, bags=bags)

    def interaction(self, codes, continuous, users, items):
        if not self.bags:
            return (self.user_factors(users) * self.item_factors(items)).sum(dim=1, keepdim=True)
        return (self.user_vectors(codes) * self.item_vectors(codes)).sum(dim=1, keepdim=True)

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        if (self.training and torch.is_grad_enabled() and not self.bags
                and not self.side_bias.embeddings and self.side_linear is None):
            # Training without side features: the whole output, offset and y_range
            # included, is one autograd function (four nodes fewer a step; fit -1.5%).
            if isinstance(self.output_range, ScaledSigmoid):
                return self._training_terms(codes, self.offset.bias,
                                            (self.output_range.low, self.output_range.high))
            return self.output_range(self._training_terms(codes, self.offset.bias))
        return super().forward(codes, continuous)

    def logits(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        if self.bags:
            return super().logits(codes, continuous)
        if self.training and torch.is_grad_enabled():
            output = self._training_terms(codes)
        else:
            users, items = codes[:, 0], codes[:, 1]
            output = ((self.user_factors(users) * self.item_factors(items)).sum(
                dim=1, keepdim=True) + self.user_bias(users) + self.item_bias(items))
        return self.offset(self._side_terms(codes, continuous, output))

    def _training_terms(self, codes, offset=None, output_range=None) -> torch.Tensor:
        """:func:`dot_bias_terms` of the batch: one autograd function for the four lookups,
        the terms and the penalty (a training step's small ops cost more than its
        arithmetic); the penalty is kept for embedding_penalty on the same batch."""
        output, penalty = dot_bias_terms(self.user_factors, self.item_factors, self.user_bias,
                                         self.item_bias, codes[:, 0], codes[:, 1], offset,
                                         output_range)
        self.__dict__["_batch_penalty"] = (codes, penalty)
        return output

    def embedding_penalty(self, codes: torch.Tensor, continuous=None) -> torch.Tensor:
        """As :meth:`_Collaborative.embedding_penalty`; right after a training forward pass
        on the same ``codes`` it returns that pass's penalty (once)."""
        kept = self.__dict__.pop("_batch_penalty", None)
        if self.bags or kept is None or kept[0] is not codes or not torch.is_grad_enabled():
            return super().embedding_penalty(codes, continuous)
        return kept[1]

    def train(self, mode: bool = True):
        self.__dict__.pop("_batch_penalty", None)
        return super().train(mode)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_batch_penalty"}

    def score_grid(self, user_codes, user_continuous, item_codes, item_continuous):
        # Every term but the dot product is a sum over columns, so it splits into a
        # user part and an item part; the all-zero row's terms were counted twice.
        users, items = user_codes[:, 0], item_codes[:, 1]
        user_part = self._side_terms(user_codes, user_continuous, self.user_bias(users))
        item_part = self._side_terms(item_codes, item_continuous, self.item_bias(items))
        zero = self._side_terms(torch.zeros_like(user_codes[:1]),
                                torch.zeros_like(user_continuous[:1]),
                                torch.zeros(1, 1, device=user_codes.device))
        if torch.is_grad_enabled():
            # Training a ranker: the item terms ride in the product, the user terms and the
            # offset in one more pass (five grid passes forward and back before).
            grid = torch.addmm(item_part.T, self.user_vectors(user_codes),
                               self.item_vectors(item_codes).T)
            return grid + (user_part - zero + self.offset.bias)
        dot = self.user_vectors(user_codes) @ self.item_vectors(item_codes).T
        # Ranking (no gradients): in place, three passes over the grid instead of four
        # passes and four grids.
        return dot.add_(user_part).add_(item_part.T).add_(self.offset.bias - zero)

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList(self._bias_modules()), nn.ModuleList(self._head_modules())]


class NeuralCF(_Collaborative):
    """User, item and side embeddings concatenated through an MLP, plus the bias terms.

    The MLP's interaction term is used only when both user and item are
    known, so unknowns fall back to the same prior as :class:`DotBias`.
    Parameters are those of :class:`DotBias`, plus ``hidden`` and ``dropout``
    of the MLP.
    """

    def __init__(self, *, n_users: int, n_items: int, n_factors: int = defaults.FACTORS,
                 hidden: Sequence[int] = defaults.NEURAL_HIDDEN,
                 dropout=defaults.NEURAL_DROPOUT,
                 y_range: tuple[float, float] | None = None,
                 side_embedding_sizes: Sequence[tuple[int, int]] = (), n_continuous: int = 0,
                 global_bias: float = 0.0, bags: Sequence[tuple[int, int, str]] = ()):
        super().__init__(n_users=n_users, n_items=n_items, n_factors=n_factors, y_range=y_range,
                         side_embedding_sizes=side_embedding_sizes, n_continuous=n_continuous,
                         global_bias=global_bias, bags=bags)
        self.side_embeddings = CategoricalEmbeddings(side_embedding_sizes)
        d_in = 2 * n_factors + self.side_embeddings.d_out + n_continuous
        self.body = MLP(d_in, hidden, dropout=dropout)
        self.head = init_linear(nn.Linear(self.body.d_out, 1))

    def interaction(self, codes, continuous, users, items):
        parts = [self.user_vectors(codes), self.item_vectors(codes)]
        if self.side_embeddings.embeddings:
            parts.append(self.side_embeddings(codes[:, 2:]))
        if continuous.shape[1]:
            parts.append(continuous)
        # A side counts as known by its id or by a non-empty bag (a new item with genres).
        known_user, known_item = users != 0, items != 0
        for (column, side), table in zip(self.bags, self.__dict__["_bag_tables"] or [],
                                         strict=True):
            filled = bag_sizes(table, codes[:, column]) > 0
            if side == "user":
                known_user = known_user | filled
            else:
                known_item = known_item | filled
        known = (known_user & known_item).unsqueeze(1)
        return self.head(self.body(torch.cat(parts, dim=1))) * known

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList([*self._bias_modules(), self.side_embeddings]), self.body,
                nn.ModuleList([self.head, *self._head_modules()])]
