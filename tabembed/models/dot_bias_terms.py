"""The dot-bias model's per-row terms and their embedding penalty as one autograd function.

``user . item + user bias + item bias`` for a batch, and the mean over its rows of
the squared factors and biases, are a dozen small autograd nodes: four lookups,
four dense embedding backwards (each zero-fills its table and sorts the batch's
codes), products, sums, powers. At a batch of 512 those costs, not arithmetic,
were most of a training step on CPU. Here the backward is written out: the
gradient of a row is ``g * other row + 2 * p / n * row``, added into each table
once with ``index_add_``. Same values as the plain modules up to float rounding
(tests/test_models.py compares both).
"""

from __future__ import annotations

import torch


class _DotBiasTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, user_table, item_table, user_bias_table, item_bias_table, users, items,
                padding_idx):
        user, item = user_table.index_select(0, users), item_table.index_select(0, items)
        user_bias = user_bias_table.index_select(0, users)
        item_bias = item_bias_table.index_select(0, items)
        terms = torch.sum(user * item, dim=1, keepdim=True).add_(user_bias).add_(item_bias)
        squares = (torch.sum(user * user) + torch.sum(item * item)
                   + torch.sum(user_bias * user_bias) + torch.sum(item_bias * item_bias))
        ctx.save_for_backward(user, item, user_bias, item_bias, users, items)
        ctx.shapes = (user_table.shape, item_table.shape, user_bias_table.shape,
                      item_bias_table.shape)
        ctx.padding_idx = padding_idx
        return terms, squares / users.shape[0]

    @staticmethod
    def backward(ctx, grad_terms, grad_penalty):
        user, item, user_bias, item_bias, users, items = ctx.saved_tensors
        # Both outputs always reach the backward (autograd passes zeros for an unused one).
        shrink = grad_penalty * (2.0 / users.shape[0])
        rows = (item * grad_terms + shrink * user, user * grad_terms + shrink * item,
                grad_terms + shrink * user_bias, grad_terms + shrink * item_bias)
        codes = (users, items, users, items)
        grads = []
        for needed, shape, row_grads, index in zip(ctx.needs_input_grad[:4], ctx.shapes, rows,
                                                   codes, strict=True):
            if not needed:
                grads.append(None)
                continue
            grad = row_grads.new_zeros(shape).index_add_(0, index, row_grads)
            if ctx.padding_idx is not None:
                grad[ctx.padding_idx] = 0     # nn.Embedding's padding row never learns
            grads.append(grad)
        return (*grads, None, None, None)


def dot_bias_terms(user_factors: torch.nn.Embedding, item_factors: torch.nn.Embedding,
                   user_bias: torch.nn.Embedding, item_bias: torch.nn.Embedding,
                   users: torch.Tensor, items: torch.Tensor):
    """``(terms [n, 1], penalty)``: ``user . item + user bias + item bias`` per row and the
    mean over the rows of the squared user and item factors and biases.

    The four embeddings must share one ``padding_idx`` (the unknown code's row,
    which gets no gradient), as :class:`~tabembed.models.collab.DotBias`'s do.
    """
    padding = {e.padding_idx for e in (user_factors, item_factors, user_bias, item_bias)}
    if len(padding) != 1:
        raise ValueError(f"the four embeddings need one padding_idx, got {padding=}")
    return _DotBiasTerms.apply(user_factors.weight, item_factors.weight, user_bias.weight,
                               item_bias.weight, users, items, padding.pop())
