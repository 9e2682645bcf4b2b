"""The dot-bias model's per-row terms and their embedding penalty as one autograd function.

``user . item + user bias + item bias`` for a batch, and the mean over its rows of
the squared factors and biases, are a dozen small autograd nodes: four lookups,
four dense embedding backwards (each zero-fills its table and sorts the batch's
codes), products, sums, powers. At a batch of 512 those costs, not arithmetic,
were most of a training step on CPU. Here the backward is written out: the
gradient of a row is ``g * other row + 2 * p / n * row``, added into each table
once with ``index_add_``. Same values as the plain modules up to float rounding
(tests/test_models.py compares both).

On CPU, with float32 tables and dense gradients, forward and backward are each one call
of a small C kernel (:mod:`tabembed.native.dot_bias`) where a C compiler is present:
the operations left in PyTorch still cost more than their arithmetic (ml-100k fit
0.49 -> 0.35 s). Elsewhere, or with ``TABEMBED_NATIVE=0``, the PyTorch functions below.
"""

from __future__ import annotations

import torch

from tabembed.native import dot_bias as native_dot_bias


class _DotBiasTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, user_table, item_table, user_bias_table, item_bias_table, offset, users,
                items, padding_idx, sparse, output_range):
        user, item = user_table.index_select(0, users), item_table.index_select(0, items)
        user_bias = user_bias_table.index_select(0, users)
        item_bias = item_bias_table.index_select(0, items)
        # Products and sums, not vecdot or dot: autocast would run those in bf16/fp16.
        terms = torch.sum(user * item, dim=1, keepdim=True).add_(user_bias).add_(item_bias)
        squares = (torch.sum(user * user) + torch.sum(item * item)
                   + torch.sum(user_bias * user_bias) + torch.sum(item_bias * item_bias))
        if offset is not None:
            terms.add_(offset)
        ctx.output_range = output_range
        if output_range is not None:     # low + (high - low) * sigmoid(terms)
            low, high = output_range
            ctx.fraction = terms.sigmoid_()
            terms = ctx.fraction.mul(high - low).add_(low)
        # On ctx, not save_for_backward: none is an output (no reference cycle) and the
        # codes are never changed in place, so its version checks would only cost time.
        ctx.rows = (user, item, user_bias, item_bias)
        ctx.codes = (users, items)
        ctx.shapes = (user_table.shape, item_table.shape, user_bias_table.shape,
                      item_bias_table.shape)
        ctx.padding_idx = padding_idx
        ctx.sparse = sparse
        return terms, squares.div_(users.shape[0])

    @staticmethod
    def backward(ctx, grad_terms, grad_penalty):
        if ctx.output_range is not None:
            low, high = ctx.output_range
            grad_terms = torch.ops.aten.sigmoid_backward(grad_terms, ctx.fraction).mul_(high - low)
        user, item, user_bias, item_bias = ctx.rows
        users, items = ctx.codes
        # Both outputs always reach the backward (autograd passes zeros for an unused one).
        shrink = grad_penalty.item() * (2.0 / users.shape[0])
        rows = (torch.add(item * grad_terms, user, alpha=shrink),
                torch.add(user * grad_terms, item, alpha=shrink),
                torch.add(grad_terms, user_bias, alpha=shrink),
                torch.add(grad_terms, item_bias, alpha=shrink))
        codes = (users, items, users, items)
        if ctx.sparse:
            # The batch's rows only, summed per row (coalesced), for lazy Adam; one sort
            # per side, shared by its factors and bias. The padding row gets zeros.
            sides = [_rows(users, ctx.padding_idx), _rows(items, ctx.padding_idx)]
        padded = not ctx.sparse and _contains(ctx.codes, ctx.padding_idx)
        grads = []
        for table, (needed, shape, row_grads, index) in enumerate(zip(
                ctx.needs_input_grad[:4], ctx.shapes, rows, codes, strict=True)):
            if not needed:
                grads.append(None)
                continue
            if ctx.sparse:
                unique, inverse, padding = sides[table % 2]
                summed = row_grads.new_zeros(len(unique), shape[1]).index_add_(
                    0, inverse, row_grads)
                if padding is not None:
                    summed[padding] = 0
                # In range by construction: the forward's lookups took these rows.
                grads.append(torch.sparse_coo_tensor(unique.unsqueeze(0), summed, shape,
                                                     is_coalesced=True, check_invariants=False))
                continue
            grad = row_grads.new_zeros(shape).index_add_(0, index, row_grads)
            if padded:
                grad[ctx.padding_idx] = 0     # nn.Embedding's padding row never learns
            grads.append(grad)
        grad_offset = grad_terms.sum() if ctx.needs_input_grad[4] else None
        return (*grads, grad_offset, None, None, None, None, None)


class _NativeDotBiasTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, user_table, item_table, user_bias_table, item_bias_table, offset, users,
                items, padding_idx, output_range):
        tables = (user_table, item_table, user_bias_table, item_bias_table)
        terms, fraction, squares = native_dot_bias.forward(
            tables, users, items, 0.0 if offset is None else float(offset), output_range)
        # The backward reads the tables' rows again: save_for_backward's version check
        # catches a table changed in place in between.
        ctx.save_for_backward(*tables)
        ctx.codes, ctx.fraction, ctx.output_range = (users, items), fraction, output_range
        ctx.padding_idx, ctx.offset_shape = padding_idx, None if offset is None else offset.shape
        return terms, torch.full((), squares / users.shape[0], dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_terms, grad_penalty):
        users, items = ctx.codes
        scale = 1.0 if ctx.output_range is None else ctx.output_range[1] - ctx.output_range[0]
        grads, offset_grad = native_dot_bias.backward(
            ctx.saved_tensors, users, items,
            grad_terms.reshape(-1).to(torch.float32).contiguous(), ctx.fraction, scale,
            grad_penalty.item() * (2.0 / users.shape[0]), ctx.padding_idx,
            ctx.needs_input_grad[:4])
        grad_offset = (torch.full(ctx.offset_shape, offset_grad, dtype=torch.float32)
                       if ctx.needs_input_grad[4] else None)
        return (*grads, grad_offset, None, None, None, None)


def _native_fits(tables, users, items, offset, sparse) -> bool:
    """Whether the C kernel takes this call: what it assumes holds and it was built."""
    user_table, item_table, user_bias, item_bias = tables
    tensors = tables if offset is None else (*tables, offset)
    return (not sparse
            and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
                    for t in tensors)
            and (offset is None or offset.numel() == 1)
            and user_table.dim() == 2 and item_table.dim() == 2
            and user_table.shape[1] == item_table.shape[1]
            and user_bias.shape == (user_table.shape[0], 1)
            and item_bias.shape == (item_table.shape[0], 1)
            and users.dtype == torch.int64 and items.dtype == torch.int64
            and users.device.type == "cpu" and items.device.type == "cpu"
            and users.dim() == 1 and users.shape == items.shape and users.shape[0] > 0
            and native_dot_bias.library() is not None)


def _contains(codes, code) -> bool:
    """Whether any of the ``codes`` tensors holds ``code`` (None: no)."""
    if code is None:
        return False
    if code == 0:     # codes are never negative: one reduction tells (the usual case)
        return any(len(c) and c.min().item() == 0 for c in codes)
    return any(bool((c == code).any()) for c in codes)


def _rows(codes: torch.Tensor, padding_idx):
    """``(sorted distinct codes, position of each code among them, position of the padding
    code or None)``."""
    unique, inverse = torch.unique(codes, sorted=True, return_inverse=True)
    found = (unique == padding_idx).nonzero() if padding_idx is not None else ()
    return unique, inverse, int(found[0, 0]) if len(found) else None


def dot_bias_terms(user_factors: torch.nn.Embedding, item_factors: torch.nn.Embedding,
                   user_bias: torch.nn.Embedding, item_bias: torch.nn.Embedding,
                   users: torch.Tensor, items: torch.Tensor, offset: torch.Tensor | None = None,
                   output_range: tuple[float, float] | None = None):
    """``(terms [n, 1], penalty)``: ``user . item + user bias + item bias`` per row and the
    mean over the rows of the squared user and item factors and biases.

    With ``offset`` (a scalar weight) it is added to every row's terms, and with
    ``output_range = (low, high)`` the terms become ``low + (high - low) *
    sigmoid(terms)``: the dot-bias model's whole output in one autograd node (each
    node of a training step costs more than its arithmetic here).

    The four embeddings must share one ``padding_idx`` (the unknown code's row,
    which gets no gradient), as :class:`~tabembed.models.collab.DotBias`'s do.
    Gradients are sparse (the batch's rows) where the embeddings are
    ``sparse``, as ``nn.Embedding(sparse=True)``'s.
    """
    padding = {e.padding_idx for e in (user_factors, item_factors, user_bias, item_bias)}
    if len(padding) != 1:
        raise ValueError(f"the four embeddings need one padding_idx, got {padding=}")
    sparse = user_factors.sparse
    # Columns of a codes matrix are strided: each of the eight lookups and index_add_s
    # would copy its index; one copy each here.
    users, items = users.contiguous(), items.contiguous()
    tables = (user_factors.weight, item_factors.weight, user_bias.weight, item_bias.weight)
    if _native_fits(tables, users, items, offset, sparse):
        return _NativeDotBiasTerms.apply(*tables, offset, users, items, padding.pop(),
                                         output_range)
    return _DotBiasTerms.apply(*tables, offset, users, items, padding.pop(), sparse,
                               output_range)
