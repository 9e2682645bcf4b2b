"""What a model's raw output means for each task, and the loss that trains it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("regression", "binary", "multiclass", "multilabel")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task=}")
    return task


def loss_for_task(task: str) -> nn.Module:
    """MSE for regression, BCE-with-logits for binary and multi-label, cross-entropy otherwise.

    Binary and regression targets are ``[n]``; the model's ``[n, 1]`` output is
    flattened so the two line up. Every loss takes optional per-row ``weight``
    (sample weights): then it is the weighted mean of the rows' losses.
    """
    return TaskLoss(task)


_FUNCTIONS = {
    "regression": F.mse_loss,
    "binary": F.binary_cross_entropy_with_logits,
    "multilabel": F.binary_cross_entropy_with_logits,
    "multiclass": F.cross_entropy,
}


class TaskLoss(nn.Module):
    """The training loss of ``task``: ``loss(output, target, weight=None)``."""

    def __init__(self, task: str):
        super().__init__()
        self.task = check_task(task)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        function = _FUNCTIONS[self.task]
        if self.task == "multiclass":
            per_row = function(output, target, reduction="none" if weight is not None else "mean")
        else:
            n = output.shape[0]
            output, target = output.reshape(n, -1), target.reshape(n, -1).to(output.dtype)
            if weight is None:
                return function(output.reshape(-1), target.reshape(-1))
            per_row = function(output, target, reduction="none").mean(dim=1)
        if weight is None:
            return per_row
        weight = weight.to(per_row.dtype)
        return (per_row * weight).sum() / weight.sum()

    def extra_repr(self) -> str:
        return f"task={self.task!r}"


def predictions_from_output(output: torch.Tensor, task: str) -> torch.Tensor:
    """Regression values ``[n]``; probabilities of the positive class ``[n]`` (binary);
    class probabilities ``[n, k]`` summing to 1 (multiclass); independent per-label
    probabilities ``[n, k]`` (multi-label)."""
    check_task(task)
    if task == "regression":
        return output.reshape(-1) if output.shape[-1] == 1 else output
    if task == "binary":
        return torch.sigmoid(output.reshape(-1))
    if task == "multilabel":
        return torch.sigmoid(output)
    return torch.softmax(output, dim=-1)
