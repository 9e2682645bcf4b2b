"""ctypes bindings of ``dot_bias.c``: tensors in, tensors out.

The callers (tabembed/models/dot_bias_terms.py) check what the C code assumes: CPU,
float32 and contiguous tables, bias tables ``[rows, 1]`` with the factor tables' rows,
int64 codes of one length.
"""

from __future__ import annotations

import ctypes

import torch

from tabembed.native.build import load

_POINTER, _INT, _FLOAT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES = {
    "dot_bias_forward": (_INT, [_INT, _INT, _POINTER, _POINTER, _INT, _INT, _POINTER, _POINTER,
                                _POINTER, _POINTER, _FLOAT, ctypes.c_int32, _FLOAT, _FLOAT,
                                _POINTER, _POINTER, _POINTER]),
    "dot_bias_backward": (None, [_INT, _INT, _POINTER, _POINTER, _INT, _INT, _POINTER, _POINTER,
                                 _POINTER, _POINTER, _POINTER, _POINTER, _FLOAT, _FLOAT, _INT,
                                 _POINTER, _POINTER, _POINTER, _POINTER, _POINTER]),
}
_configured: set[int] = set()


def library() -> ctypes.CDLL | None:
    """The compiled kernels with their signatures set, or None (see ``tabembed.native.reason``)."""
    built = load("dot_bias")
    if built is not None and id(built) not in _configured:
        for name, (result, arguments) in _SIGNATURES.items():
            function = getattr(built, name)
            function.restype, function.argtypes = result, arguments
        _configured.add(id(built))
    return built


def _address(tensor: torch.Tensor | None):
    return None if tensor is None else tensor.data_ptr()


def forward(tables, users: torch.Tensor, items: torch.Tensor, offset: float,
            output_range: tuple[float, float] | None):
    """``(terms [n, 1], sigmoid fraction [n] or None, sum of squares)`` of a batch."""
    user_table, item_table, _, _ = tables
    n = users.shape[0]
    # float32 whatever torch's default dtype: the kernel writes floats.
    terms = torch.empty(n, 1, dtype=torch.float32)
    fraction = torch.empty(n, dtype=torch.float32) if output_range is not None else None
    low, high = output_range if output_range is not None else (0.0, 0.0)
    squares = ctypes.c_double()
    failed = library().dot_bias_forward(
        n, user_table.shape[1], users.data_ptr(), items.data_ptr(), user_table.shape[0],
        item_table.shape[0], *(t.data_ptr() for t in tables), offset,
        output_range is not None, low, high, terms.data_ptr(), _address(fraction),
        ctypes.byref(squares))
    if failed:
        row = failed - 1
        user, item = int(users[row]), int(items[row])
        raise IndexError(f"row {row} of the batch has user code {user} and item code {item}; "
                         f"the tables hold codes 0..{user_table.shape[0] - 1} (users) and "
                         f"0..{item_table.shape[0] - 1} (items)")
    return terms, fraction, squares.value


def backward(tables, users: torch.Tensor, items: torch.Tensor, grad: torch.Tensor,
             fraction: torch.Tensor | None, scale: float, shrink: float, padding_idx: int | None,
             needed):
    """``([four gradient tables or None], offset's gradient)``; ``needed`` says which
    tables want one."""
    user_table, item_table, _, _ = tables
    grads = [torch.empty_like(t) if want else None for t, want in zip(tables, needed)]
    offset_grad = ctypes.c_double()
    library().dot_bias_backward(
        users.shape[0], user_table.shape[1], users.data_ptr(), items.data_ptr(),
        user_table.shape[0], item_table.shape[0], *(t.data_ptr() for t in tables),
        grad.data_ptr(), _address(fraction), scale, shrink,
        -1 if padding_idx is None else padding_idx, *(_address(g) for g in grads),
        ctypes.byref(offset_grad))
    return grads, offset_grad.value
