"""torch's fused Adam/AdamW step without its per-step bookkeeping.

``optimizer.step()`` wraps the one fused kernel per parameter group in a
profiler record, hook loops, a graph-capture check, lazy state lookups and a
regrouping of the tensors by device and dtype: ~80 us a step on CPU, more than
the kernel itself for a recommender's tables (measured in bench/NOTES.md). Once
every weight has its state, :func:`optimizer_step` calls the same kernel
directly (one call per device, dtype and settings); anything unusual (hooks, AMP's
scaler, amsgrad, another optimizer, a torch without the kernel) takes
``optimizer.step()``.
The result is the same bit for bit (tests/test_optimizer_step.py).
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from tabembed.training.fused_adam import KERNELS, FusedCalls
from tabembed.training.lazy_adam import lazy_adam_step


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, shorter where the optimizer is torch's fused Adam or AdamW;
    sparse gradients (large recommender tables) take :func:`lazy_adam_step` first."""
    lazy_adam_step(optimizer)
    calls = _direct_calls(optimizer)
    if calls is None:
        optimizer.step()
    else:
        calls.run()


def clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` (what it does for every torch optimizer)
    without its profiler record."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


def _direct_calls(optimizer) -> FusedCalls | None:
    """The fused kernel calls of this step, or None where the stock step must run."""
    if (type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or None in KERNELS
            or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None):
        return None
    calls = FusedCalls()
    for group in optimizer.param_groups:
        if (not group.get("fused") or group["amsgrad"] or group["capturable"]
                or group["differentiable"] or "decoupled_weight_decay" not in group
                or torch.is_tensor(group["lr"]) or torch.is_tensor(group["betas"][0])):
            return None
        settings = calls.settings(group, bool(group["decoupled_weight_decay"]))
        for parameter in group["params"]:
            grad = parameter.grad
            if grad is None:
                continue
            state = optimizer.state.get(parameter)
            # A first step (torch creates the state) or a sparse gradient: torch's step.
            if not state or grad.is_sparse:
                return None
            calls.add(settings, parameter, grad, state["exp_avg"], state["exp_avg_sq"],
                      state["step"])
    return calls
