"""Optimizer parameter groups: per layer group learning rates, no decay on biases and norms."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
          nn.InstanceNorm1d)


def layer_groups(model: nn.Module) -> list[nn.Module]:
    """The model's ``layer_groups()`` if it has them, else the whole model as one group."""
    groups = model.layer_groups() if hasattr(model, "layer_groups") else [model]
    return [g for g in groups if any(True for _ in g.parameters())]


def parameter_groups(
    model: nn.Module,
    *,
    lr,
    weight_decay: float = 0.0,
    decay_embeddings: bool = True,
) -> list[dict]:
    """Parameter groups for ``torch.optim``: two per layer group (decayed and not).

    Biases (any 1-D parameter), normalisation layers and, unless
    ``decay_embeddings``, embedding tables get no weight decay: decaying them
    only pulls scale parameters towards 0 (fastai and timm do the same).
    ``lr`` is one rate or one per layer group; each group dict carries its
    ``layer_group`` index so schedules can keep the ratios.
    """
    groups = layer_groups(model)
    rates = list(lr) if isinstance(lr, Sequence) else [lr] * len(groups)
    if len(rates) != len(groups):
        raise ValueError(f"lr has {len(rates)} rates but the model has {len(groups)} layer groups")
    no_decay_modules = _NORMS + (() if decay_embeddings else (nn.Embedding,))
    seen, result = set(), []
    for index, (group, rate) in enumerate(zip(groups, rates)):
        decay, plain = [], []
        for module in group.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                skip = isinstance(module, no_decay_modules) or parameter.ndim <= 1 \
                    or name.endswith("bias")
                (plain if skip else decay).append(parameter)
        for params, decay_value in ((decay, weight_decay), (plain, 0.0)):
            if params:
                result.append({"params": params, "lr": rate, "weight_decay": decay_value,
                               "layer_group": index})
    return result
