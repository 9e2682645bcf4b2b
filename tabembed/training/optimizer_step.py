"""torch's fused Adam/AdamW step without its per-step bookkeeping.

``optimizer.step()`` wraps the one fused kernel per parameter group in a
profiler record, hook loops, a graph-capture check, lazy state lookups and a
regrouping of the tensors by device and dtype: ~80 us a step on CPU, more than
the kernel itself for a recommender's tables (measured in bench/NOTES.md). Once
every weight has its state, :func:`optimizer_step` calls the same kernel
directly; anything unusual (hooks, AMP's scaler, amsgrad, mixed devices or
dtypes, another optimizer, a torch without the kernel) takes ``optimizer.step()``.
The result is the same bit for bit (tests/test_optimizer_step.py).
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from tabembed.training.lazy_adam import lazy_adam_step

_KERNELS = (getattr(torch, "_fused_adam_", None), getattr(torch, "_fused_adamw_", None))


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, shorter where the optimizer is torch's fused Adam or AdamW;
    sparse gradients (large recommender tables) take :func:`lazy_adam_step` first."""
    lazy_adam_step(optimizer)
    calls = _direct_calls(optimizer)
    if calls is None:
        optimizer.step()
        return
    with torch.no_grad():
        for (kernel, lr, beta1, beta2, weight_decay, eps, maximize), tensors in calls.items():
            torch._foreach_add_(tensors[-1], 1)
            kernel(*tensors, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                   weight_decay=weight_decay, eps=eps, maximize=maximize, grad_scale=None,
                   found_inf=None)


def clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` (what it does for every torch optimizer)
    without its profiler record."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


def _direct_calls(optimizer):
    """``{(kernel, lr, beta1, beta2, weight_decay, eps, maximize): (params, grads, exp_avgs,
    exp_avg_sqs, [], steps)}``, or None where the stock step must run.

    Groups with the same settings share one kernel call: the update is elementwise
    per tensor, so this changes nothing but the number of calls.
    """
    if (type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or None in _KERNELS
            or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None):
        return None
    calls, device, dtype = {}, None, None
    for group in optimizer.param_groups:
        if (not group.get("fused") or group["amsgrad"] or group["capturable"]
                or group["differentiable"] or "decoupled_weight_decay" not in group
                or torch.is_tensor(group["lr"]) or torch.is_tensor(group["betas"][0])):
            return None
        key = (_KERNELS[bool(group["decoupled_weight_decay"])], group["lr"], *group["betas"],
               group["weight_decay"], group["eps"], group["maximize"])
        for parameter in group["params"]:
            grad = parameter.grad
            if grad is None:
                continue
            state = optimizer.state.get(parameter)
            # A first step (lazy state), a sparse gradient, mixed devices or dtypes:
            # torch's own step.
            if not state or grad.is_sparse or (device is not None and (
                    parameter.device != device or parameter.dtype != dtype)):
                return None
            device, dtype = parameter.device, parameter.dtype
            tensors = calls.setdefault(key, ([], [], [], [], [], []))
            tensors[0].append(parameter)
            tensors[1].append(grad)
            tensors[2].append(state["exp_avg"])
            tensors[3].append(state["exp_avg_sq"])
            tensors[5].append(state["step"])
    return calls
