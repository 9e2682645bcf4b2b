"""What a model's raw output means for each task, and the loss that trains it."""

from __future__ import annotations

import torch
from torch import nn

TASKS = ("regression", "binary", "multiclass", "multilabel")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task=}")
    return task


def loss_for_task(task: str) -> nn.Module:
    """MSE for regression, BCE-with-logits for binary and multi-label, cross-entropy otherwise.

    Binary and regression targets are ``[n]``; the model's ``[n, 1]`` output is
    flattened by :class:`FlattenedLoss` so the two line up.
    """
    check_task(task)
    if task == "regression":
        return FlattenedLoss(nn.MSELoss())
    if task == "binary":
        return FlattenedLoss(nn.BCEWithLogitsLoss())
    if task == "multilabel":
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss()


class FlattenedLoss(nn.Module):
    """Apply a loss to ``output.view(-1)`` and a float target."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(output.reshape(-1), target.reshape(-1).to(output.dtype))


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
