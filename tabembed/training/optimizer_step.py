"""torch's fused Adam/AdamW step without its per-step bookkeeping.

``optimizer.step()`` wraps the one fused kernel per parameter group in a
profiler record, hook loops, a graph-capture check, lazy state lookups and a
regrouping of the tensors by device and dtype: ~80 us a step on CPU, more than
the kernel itself for a recommender's tables (measured in bench/NOTES.md). Once
every weight has its state, :func:`optimizer_step` calls the same kernel
directly from a plan kept between steps (the weights, moments and step counts of
each call, rebuilt when the weights with gradients change); anything unusual
(hooks, AMP's scaler, amsgrad, another optimizer, a torch without the kernel)
takes ``optimizer.step()``.
The result is the same bit for bit (tests/test_optimizer_step.py).
"""

from __future__ import annotations

import weakref

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from tabembed.training.fused_adam import KERNELS
from tabembed.training.lazy_adam import lazy_adam_step

# One plan per optimizer, dropped with it.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, shorter where the optimizer is torch's fused Adam or AdamW;
    sparse gradients (large recommender tables) take :func:`lazy_adam_step` first."""
    if _run_plan(optimizer):
        return
    lazy_adam_step(optimizer)
    if not _run_plan(optimizer):
        optimizer.step()


def clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` (what it does for every torch optimizer)
    without its profiler record."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


class _Call:
    """One kernel call: a parameter group's weights on one device and dtype.

    The weights' step counts are views of one tensor (``counts``), so one ``add_``
    counts them all: ``_foreach_add_`` over 0-dim tensors cost ~1.6 us a weight.
    """

    def __init__(self, group_index: int, positions: list[int], weights: list, states: list):
        self.group_index = group_index
        self.positions = positions           # of the weights among the step's gradients
        self.weights = weights
        self.exp_avgs = [state["exp_avg"] for state in states]
        self.exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        self.counts = torch.stack([state["step"] for state in states])
        self.steps = list(self.counts.unbind())
        for state, step in zip(states, self.steps, strict=True):
            state["step"] = step             # the same value, now a view of ``counts``


class _Plan:
    """The kernel calls of one optimizer for one set of weights with gradients."""

    def __init__(self, optimizer, weights: list, group_sizes: tuple):
        self.state = optimizer.state
        self.weights = weights
        self.group_sizes = group_sizes
        self.calls = []
        position = 0
        for group_index, size in enumerate(group_sizes):
            by_kind = {}
            for offset in range(size):
                weight = weights[position + offset]
                by_kind.setdefault((weight.device, weight.dtype), []).append(position + offset)
            for positions in by_kind.values():
                chosen = [weights[p] for p in positions]
                self.calls.append(_Call(group_index, positions, chosen,
                                        [optimizer.state[w] for w in chosen]))
            position += size

    def matches(self, optimizer, weights: list, group_sizes: tuple) -> bool:
        return (self.state is optimizer.state and self.group_sizes == group_sizes
                and all(a is b for a, b in zip(self.weights, weights, strict=True)))

    def run(self, param_groups: list, grads: list) -> None:
        with torch.no_grad():
            for call in self.calls:
                group = param_groups[call.group_index]
                beta1, beta2 = group["betas"]
                call.counts.add_(1)
                KERNELS[bool(group["decoupled_weight_decay"])](
                    call.weights, [grads[p] for p in call.positions], call.exp_avgs,
                    call.exp_avg_sqs, [], call.steps, amsgrad=False, lr=group["lr"],
                    beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                    eps=group["eps"], maximize=group["maximize"], grad_scale=None,
                    found_inf=None)


def _run_plan(optimizer) -> bool:
    """Run this step's kernel calls; False where torch's step (or the lazy one) must run."""
    found = _gradients(optimizer)
    if found is None:
        return False
    weights, grads, group_sizes = found
    plan = _PLANS.get(optimizer)
    if plan is None or not plan.matches(optimizer, weights, group_sizes):
        # A first step (torch creates the state), or a weight without one: torch's step.
        if any(not optimizer.state.get(weight) for weight in weights):
            return False
        plan = _PLANS[optimizer] = _Plan(optimizer, weights, group_sizes)
    plan.run(optimizer.param_groups, grads)
    return True


def _direct_path(optimizer) -> bool:
    """Whether this step can take the direct path (the plan exists or can be made)."""
    found = _gradients(optimizer)
    return found is not None and all(optimizer.state.get(weight) for weight in found[0])


def _gradients(optimizer):
    """``(weights with gradients, their gradients, how many per group)``, or None where
    torch's step must run (or a gradient is sparse)."""
    if (type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or None in KERNELS
            or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None):
        return None
    weights, grads, group_sizes = [], [], []
    for group in optimizer.param_groups:
        if (not group.get("fused") or group["amsgrad"] or group["capturable"]
                or group["differentiable"] or "decoupled_weight_decay" not in group
                or torch.is_tensor(group["lr"]) or torch.is_tensor(group["betas"][0])):
            return None
        before = len(weights)
        for parameter in group["params"]:
            grad = parameter.grad
            if grad is None:
                continue
            if grad.is_sparse:
                return None
            weights.append(parameter)
            grads.append(grad)
        group_sizes.append(len(weights) - before)
    return weights, grads, tuple(group_sizes)
