"""Export a fitted estimator's network to ONNX, for serving without PyTorch.

The graph takes the preprocessor's two tensors, ``codes`` (int64 ``[n,
n_categorical]``) and ``continuous`` (float32 ``[n, n_continuous]``), and returns
what the estimator's ``predict_proba`` or ``predict`` would: class (or label)
probabilities, regression values in the target's own units (standardisation or
``log1p`` undone in the graph), or ratings. Snapshot and FGE ensembles export
as the mean of their snapshots, and a cross-fitted estimator (``n_folds``) as
the mean of its members (each member's own snapshots averaged first), all in
one graph. Preprocessing stays in tabembed:
:func:`onnx_inputs` turns a DataFrame into the graph's inputs with the fitted
preprocessor, so a service needs tabembed's preprocessing (numpy and pandas)
and onnxruntime, not torch.

Needs ``pip install 'tabembed[onnx]'`` (onnx and onnxruntime).
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tabembed._io import atomic_write_bytes

__all__ = ["export_onnx", "onnx_inputs"]

INPUT_NAMES = ("codes", "continuous")


class _Served(nn.Module):
    """The network(s) with the estimator's output activation and target decoding."""

    def __init__(self, members: list[list[nn.Module]], task: str, scale: str | None,
                 mean: float, std: float):
        super().__init__()
        self.members = nn.ModuleList(nn.ModuleList(snapshots) for snapshots in members)
        self.task, self.scale, self.mean, self.std = task, scale, mean, std

    def _activated(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim == 3:     # TabM-mini members [n, k, d]: the mean of their predictions
            return torch.stack([self._activated(output[:, j])
                                for j in range(output.shape[1])]).mean(dim=0)
        if self.task == "multiclass":
            return torch.softmax(output, dim=-1)
        if self.task in ("binary", "multilabel"):
            probabilities = torch.sigmoid(output)
            if self.task == "binary":     # predict_proba's two columns
                return torch.cat([1 - probabilities, probabilities], dim=1)
            return probabilities
        return output

    def forward(self, codes: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        output = _mean([_mean([self._activated(snapshot(codes, continuous))
                               for snapshot in member]) for member in self.members])
        if self.scale == "standard":
            output = output * self.std + self.mean
        elif self.scale == "log":
            output = torch.exp(output) - 1     # ONNX has no expm1
        # An input with no columns would be pruned from the graph; keep both inputs, so
        # every exported model takes the same two names.
        for unused in (codes, continuous):
            if unused.shape[1] == 0:
                output = output + unused.sum(dim=1, keepdim=True).to(output.dtype) * 0
        return output


def _mean(outputs: list[torch.Tensor]) -> torch.Tensor:
    return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(dim=0)


def _snapshots(learner) -> list[nn.Module]:
    """A learner's network, or the networks of its snapshot ensemble, on the CPU."""
    model = learner.model
    if learner.predictor is None:
        return [copy.deepcopy(model).cpu().eval()]
    snapshots = []
    for state in learner.predictor.snapshot_states():
        snapshot = copy.deepcopy(model)
        snapshot.load_state_dict(state)
        snapshots.append(snapshot.cpu().eval())
    return snapshots


def _served(estimator) -> _Served:
    inner = getattr(estimator, "estimator_", estimator)     # a transformer's network
    if not hasattr(inner, "learner_"):
        raise ValueError(f"this {type(estimator).__name__} is not fitted yet; call fit first")
    model = inner.learner_.model
    members = [_snapshots(member.learner_) for member in getattr(inner, "members_", [inner])]
    target = getattr(inner, "target_transformer_", None)
    task = getattr(model, "task", "regression")
    scale = getattr(target, "scale", None) if task == "regression" and target else None
    mean = float(getattr(target, "mean_", 0.0) or 0.0)
    std = float(getattr(target, "std_", 1.0) or 1.0)
    return _Served(members, task, scale, mean, std).eval()


def onnx_inputs(estimator, X) -> dict[str, np.ndarray]:
    """The exported graph's inputs for the rows of ``X``, from the fitted preprocessor."""
    from tabembed._validation import frame_for_prediction

    inner = getattr(estimator, "estimator_", estimator)
    frame = frame_for_prediction(inner, X)
    codes, continuous = inner.preprocessor_.transform_arrays(frame)
    return {"codes": codes, "continuous": continuous}


def export_onnx(estimator, path, *, opset: int = 17) -> Path:
    """Write the fitted estimator's network to ``path`` as ONNX (atomically).

    Parameters
    ----------
    estimator : EmbeddingMLPClassifier, EmbeddingMLPRegressor or EmbeddingRecommender
    path : str or Path
    opset : int
        The ONNX operator set.

    Returns
    -------
    Path
        ``path``. Inputs are named ``codes`` and ``continuous`` with a dynamic
        batch axis; the output is ``prediction``. Run it with
        ``onnxruntime.InferenceSession(path).run(None, onnx_inputs(estimator, X))``.
    """
    served = _served(estimator)
    preprocessor = getattr(estimator, "estimator_", estimator).preprocessor_
    codes = torch.zeros((2, len(preprocessor.cat_columns_)), dtype=torch.int64)
    continuous = torch.zeros((2, len(preprocessor.cont_columns_)), dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the TorchScript exporter's deprecation notice
        # dynamo=False: the TorchScript-based exporter needs no onnxscript, and these
        # small static graphs are what it handles best.
        torch.onnx.export(served, (codes, continuous), buffer, input_names=list(INPUT_NAMES),
                          output_names=["prediction"], opset_version=opset, dynamo=False,
                          dynamic_axes={"codes": {0: "rows"}, "continuous": {0: "rows"},
                                        "prediction": {0: "rows"}})
    return atomic_write_bytes(Path(path), buffer.getvalue())
