"""torch's fused Adam/AdamW step without its per-step bookkeeping.

``optimizer.step()`` wraps the one fused kernel per parameter group in a
profiler record, hook loops, a graph-capture check, lazy state lookups and a
regrouping of the tensors by device and dtype: ~80 us a step on CPU, more than
the kernel itself for a recommender's tables. Once
every weight has its state, :func:`optimizer_step` calls the same kernel
directly from a plan kept between steps (the weights, moments and step counts of
each call, rebuilt when the weights with gradients or their states change); anything unusual
(hooks, AMP's scaler, amsgrad, another optimizer, a torch without the kernel)
takes ``optimizer.step()``.
The result is the same bit for bit (tests/test_optimizer_step.py).
"""

from __future__ import annotations

import weakref

import torch

from tabembed.training import optimizers
from tabembed.training.fused_adam import KERNELS, FusedCalls
from tabembed.training.lazy_adam import lazy_adam_step

# torch's Adam and AdamW, and the Learner's (the same, built without torch._dynamo).
_ADAM_TYPES = (torch.optim.Adam, torch.optim.AdamW, optimizers.Adam, optimizers.AdamW)

# One plan per optimizer, dropped with it.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, shorter where the optimizer is torch's fused Adam or AdamW;
    sparse gradients (large recommender tables) take :func:`lazy_adam_step` first."""
    if _run_plan(optimizer):
        return
    lazy_adam_step(optimizer)
    if not _run_plan(optimizer):
        optimizers.step(optimizer)


def clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` (what it does for every torch optimizer)
    without its profiler record."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


class _Plan:
    """The kernel calls of one optimizer for one set of weights with gradients.

    Every weight of the plan has a gradient at each step the plan runs, so all their
    step counts grow together: they are views of one tensor per device and dtype
    (``counts``), and one ``add_`` counts them all (``_foreach_add_`` over 0-dim
    tensors cost ~1.6 us a weight). Groups whose settings agree at a step share a
    kernel call, as in torch's own step.
    """

    def __init__(self, optimizer, weights: list, group_sizes: tuple):
        self.state = optimizer.state
        self.weights = weights
        self.group_sizes = group_sizes
        self.states = states = [optimizer.state[weight] for weight in weights]
        by_kind: dict = {}
        for position, state in enumerate(states):
            by_kind.setdefault((state["step"].device, state["step"].dtype), []).append(position)
        self.counts = []
        for positions in by_kind.values():
            counts = torch.stack([states[p]["step"] for p in positions])
            for p, step in zip(positions, counts.unbind(), strict=True):
                states[p]["step"] = step        # the same value, now a view of ``counts``
            self.counts.append(counts)
        self.steps = [state["step"] for state in states]
        # Per parameter group, its weights' lists per device and dtype.
        self.parts = []
        position = 0
        for group_index, size in enumerate(group_sizes):
            kinds: dict = {}
            for p in range(position, position + size):
                weight = weights[p]
                lists = kinds.setdefault((weight.device, weight.dtype), ([], [], [], [], []))
                lists[0].append(p)
                lists[1].append(weight)
                lists[2].append(states[p]["exp_avg"])
                lists[3].append(states[p]["exp_avg_sq"])
                lists[4].append(states[p]["step"])
            self.parts.extend((group_index, kind, lists) for kind, lists in kinds.items())
            position += size

    def matches(self, optimizer, weights: list, group_sizes: tuple) -> bool:
        # The same weights with gradients, and each still with the state (and step count)
        # the plan holds: a state dict loaded, cleared or edited between steps rebuilds it.
        return (self.state is optimizer.state and self.group_sizes == group_sizes
                and all(a is b for a, b in zip(self.weights, weights, strict=True))
                and all(optimizer.state.get(weight) is state and state["step"] is step
                        for weight, state, step in zip(weights, self.states, self.steps,
                                                       strict=True)))

    def run(self, param_groups: list, grads: list) -> None:
        calls = FusedCalls()
        settings = [calls.settings(group, bool(group["decoupled_weight_decay"]))
                    for group in param_groups]
        for group_index, kind, (positions, weights, exp_avgs, exp_avg_sqs, steps) in self.parts:
            calls.extend(settings[group_index], kind, weights, [grads[p] for p in positions],
                         exp_avgs, exp_avg_sqs, steps)
        with torch.no_grad():
            for counts in self.counts:
                counts.add_(1)
        calls.run(count_steps=False)


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


def _gradients(optimizer):
    """``(weights with gradients, their gradients, how many per group)``, or None where
    torch's step must run (or a gradient is sparse)."""
    if type(optimizer) not in _ADAM_TYPES or None in KERNELS or not optimizers.unhooked(optimizer):
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
