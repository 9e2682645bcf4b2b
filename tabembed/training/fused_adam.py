"""torch's fused Adam/AdamW kernels, one call per group of tensors with the same settings.

The kernel is elementwise per tensor, so weights of different parameter groups (or
gathered rows of several tables) that share a rate, betas, decay, eps, device and dtype
update in one call as in several. Used by :mod:`~tabembed.training.optimizer_step`
(dense weights, from a plan that counts their steps itself) and
:mod:`~tabembed.training.lazy_adam` (the touched rows of sparse ones).
"""

from __future__ import annotations

import torch

# (Adam's, AdamW's); None where this torch lacks them.
KERNELS = (getattr(torch, "_fused_adam_", None), getattr(torch, "_fused_adamw_", None))


class FusedCalls:
    """Tensors collected per settings, then updated by :meth:`run`."""

    def __init__(self):
        self.lists = {}

    @staticmethod
    def settings(group: dict, decoupled: bool) -> tuple:
        """What a call shares, from a parameter group (once per group, not per tensor)."""
        return (KERNELS[decoupled], group["lr"], *group["betas"], group["weight_decay"],
                group["eps"], group["maximize"])

    def add(self, settings: tuple, weight, grad, exp_avg, exp_avg_sq, step) -> None:
        self.extend(settings, (weight.device, weight.dtype), [weight], [grad], [exp_avg],
                    [exp_avg_sq], [step])

    def extend(self, settings: tuple, kind: tuple, weights, grads, exp_avgs, exp_avg_sqs,
               steps) -> None:
        """:meth:`add` for several tensors of one ``kind`` (device, dtype)."""
        lists = self.lists.setdefault((*settings, *kind), ([], [], [], [], [], []))
        lists[0].extend(weights)
        lists[1].extend(grads)
        lists[2].extend(exp_avgs)
        lists[3].extend(exp_avg_sqs)     # lists[4], amsgrad's maxima, stays empty
        lists[5].extend(steps)

    def run(self, *, count_steps: bool = True) -> None:
        """One Adam step of every tensor added (their step counts first, unless the
        caller counted them)."""
        with torch.no_grad():
            for (kernel, lr, beta1, beta2, weight_decay, eps, maximize, _, _), lists in \
                    self.lists.items():
                if count_steps:
                    torch._foreach_add_(lists[5], 1)
                kernel(*lists, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay, eps=eps, maximize=maximize,
                       grad_scale=None, found_inf=None)
