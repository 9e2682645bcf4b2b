"""The optimizers the Learner builds by name: torch's, without importing ``torch._dynamo``.

torch wraps ``Optimizer.add_param_group``, ``state_dict``, ``load_state_dict`` and
``zero_grad`` in ``torch._disable_dynamo``, and ``step`` in a decorator; both import
``torch._dynamo`` when first called. That import (the compiler's modules and sympy)
takes about a second, paid by the first optimizer of every process: the first ``fit``
of every script, worker and command-line call (a default Adult fit 3.7 s in a fresh
process against 2.5 s in a warm one). The
wrappers only matter while ``torch.compile`` traces an optimizer, which the Learner
never does. These subclasses use the undecorated methods, and :func:`step` runs the
undecorated ``step`` exactly as the decorator would (gradients off, no hooks set);
anything else goes through torch's own methods. A torch whose methods are not wrapped
this way is used as it is.
"""

from __future__ import annotations

import inspect

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

__all__ = ["SGD", "Adam", "AdamW", "build", "step", "unhooked"]

# The code of torch._disable_dynamo's wrapper: a method whose code is this is unwrapped.
_DISABLE_DYNAMO = getattr(torch, "_disable_dynamo", None)
_WRAPPER_CODE = _DISABLE_DYNAMO(lambda: None).__code__ if _DISABLE_DYNAMO else None


def _undecorated(method):
    """``method`` without torch's ``_disable_dynamo`` wrapper, or as it is."""
    inner = getattr(method, "__wrapped__", None)
    if _WRAPPER_CODE is not None and inner is not None \
            and getattr(method, "__code__", None) is _WRAPPER_CODE:
        return inner
    return method


class _Eager:
    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)
    zero_grad = _undecorated(torch.optim.Optimizer.zero_grad)


class AdamW(_Eager, torch.optim.AdamW):
    """:class:`torch.optim.AdamW`, built without importing ``torch._dynamo``."""


class Adam(_Eager, torch.optim.Adam):
    """:class:`torch.optim.Adam`, built without importing ``torch._dynamo``."""


class SGD(_Eager, torch.optim.SGD):
    """:class:`torch.optim.SGD`, built without importing ``torch._dynamo``."""


def build(spec, groups: list[dict], rates: list[float], *, weight_decay: float,
          device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named by ``spec`` ("adamw", "adam", "sgd", or ``callable(groups)``)."""
    if callable(spec):
        return spec(groups)
    if spec == "adamw":
        return AdamW(groups, lr=rates[-1], weight_decay=weight_decay,
                     **_fused(groups, device))
    if spec == "adam":
        return Adam(groups, lr=rates[-1], **_fused(groups, device))
    if spec == "sgd":
        return SGD(groups, lr=rates[-1], momentum=0.9)
    raise ValueError(f"optimizer must be 'adamw', 'adam', 'sgd' or a callable, got {spec!r}")


def _fused(groups: list[dict], device: torch.device) -> dict:
    """``fused=True`` where torch has a fused Adam kernel for these weights: one kernel
    for every tensor instead of a loop over them (3x less time per step on CPU)."""
    dtypes = {p.dtype for group in groups for p in group["params"]}
    supported = dtypes <= {torch.float32, torch.float64, torch.float16, torch.bfloat16}
    return {"fused": True} if supported and device.type in ("cpu", "cuda") else {}


_STEPS: dict[type, object] = {}


def _raw_step(kind: type):
    """torch's ``step`` of ``kind`` under its decorators, or None if it is not the one
    this module knows (a step defined in ``torch.optim``)."""
    if kind not in _STEPS:
        raw = inspect.unwrap(kind.step)
        known = (raw.__name__ == "step" and raw.__module__.startswith("torch.optim.")
                 and getattr(kind.step, "__wrapped__", None) is not None)
        _STEPS[kind] = raw if known else None
    return _STEPS[kind]


def unhooked(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` would run no step hooks and no gradient scaler's
    unscaling: its kernel alone may then stand in for it."""
    return not (_global_optimizer_pre_hooks or _global_optimizer_post_hooks
                or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or getattr(optimizer, "grad_scale", None) is not None
                or getattr(optimizer, "found_inf", None) is not None)


def step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``; for this module's optimizers, when :func:`unhooked`, the
    undecorated step with gradients off, as the decorator runs it."""
    raw = _raw_step(type(optimizer)) if isinstance(optimizer, _Eager) else None
    if raw is None or not unhooked(optimizer):
        optimizer.step()
        return
    with torch.set_grad_enabled(bool(optimizer.defaults.get("differentiable", False))):
        raw(optimizer)
