"""EntityEmbeddingMLP: one embedding per categorical column, then an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tabembed.models.heads import check_task
from tabembed.models.layers import (
    MLP,
    CategoricalEmbeddings,
    PiecewiseLinearEncoding,
    ScaledSigmoid,
    init_linear,
)

# Measured on a validation split of Adult (bench/RESULTS.md, "Defaults"): hidden
# dropout 0 / 0.1 / 0.3 / 0.5 gave validation accuracy 0.8515 / 0.8518 / 0.8518 /
# 0.8518 and log loss 0.3201 / 0.3185 / 0.3166 / 0.3170, and with piecewise-linear
# inputs 0.1 beat 0.3 (0.8557 vs 0.8554). Dropout barely matters on Adult; 0.1 is
# kept as a mild default (fastai uses 0, the classic default is 0.5).
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
    continuous_bins : sequence of sequences of float, optional
        Bin edges per continuous input (``TabularPreprocessor.bin_edges``): the
        inputs then enter through :class:`PiecewiseLinearEncoding` instead of
        batch norm.
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
        continuous_bins: Sequence[Sequence[float]] | None = None,
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
        if continuous_bins is not None:
            if len(continuous_bins) != n_continuous:
                raise ValueError(f"continuous_bins has {len(continuous_bins)} features, "
                                 f"expected {n_continuous=}")
            self.continuous_norm = PiecewiseLinearEncoding(continuous_bins)
            d_continuous = self.continuous_norm.d_out
        else:
            use_norm = continuous_batch_norm and n_continuous > 0
            self.continuous_norm = nn.BatchNorm1d(n_continuous) if use_norm else nn.Identity()
            d_continuous = n_continuous
        self.body = MLP(self.embeddings.d_out + d_continuous, hidden, dropout=dropout)
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
