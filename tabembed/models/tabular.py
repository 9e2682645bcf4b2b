"""EntityEmbeddingMLP: one embedding per categorical column, then an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tabembed.models.heads import check_task
from tabembed.models.layers import MLP, CategoricalEmbeddings, ScaledSigmoid, init_linear

# Defaults measured on validation splits of Adult and MovieLens 100K, never the
# test split: see bench/RESULTS.md, "Dropout defaults".
DEFAULT_HIDDEN = (200, 100)
DEFAULT_DROPOUT = 0.1
DEFAULT_EMBEDDING_DROPOUT = 0.0


class EntityEmbeddingMLP(nn.Module):
    """Entity embeddings of categorical columns, batch-normed continuous columns, an MLP, a head.

    Parameters
    ----------
    embedding_sizes : sequence of (cardinality, width)
        One pair per categorical column, the unknown token counted in the
        cardinality (``TabularPreprocessor.embedding_sizes_``).
    n_continuous : int
        Number of continuous inputs.
    d_out : int
        Output width: 1 for regression and binary, the number of classes or labels otherwise.
    task : {"regression", "binary", "multiclass", "multilabel"}
    hidden : sequence of int
        Hidden layer widths, default ``(200, 100)``.
    dropout : float or sequence of float
        Dropout after each hidden layer.
    embedding_dropout : float
        Dropout on the concatenated embeddings.
    continuous_batch_norm : bool
        Batch norm on the continuous inputs.
    y_range : (low, high), optional
        Regression only: squash the output into the range with a scaled sigmoid.
    """

    def __init__(
        self,
        *,
        embedding_sizes: Sequence[tuple[int, int]],
        n_continuous: int,
        d_out: int = 1,
        task: str = "regression",
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dropout=DEFAULT_DROPOUT,
        embedding_dropout: float = DEFAULT_EMBEDDING_DROPOUT,
        continuous_batch_norm: bool = True,
        y_range: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.task = check_task(task)
        if d_out < 1:
            raise ValueError(f"d_out must be positive, got {d_out=}")
        if task == "binary" and d_out != 1:
            raise ValueError(f"a binary head has one output, got {d_out=}")
        if y_range is not None and task != "regression":
            raise ValueError(f"y_range applies to regression, not {task=}")
        if not embedding_sizes and n_continuous == 0:
            raise ValueError("the model needs at least one categorical or continuous input")
        self.embeddings = CategoricalEmbeddings(embedding_sizes, dropout=embedding_dropout)
        self.n_continuous = n_continuous
        use_norm = continuous_batch_norm and n_continuous > 0
        self.continuous_norm = nn.BatchNorm1d(n_continuous) if use_norm else nn.Identity()
        self.body = MLP(self.embeddings.d_out + n_continuous, hidden, dropout=dropout)
        self.head = init_linear(nn.Linear(self.body.d_out, d_out))
        self.output_range = ScaledSigmoid(*y_range) if y_range is not None else nn.Identity()

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        inputs = self.embeddings(codes)
        if self.n_continuous:
            inputs = torch.cat([inputs, self.continuous_norm(continuous)], dim=1)
        return self.output_range(self.head(self.body(inputs)))

    def layer_groups(self) -> list[nn.Module]:
        """Embeddings (with the continuous input norm), body, head: earliest first."""
        return [nn.ModuleList([self.embeddings, self.continuous_norm]), self.body,
                nn.ModuleList([self.head, self.output_range])]
