"""Training a collaborative model to rank: positives against sampled negatives.

:class:`CandidateScores` wraps a :class:`~tabembed.models.DotBias` or
:class:`~tabembed.models.NeuralCF` for implicit feedback: given a batch of
positive rows and sampled negative item codes (see
:class:`tabembed.sampling.NegativeSampling`), it returns the scores
``[b, 1 + n]`` of each row's positive item (column 0) and of the negatives.
:func:`implicit_loss` turns them into a loss: BPR (Rendle et al., 2009) or the
sampled softmax (Jean et al., 2015; with the log-Q correction of Yi et al.,
2019, for popularity-sampled negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tabembed.models.collab import DotBias

__all__ = ["IMPLICIT_LOSSES", "CandidateScores", "implicit_loss"]

IMPLICIT_LOSSES = ("bpr", "softmax")
# A sampled negative that is the row's own positive ("accidental hit") gets this score,
# so it adds no loss and no gradient.
_MASKED = -1e9


class CandidateScores(nn.Module):
    """Scores of each row's positive item and of sampled negatives (logits, no ``y_range``).

    Parameters
    ----------
    model : DotBias or NeuralCF
        Built with ``y_range=None``.
    item_codes : LongTensor of shape (n_items + 1, n_columns)
        Row ``c``: item code ``c``'s columns of ``codes`` (the item column and the
        item side features; zeros elsewhere). Row 0 is unused.
    item_continuous : Tensor of shape (n_items + 1, n_continuous)
        The same for the numeric columns.
    item_columns, item_numeric : bool Tensor of shape (n_columns,), (n_continuous,)
        Which columns of ``codes`` and ``continuous`` belong to the item side.
    log_q : Tensor of shape (n_items + 1,), optional
        Log-probability of drawing each item as a negative; subtracted from
        every score while training (sampled softmax with popularity sampling).
    """

    def __init__(self, model: nn.Module, item_codes: torch.Tensor,
                 item_continuous: torch.Tensor, item_columns: torch.Tensor,
                 item_numeric: torch.Tensor, log_q: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("item_codes", item_codes.long())
        self.register_buffer("item_continuous", item_continuous.float())
        self.register_buffer("item_columns", item_columns.long())
        self.register_buffer("item_numeric", item_numeric.float())
        self.register_buffer("log_q", None if log_q is None else log_q.float())

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor,
                negatives: torch.Tensor) -> torch.Tensor:
        # The row's user side: every column that is not an item column.
        user_codes = codes * (1 - self.item_columns)
        user_continuous = continuous * (1 - self.item_numeric)
        rows = len(codes)
        if negatives.dim() == 1 and isinstance(self.model, DotBias):
            # One draw for the whole batch: a matrix product against every row, and the
            # per-item corrections as one row broadcast over the grid (never [rows, n]).
            positive = self.model.logits(codes, continuous)
            grid = self.model.score_grid(user_codes, user_continuous, self.item_codes[negatives],
                                         self.item_continuous[negatives])
            if self.training and self.log_q is not None:
                positive = positive - self.log_q[codes[:, 1:2]]
                grid = grid - self.log_q[negatives]
            grid = grid.index_put_(_accidental_hits(codes[:, 1], negatives),
                                   grid.new_tensor(_MASKED))
            return torch.cat([positive, grid], dim=1)
        if negatives.dim() == 1:
            negatives = negatives.expand(rows, -1)
        # Positives and negatives in one forward pass: batch norm in a neural model must
        # normalise them with the same statistics, or it tells them apart.
        candidates = torch.cat([codes[:, 1:2], negatives], dim=1)
        n = candidates.shape[1]
        pair_codes = (user_codes[:, None, :] + self.item_codes[candidates]).reshape(
            rows * n, -1)
        pair_continuous = (user_continuous[:, None, :]
                           + self.item_continuous[candidates]).reshape(rows * n, -1)
        scores = self.model.logits(pair_codes, pair_continuous).reshape(rows, n)
        if self.training and self.log_q is not None:
            scores = scores - self.log_q[candidates]
        hits = torch.cat([torch.zeros_like(codes[:, 1:2], dtype=torch.bool),
                          negatives == codes[:, 1:2]], dim=1)
        return scores.masked_fill(hits, _MASKED)

    def embedding_penalty(self, codes, continuous=None, negatives=None) -> torch.Tensor:
        """The model's penalty on the batch's users and positives, plus the negatives' item
        factors and biases (mean over the draws)."""
        penalty = self.model.embedding_penalty(codes)
        if negatives is not None:
            drawn = negatives.reshape(-1)
            penalty = penalty + (self.model.item_factors(drawn).pow(2).sum(1)
                                 + self.model.item_bias(drawn).pow(2).sum(1)).mean()
        return penalty

    def layer_groups(self) -> list[nn.Module]:
        return self.model.layer_groups()


def _accidental_hits(positives: torch.Tensor, negatives: torch.Tensor):
    """``(rows, slots)`` with ``negatives[slots] == positives[rows]``, found by binary search
    in the sorted draws: a [rows, draws] comparison and its mask cost ~10% of a step."""
    ordered, order = torch.sort(negatives)
    positives = positives.contiguous()
    start = torch.searchsorted(ordered, positives)
    count = torch.searchsorted(ordered, positives, right=True) - start
    rows, slots = [], []
    for k in range(int(count.max()) if len(count) else 0):     # an item drawn k + 1 times
        chosen = (count > k).nonzero().squeeze(1)
        rows.append(chosen)
        slots.append(order[start[chosen] + k])
    if not rows:
        return positives[:0], negatives[:0]
    return torch.cat(rows), torch.cat(slots)


class _RankingLoss(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        if name not in IMPLICIT_LOSSES:
            raise ValueError(f"loss must be one of {IMPLICIT_LOSSES}, got {name!r}")
        self.name = name

    def forward(self, scores: torch.Tensor, target=None, weight=None) -> torch.Tensor:
        if self.name == "bpr":
            # Mean over the negatives of -log sigmoid(positive - negative).
            losses = -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean(dim=1)
        else:
            # Cross-entropy of the positive (class 0) among the candidates: logsumexp minus
            # the positive's score, through the fused log-softmax (its backward is one pass).
            losses = F.cross_entropy(scores, scores.new_zeros(len(scores), dtype=torch.long),
                                     reduction="none")
        if weight is None:
            return losses.mean()
        return (losses * weight).sum() / weight.sum()

    def extra_repr(self) -> str:
        return self.name


def implicit_loss(name: str) -> nn.Module:
    """``loss(scores, target=None, weight=None)`` over :class:`CandidateScores` output:
    ``"bpr"`` or ``"softmax"`` (the weighted mean over rows when ``weight`` is given)."""
    return _RankingLoss(name)
