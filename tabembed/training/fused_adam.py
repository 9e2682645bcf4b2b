"""torch's fused Adam/AdamW kernels, one call per group of tensors with the same settings.

The kernel is elementwise per tensor, so weights of different parameter groups (or
gathered rows of several tables) that share a rate, betas, decay, eps, device and dtype
update in one call as in several. :class:`FusedCalls` serves
:mod:`~tabembed.training.lazy_adam` (the touched rows of sparse weights);
:mod:`~tabembed.training.optimizer_step` calls ``KERNELS`` from its own plan (dense ones).
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
        lists = self.lists.setdefault((*settings, weight.device, weight.dtype),
                                      ([], [], [], [], [], []))
        lists[0].append(weight)
        lists[1].append(grad)
        lists[2].append(exp_avg)
        lists[3].append(exp_avg_sq)      # lists[4], amsgrad's maxima, stays empty
        lists[5].append(step)

    def run(self) -> None:
        """One Adam step of every tensor added (their step counts first)."""
        with torch.no_grad():
            for (kernel, lr, beta1, beta2, weight_decay, eps, maximize, _, _), lists in \
                    self.lists.items():
                torch._foreach_add_(lists[5], 1)
                kernel(*lists, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay, eps=eps, maximize=maximize,
                       grad_scale=None, found_inf=None)
