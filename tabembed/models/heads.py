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


def loss_for_task(task: str, *, label_smoothing: float = 0.0) -> nn.Module:
    """MSE for regression, BCE-with-logits for binary and multi-label, cross-entropy otherwise.

    Binary and regression targets are ``[n]``; the model's ``[n, 1]`` output is
    flattened so the two line up. Every loss takes optional per-row ``weight``
    (sample weights): then it is the weighted mean of the rows' losses. An
    ensemble's ``[n, k, d]`` output gets the mean of its k members' losses
    (:class:`MemberMeanLoss`). ``label_smoothing`` (classification) moves the
    targets that far towards uniform: ``y (1 - s) + s / n_classes``, with two
    classes per label for binary and multi-label.
    """
    return MemberMeanLoss(TaskLoss(task, label_smoothing=label_smoothing))


_FUNCTIONS = {
    "regression": F.mse_loss,
    "binary": F.binary_cross_entropy_with_logits,
    "multilabel": F.binary_cross_entropy_with_logits,
    "multiclass": F.cross_entropy,
}


class TaskLoss(nn.Module):
    """The training loss of ``task``: ``loss(output, target, weight=None)``."""

    def __init__(self, task: str, *, label_smoothing: float = 0.0):
        super().__init__()
        self.task = check_task(task)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing=}")
        if label_smoothing and task == "regression":
            raise ValueError(f"label_smoothing applies to classification, not {task=}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        function = _FUNCTIONS[self.task]
        if self.task == "multiclass":
            per_row = function(output, target, reduction="none" if weight is not None else "mean",
                               label_smoothing=self.label_smoothing)
        else:
            target = target.to(output.dtype)
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
            if weight is None:     # flattened straight away: fewer operations a step
                return function(output.reshape(-1), target.reshape(-1))
            n = output.shape[0]
            per_row = function(output.reshape(n, -1), target.reshape(n, -1),
                               reduction="none").mean(dim=1)
        if weight is None:
            return per_row
        weight = weight.to(per_row.dtype)
        return (per_row * weight).sum() / weight.sum()

    def extra_repr(self) -> str:
        smoothing = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"task={self.task!r}{smoothing}"


class MemberMeanLoss(nn.Module):
    """The mean over members of ``loss`` for ``[n, k, d]`` outputs; ``loss`` itself otherwise.

    Each member sees the same targets (and weights), so the rows are flattened
    to ``n * k`` and the targets repeated: with a (weighted) mean-reduced loss
    that is exactly the mean of the k member losses.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        if output.ndim == 3:
            n, k, d = output.shape
            output, target = output.reshape(n * k, d), target.repeat_interleave(k, dim=0)
            if weight is not None:
                weight = weight.repeat_interleave(k, dim=0)
        return self.loss(output, target) if weight is None else self.loss(output, target, weight)


def predictions_from_output(output: torch.Tensor, task: str) -> torch.Tensor:
    """Regression values ``[n]``; probabilities of the positive class ``[n]`` (binary);
    class probabilities ``[n, k]`` summing to 1 (multiclass); independent per-label
    probabilities ``[n, k]`` (multi-label).

    An ensemble's ``[n, members, d]`` output gives the mean over members of
    each member's prediction (probabilities are averaged, never logits).
    """
    check_task(task)
    if output.ndim == 3:
        return torch.stack([predictions_from_output(output[:, j], task)
                            for j in range(output.shape[1])]).mean(dim=0)
    if task == "regression":
        return output.reshape(-1) if output.shape[-1] == 1 else output
    if task == "binary":
        return torch.sigmoid(output.reshape(-1))
    if task == "multilabel":
        return torch.sigmoid(output)
    return torch.softmax(output, dim=-1)
