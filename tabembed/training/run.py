"""One training run: :func:`train` a model as a :class:`TrainingConfig` says.

It runs the LR finder when asked, trains with the
:class:`~tabembed.training.learner.Learner`, and refuses a run that diverged,
even when every number stayed finite. Nothing here knows about estimators or
tabular data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from tabembed import defaults
from tabembed.batches import TensorBatches
from tabembed.training import distributed
from tabembed.training.averaging import SnapshotEnsemble
from tabembed.training.config import TrainingConfig
from tabembed.training.learner import Learner, TrainingDivergedError
from tabembed.training.lr_finder import LRFinderResult

__all__ = ["TrainingResult", "decode_lr", "encode_lr", "inference_learner", "train"]

# A fit whose final training loss exceeds this multiple of the untrained model's has
# diverged, even when every number stayed finite (a saturated output, huge embeddings) ...
DIVERGENCE_FACTOR = 2.0
# ... plus this much: from a near-zero loss (a constant target, a few rows) a small rise is
# noise, not divergence.
DIVERGENCE_SLACK = 0.05
# Below this many rows a loss that rose is noise (non-finite losses are still errors).
DIVERGENCE_MIN_ROWS = 32
DIVERGENCE_SAMPLE_ROWS = 8192


@dataclass
class TrainingResult:
    """What a training run produced."""

    learner: Learner
    lr: float | tuple | slice
    lr_finder: LRFinderResult | None
    history: pd.DataFrame
    stop_reason: str | None


def train(config: TrainingConfig, model: torch.nn.Module, loss: Callable, train_data,
          valid_data=None, *, output_activation=None, metrics=None, penalty=None,
          learner: Learner | None = None, callbacks=()) -> TrainingResult:
    """Fit ``model`` as ``config`` says and return the result.

    With an existing ``learner`` (``warm_start``/``partial_fit``) training
    continues from its weights and optimizer state on ``train_data``.
    Raises :class:`~tabembed.training.learner.TrainingDivergedError` when the
    loss or the final weights are not finite, or when training left the model
    clearly worse than it started (:data:`DIVERGENCE_FACTOR`). ``callbacks`` run
    in this training's loop after the config's own (averaging, early stopping), not
    in the LR finder's sweep, and are not kept by the learner afterwards.
    """
    if learner is None:
        learner = Learner(
            model, loss, train_data, valid_data, weight_decay=config.weight_decay,
            batch_size=config.batch_size, device=config.device,
            random_state=config.seeds.shuffle, verbose=config.verbose,
            output_activation=output_activation, metrics=metrics,
            callbacks=config.callbacks(), penalty=penalty,
        )
    else:
        learner.set_train_data(train_data, batch_size=config.batch_size)
    sample = _loss_sample(learner)
    # The loss alone: metrics (an AUC through scikit-learn) cost ~10 ms a call here.
    before = learner.validate(sample, metrics=False)["valid_loss"] if sample is not None \
        else None
    finder, lr = None, config.lr
    if config.lr_finder is not None:
        finder = learner.lr_find(**defaults.LR_FINDER_OPTIONS.get(config.lr_finder, {}))
        if config.lr_finder not in finder.suggestions:
            raise TrainingDivergedError(
                f"the LR finder could not suggest a rate: the loss diverged within "
                f"{len(finder.lrs)} steps of its sweep from {finder.lrs[:1]}; pass a small "
                "fixed lr (e.g. lr=1e-4) and check the inputs for extreme values")
        lr = finder.suggestions[config.lr_finder]
        finder.used = lr
    _announce(config, finder, lr)
    learner.fit(config.epochs, lr, schedule=config.schedule, callbacks=callbacks)
    if sample is not None:
        after = learner.validate(sample, metrics=False)["valid_loss"]
        if not after <= DIVERGENCE_FACTOR * before + DIVERGENCE_SLACK:
            raise TrainingDivergedError(
                f"training left the model worse than it started: training loss {after:.4g} "
                f"after fitting vs {before:.4g} for the untrained model (at lr={lr!r}); lower "
                "the learning rate (lr='auto' runs the LR finder) or check the inputs")
    return TrainingResult(learner=learner, lr=lr, lr_finder=finder,
                          history=learner.history.to_frame(), stop_reason=learner.stop_reason)


def _announce(config: TrainingConfig, finder: LRFinderResult | None, lr) -> None:
    """What ``verbose`` prints before training: the rate and where it came from (1), the
    LR finder's suggestions and the whole configuration (2)."""
    if not distributed.is_main_process():
        return
    if config.verbose >= 2:
        print(f"training configuration: {config}", flush=True)
        if finder is not None:
            print("LR finder suggestions: " + ", ".join(
                f"{name} {rate:.2e}" for name, rate in finder.suggestions.items()), flush=True)
    if config.verbose:
        source = (f"the LR finder's {config.lr_finder!r} suggestion" if finder is not None
                  else "given")
        print(f"learning rate {_format_lr(lr)} ({source}); {config.epochs} epochs of "
              f"{type(config.schedule).__name__}, batch size {config.batch_size}", flush=True)


def inference_learner(model: torch.nn.Module, loss: Callable, *, output_activation=None,
                      device="auto", snapshots=()) -> Learner:
    """A Learner that only predicts (a loaded model): no training data; the mean of the
    ``snapshots``' predictions when there are some (a snapshot or FGE ensemble)."""
    empty = tuple(torch.zeros(0) for _ in range(2))
    learner = Learner(model, loss, TensorBatches(empty), device=device,
                      output_activation=output_activation)
    if snapshots:
        ensemble = SnapshotEnsemble()
        ensemble.snapshots = list(snapshots)
        learner.predictor = ensemble
    return learner


def encode_lr(lr):
    """A learning rate (float, list or slice) as JSON."""
    if isinstance(lr, slice):
        return {"slice": [lr.start, lr.stop]}
    return list(lr) if isinstance(lr, tuple | list) else lr


def decode_lr(value):
    if isinstance(value, dict):
        return slice(*value["slice"])
    return tuple(value) if isinstance(value, list) else value


def _format_lr(lr) -> str:
    if isinstance(lr, slice):
        return f"slice({lr.start:.2e}, {lr.stop:.2e})"
    if isinstance(lr, tuple | list):
        return "[" + ", ".join(f"{r:.2e}" for r in lr) + "]"
    return f"{lr:.2e}"


def _loss_sample(learner: Learner):
    """Up to a few thousand training rows to compare the loss before and after training."""
    source = learner.train_data
    if not isinstance(source, TensorBatches) or source.n_rows < DIVERGENCE_MIN_ROWS:
        return None
    return TensorBatches([t[:DIVERGENCE_SAMPLE_ROWS] for t in source.tensors],
                         batch_size=DIVERGENCE_SAMPLE_ROWS, has_weight=source.has_weight)
