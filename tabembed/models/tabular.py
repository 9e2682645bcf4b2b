"""EntityEmbeddingMLP: one embedding per categorical column, then an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tabembed import defaults
from tabembed.models.augmentation import EmbeddingMixup, SwapNoise
from tabembed.models.heads import check_task
from tabembed.models.layers import (
    MLP,
    CategoricalEmbeddings,
    PiecewiseLinearEncoding,
    ScaledSigmoid,
    autocasting,
    exporting,
    init_linear,
)
from tabembed.models.members import ADAPTER_INITS, LinearMembers, MemberScaling
from tabembed.models.numeric_embeddings import PeriodicEmbeddings
from tabembed.models.prediction_network import prediction_mlp

CONTINUOUS_EMBEDDINGS = (None, "plr", "plr_lite")


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
    continuous_embedding : {None, "plr", "plr_lite"}
        Periodic embeddings of the continuous inputs, then a linear layer per
        feature (``"plr"``) or shared (``"plr_lite"``) and a ReLU
        (:class:`~tabembed.models.numeric_embeddings.PeriodicEmbeddings`);
        not together with ``continuous_bins``.
    d_embedding, n_frequencies, frequency_init_scale : int, int, float
        Sizes of the periodic embeddings and the std of their initial frequencies.
    n_members : int
        k > 1 trains k members in one model (TabM-mini): shared embeddings and
        body, a scaling adapter and a head per member; the output is then
        ``[n, k, d_out]`` (the losses and predictions in
        :mod:`tabembed.models.heads` average over members).
    member_init : {"random_signs", "ones"}
        Initial adapters; ``"ones"`` starts every member equal.
    swap_noise : float
        Training only: the probability that a cell is replaced by the same
        column's value in another row of the batch.
    mixup_alpha : float
        Training only: mixup of the encoded inputs with ``Beta(alpha, alpha)``
        weights; train with :class:`~tabembed.models.augmentation.MixupLoss`
        around the loss (``MixupLoss(loss, model.mixup)``).
    """

    def __init__(
        self,
        *,
        embedding_sizes: Sequence[tuple[int, int]],
        n_continuous: int,
        d_out: int = 1,
        task: str = "regression",
        hidden: Sequence[int] = defaults.MLP_HIDDEN,
        dropout=defaults.MLP_DROPOUT,
        embedding_dropout: float = defaults.MLP_EMBEDDING_DROPOUT,
        continuous_batch_norm: bool = True,
        y_range: tuple[float, float] | None = None,
        continuous_bins: Sequence[Sequence[float]] | None = None,
        continuous_embedding: str | None = None,
        d_embedding: int = 24,
        n_frequencies: int = 48,
        frequency_init_scale: float = 0.01,
        n_members: int = 1,
        member_init: str = "random_signs",
        swap_noise: float = 0.0,
        mixup_alpha: float = 0.0,
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
        if continuous_embedding not in CONTINUOUS_EMBEDDINGS:
            raise ValueError(f"continuous_embedding must be one of {CONTINUOUS_EMBEDDINGS}, "
                             f"got {continuous_embedding=}")
        if continuous_embedding is not None and continuous_bins is not None:
            raise ValueError("pass continuous_bins (piecewise-linear) or continuous_embedding, "
                             f"not both; got {continuous_embedding=}")
        if n_members < 1:
            raise ValueError(f"n_members must be at least 1, got {n_members=}")
        if member_init not in ADAPTER_INITS:
            raise ValueError(f"member_init must be one of {ADAPTER_INITS}, got {member_init=}")
        self.swap_noise = SwapNoise(p=swap_noise)
        self.mixup = EmbeddingMixup(alpha=mixup_alpha)
        self.embeddings = CategoricalEmbeddings(embedding_sizes, dropout=embedding_dropout)
        self.n_continuous = n_continuous
        if continuous_embedding is not None and n_continuous:
            self.continuous_norm = PeriodicEmbeddings(
                n_features=n_continuous, d_embedding=d_embedding, n_frequencies=n_frequencies,
                frequency_init_scale=frequency_init_scale, lite=continuous_embedding == "plr_lite")
            d_continuous = self.continuous_norm.d_out
        elif continuous_bins is not None:
            if len(continuous_bins) != n_continuous:
                raise ValueError(f"continuous_bins has {len(continuous_bins)} features, "
                                 f"expected {n_continuous=}")
            self.continuous_norm = PiecewiseLinearEncoding(continuous_bins)
            d_continuous = self.continuous_norm.d_out
        else:
            use_norm = continuous_batch_norm and n_continuous > 0
            self.continuous_norm = nn.BatchNorm1d(n_continuous) if use_norm else nn.Identity()
            d_continuous = n_continuous
        d_inputs = self.embeddings.d_out + d_continuous
        self.n_members = n_members
        self.member_scaling = (MemberScaling(n_members=n_members, d=d_inputs, init=member_init)
                               if n_members > 1 else None)
        self.body = MLP(d_inputs, hidden, dropout=dropout)
        self.head = (LinearMembers(n_members=n_members, d_in=self.body.d_out, d_out=d_out)
                     if n_members > 1 else init_linear(nn.Linear(self.body.d_out, d_out)))
        self.output_range = ScaledSigmoid(*y_range) if y_range is not None else nn.Identity()
        self.continuous_values = None

    def set_continuous_values(self, values) -> None:
        """Per continuous input, the sorted values it took in training (None where they
        were many): a hint for predictions, never a change to them.

        The folded prediction network (:mod:`tabembed.models.prediction_network`) precomputes the
        periodic embedding of each of these values; the preprocessor's
        ``continuous_values()`` gives them. Not saved with the weights.
        """
        if values is not None:
            if len(values) != self.n_continuous:
                raise ValueError(f"continuous_values needs one entry per continuous input, "
                                 f"got {len(values)} for {self.n_continuous=}")
            values = [None if v is None else torch.as_tensor(v, dtype=torch.float32).flatten()
                      for v in values]
        self.continuous_values = values
        self.__dict__.pop("_folded_cache", None)

    def encode(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """The body's input ``[n, d]``: embeddings and encoded numbers (after swap noise)."""
        inputs = self.embeddings(self.swap_noise(codes))
        if self.n_continuous:
            inputs = torch.cat([inputs, self.continuous_norm(self.swap_noise(continuous))], dim=1)
        return inputs

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        if not (self.training or torch.is_grad_enabled() or exporting()
                or autocasting(codes.device.type)):
            folded = self._folded()
            if folded is not None:
                return folded(codes, continuous)
        inputs = self.mixup(self.encode(codes, continuous))
        if self.member_scaling is None:
            return self.output_range(self.head(self.body(inputs)))
        scaled = self.member_scaling(inputs)                        # [n, k, d]
        n, k, d = scaled.shape
        hidden = self.body(scaled.reshape(n * k, d)).reshape(n, k, -1)
        return self.output_range(self.head(hidden))                 # [n, k, d_out]

    def _folded(self):
        """The folded network (:mod:`tabembed.models.prediction_network`) for predictions.

        Rebuilt when one of the tensors it was built from has changed: every
        in-place update (optimizer steps, batch-norm statistics,
        ``load_state_dict``) bumps a tensor's version counter, and moves or casts
        give it new storage. Switching to training mode, ``to()``/``float()`` and
        the like drop it too (tensors replaced by new objects).
        """
        cached = self.__dict__.get("_folded_cache")
        if cached is not None:
            tensors, key, folded = cached
            if key == tuple((t._version, t.data_ptr()) for t in tensors):
                return folded
        tensors = (*self.parameters(), *self.buffers())
        with torch.inference_mode(False):
            folded = prediction_mlp(self)
        key = tuple((t._version, t.data_ptr()) for t in tensors)
        self.__dict__["_folded_cache"] = (tensors, key, folded)
        return folded

    def train(self, mode: bool = True):
        self.__dict__.pop("_folded_cache", None)
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_folded_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_folded_cache"}

    def layer_groups(self) -> list[nn.Module]:
        """Embeddings (with the continuous input encoding), body (with the members'
        adapters), head: earliest first."""
        body = self.body if self.member_scaling is None else nn.ModuleList(
            [self.member_scaling, self.body])
        return [nn.ModuleList([self.embeddings, self.continuous_norm]), body,
                nn.ModuleList([self.head, self.output_range])]
