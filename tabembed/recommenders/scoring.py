"""Scoring every item for many users at once, and picking each user's top k.

- :func:`grid_tables`: every known user's and every item's encoded row, each
  holding its own side's columns only (user features for users, item features
  for items), so a users x items grid needs no context columns.
- :class:`GridScorer`: one fitted model's scores ``[users, items]`` in chunks
  (one matrix product for dot-bias), averaged over an ensemble's snapshots,
  with each item's bias shrunk by its support when asked.
- :func:`ranking_weights`: that shrinkage and the minimum support.
- :func:`seen_matrix` and :func:`top_k_items`: each user's training items
  excluded through a sparse matrix, never densified.
- :meth:`GridScorer.item_parts` and :meth:`GridScorer.user_parts`: a dot-bias
  model's logits as inner products, for an approximate nearest-neighbour index
  (:mod:`tabembed.recommenders.nearest_neighbours`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from tabembed.models import DotBias
from tabembed.models.layers import output_range_
from tabembed.ranking_metrics import CHUNK_SCORES, top_k
from tabembed.recommenders.bags import BagEncoder
from tabembed.recommenders.interaction_data import encode
from tabembed.recommenders.side_features import SideFeatures

__all__ = ["GridScorer", "check_k", "grid_tables", "ranking_weights", "seen_matrix", "side_masks",
           "top_k_items"]

# Rows per forward pass when a neural model scores users x items (its MLP sees each pair).
NEURAL_GRID_ROWS = 2**18


def side_masks(preprocessor, bags: BagEncoder, id_column, features
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which columns of ``codes`` (bags included) and ``continuous`` belong to the side of
    ``id_column`` with side ``features``."""
    codes = [c == id_column or c in features for c in preprocessor.cat_columns_]
    codes += [column in features for column in bags.columns]    # one bag id each
    conts = [c in features for c in preprocessor.cont_columns_]
    return torch.tensor(codes, dtype=torch.bool), torch.tensor(conts, dtype=torch.bool)


def grid_tables(preprocessor, bags: BagEncoder, sides: SideFeatures, feature_names,
                user_column, item_column) -> tuple[torch.Tensor, ...]:
    """``(user codes, user continuous, item codes, item continuous)``: row = user code (row 0
    the unknown user), and row = item position."""
    columns = list(feature_names)

    def encoded(id_column, table):
        ids = pd.Index(preprocessor.categories_[id_column])
        frame = table.reindex(ids).reset_index(names=id_column)
        # Built column by column, not by inserting into ``frame``: with integer names its
        # columns can be a RangeIndex, and pandas mislabels columns inserted into one.
        return encode(preprocessor, bags, pd.DataFrame(
            {column: frame[column] if column in frame.columns
             else pd.Series(np.nan, index=frame.index) for column in columns}))

    def masked(id_column, features, codes, continuous):
        code_mask, continuous_mask = side_masks(preprocessor, bags, id_column, features)
        return codes * code_mask.long(), continuous * continuous_mask.float()

    unknown = encode(preprocessor, bags, pd.DataFrame({c: [np.nan] for c in columns}))
    user_codes, user_continuous = encoded(user_column, sides.user_table)
    users = masked(user_column, sides.user_features, torch.cat([unknown[0], user_codes]),
                   torch.cat([unknown[1], user_continuous]))
    items = masked(item_column, sides.item_features, *encoded(item_column, sides.item_table))
    return (*users, *items)


def ranking_weights(support: np.ndarray, shrinkage, minimum) -> tuple[np.ndarray, np.ndarray]:
    """``(w, eligible)`` per item: the share ``n / (n + shrinkage)`` of its bias (or its
    similarity) kept for an item with ``n`` training interactions, and ``n >= minimum``."""
    weights = support / (support + shrinkage) if shrinkage else np.ones(len(support))
    return weights, support >= minimum


def check_k(k) -> int:
    """``k`` (how many items a top-k returns) as an int, or a ValueError."""
    if not (isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"k must be a positive integer (how many items to return), got {k!r}")
    return int(k)


class GridScorer:
    """One fitted model's scores of every item for users given by code.

    Parameters
    ----------
    model : DotBias or NeuralCF
    tables : tuple of Tensor
        :func:`grid_tables`.
    snapshots : list of state dicts
        An ensemble's members: the scores are their mean.
    device : torch.device
    """

    def __init__(self, model, tables, *, snapshots=(), device="cpu"):
        self.model, self.snapshots, self.device = model, list(snapshots), device
        self.tables = tuple(t.to(device) for t in tables)

    @torch.inference_mode()
    def scores(self, user_codes: np.ndarray, keep: np.ndarray | None = None,
               items: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[len(user_codes), n_items]`` (float32) after the model's output range,
        each item's bias scaled by ``keep`` (its support share) when given; with ``items``
        (item positions), those items' columns only."""
        users, users_cont, item_codes, item_cont = self.tables
        rows = torch.as_tensor(user_codes, dtype=torch.long, device=users.device)
        columns = None
        if items is not None:
            columns = torch.as_tensor(items, dtype=torch.long, device=users.device)
            item_codes, item_cont = item_codes[columns], item_cont[columns]
            keep = None if keep is None else np.asarray(keep)[items]
        kept = None if keep is None else torch.tensor(keep, dtype=torch.float32,
                                                      device=users.device)
        step = len(rows) if isinstance(self.model, DotBias) else max(
            1, NEURAL_GRID_ROWS // max(len(item_codes), 1))
        total, count = None, 0
        with self._each_state() as states:
            for model in states:
                # The bias share dropped by shrinkage, per item (code 0 is not an item).
                biases = model.item_bias.weight[1:, 0]
                biases = biases if columns is None else biases[columns]
                dropped = None if kept is None else (1 - kept) * biases
                parts = []
                for start in range(0, len(rows), step):
                    chunk = rows[start:start + step]
                    logits = model.score_grid(users[chunk], users_cont[chunk], item_codes,
                                              item_cont)
                    if dropped is not None:
                        logits.sub_(dropped)
                    parts.append(output_range_(model.output_range, logits))
                scores = parts[0] if len(parts) == 1 else torch.cat(parts)
                total = scores if total is None else total + scores
                count += 1
        if count > 1:
            total /= count
        return total.cpu().numpy()      # float32: half the memory

    def is_dot_product(self) -> bool:
        """Whether the model's logits are inner products plus biases (:class:`DotBias`)."""
        return isinstance(self.model, DotBias)

    def is_linear(self) -> bool:
        """Whether the scores are the logits themselves (no ``y_range`` squashing), so a sum
        of them (an ensemble's mean) is still an inner product."""
        return isinstance(self.model.output_range, torch.nn.Identity)

    @torch.inference_mode()
    def item_parts(self, keep: np.ndarray | None = None) -> list[np.ndarray]:
        """Per model state (one, or each snapshot), items' ``[vector, offset]`` rows
        ``[n_items, d + 1]`` (float32) such that, with :meth:`user_parts`' ``[vector, 1]``,
        the inner product is the pair's logit up to a constant per user.

        The offset is the item's logit for the unknown user (whose vector is zero): its
        bias and side terms, less what ``keep`` drops of its bias, centred on the items'
        mean. Needs a dot-bias model (:meth:`is_dot_product`).
        """
        users, users_cont, items, items_cont = self.tables
        parts = []
        with self._each_state() as states:
            for model in states:
                offsets = model.score_grid(users[:1], users_cont[:1], items, items_cont)[0]
                if keep is not None:
                    kept = torch.tensor(keep, dtype=torch.float32, device=offsets.device)
                    offsets = offsets - (1 - kept) * model.item_bias.weight[1:, 0]
                # A constant common to every item (the global offset) changes no user's
                # order, but as a shared coordinate it makes all items look alike to the
                # graph index: centred out.
                offsets = offsets - offsets.mean()
                vectors = model.item_vectors(items)
                parts.append(torch.cat([vectors, offsets[:, None]], dim=1)
                             .float().cpu().numpy())
        return parts

    @torch.inference_mode()
    def user_parts(self, user_codes: np.ndarray) -> list[np.ndarray]:
        """Per model state, users' ``[vector, 1]`` rows ``[n, d + 1]`` (see
        :meth:`item_parts`)."""
        users = self.tables[0][torch.as_tensor(user_codes, dtype=torch.long,
                                               device=self.tables[0].device)]
        parts = []
        with self._each_state() as states:
            for model in states:
                vectors = model.user_vectors(users)
                parts.append(torch.cat([vectors, torch.ones_like(vectors[:, :1])], dim=1)
                             .float().cpu().numpy())
        return parts

    @contextlib.contextmanager
    def _each_state(self):
        """The model in eval mode, loaded with each snapshot in turn (or as it is)."""
        model = self.model
        final = {k: v.clone() for k, v in model.state_dict().items()} if self.snapshots \
            else None
        was_training = model.training
        if was_training:      # switching modes walks every module: only when needed
            model.eval()

        def states():
            for state in self.snapshots or [None]:
                if state is not None:
                    model.load_state_dict(state)
                yield model

        try:
            yield states()
        finally:
            if final is not None:
                model.load_state_dict(final)
            if was_training:
                model.train()

    @torch.no_grad()
    def unknown_user_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unknown user's item logits (zero vector and bias) and the item factors."""
        users, users_cont, items, items_cont = self.tables
        base = self.model.score_grid(users[:1], users_cont[:1], items, items_cont)[0]
        return base, self.model.item_factors.weight[1:].detach()

    def item_vectors(self, codes: torch.Tensor | None = None) -> np.ndarray:
        """Items' full vectors (factors plus pooled bags): every item, or encoded rows."""
        codes = self.tables[2] if codes is None else codes.to(self.device)
        with torch.inference_mode():
            return self.model.item_vectors(codes).cpu().numpy()


def seen_matrix(seen_users: np.ndarray, seen_items: np.ndarray, n_users: int,
                n_items: int) -> sp.csr_matrix:
    """Training (user code, item position) pairs as a sparse matrix (row 0: unknown)."""
    known = seen_items > 0      # a missing item id (code 0) is no item to skip
    matrix = sp.csr_matrix((np.ones(int(known.sum()), np.float32),
                            (seen_users[known], seen_items[known] - 1)),
                           shape=(n_users + 1, n_items))
    matrix.sum_duplicates()
    return matrix


def top_k_items(score, user_codes: np.ndarray, k: int, n_items: int, *, seen=None,
                excluded=None) -> tuple[np.ndarray, np.ndarray]:
    """Item positions ``[n, k]`` (-1: none left) and scores, ``score(codes)`` computed in
    chunks of about :data:`CHUNK_SCORES` scores."""
    chunk = max(1, CHUNK_SCORES // max(n_items, 1))
    found, values = [], []
    for start in range(0, len(user_codes), chunk):
        rows = user_codes[start:start + chunk]
        items, scores = top_k(score(rows), k, exclude=None if seen is None else seen[rows],
                              exclude_columns=excluded)
        found.append(items)
        values.append(scores)
    width = min(k, n_items)
    if not found:
        return np.zeros((0, width), np.int64), np.zeros((0, width))
    return np.concatenate(found), np.concatenate(values)
