"""Weight averaging and single-run ensembles, as callbacks of the Learner.

- :class:`EMA`: Polyak averaging, an exponential moving average of the weights.
- :class:`SWA`: stochastic weight averaging, an equal average of weights
  collected once per epoch (constant rate) or at a cyclical schedule's low points.
- :class:`SnapshotEnsemble`: weights saved at the end of each cycle (SGDR),
  predictions averaged over the snapshots.
- :class:`FastGeometricEnsemble`: short cyclical-linear cycles at the end of
  training, one model collected at each cycle's low point.

SWA's constant-rate phase and FGE's cycles are part of the fit's schedule
(:meth:`~tabembed.training.callbacks.Callback.compose_schedule`): these
callbacks never set a learning rate themselves.

EMA and SWA build on ``torch.optim.swa_utils`` (``AveragedModel``, ``update_bn``;
EMA's update follows ``get_ema_multi_avg_fn``). After ``fit`` the averaged
weights are loaded into the learner's model, so prediction uses one averaged model;
the ensembles install themselves as the learner's ``predictor``, so the same
``Learner.predict`` call returns the averaged prediction.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from tabembed._io import atomic_write
from tabembed.batches import split_batch
from tabembed.training import distributed
from tabembed.training.callbacks import Callback, copy_state
from tabembed.training.schedules import AnnealTo, CyclicalLinear, FinalCycles, start_step

__all__ = ["EMA", "SWA", "FastGeometricEnsemble", "SnapshotEnsemble", "recompute_batch_norm"]


class _Unpacked(nn.Module):
    """Adapts a multi-input model to ``update_bn``, which calls ``model(batch)`` with one object."""

    def __init__(self, model: nn.Module, batches):
        super().__init__()
        self.model, self.batches = model, batches

    def forward(self, batch):
        return self.model(*split_batch(batch, self.batches)[0])


def recompute_batch_norm(model: nn.Module, batches) -> None:
    """Reset batch-norm running statistics and recompute them in one pass over ``batches``.

    Averaged weights never produced the activations the running statistics
    were tracked on, so SWA needs this pass (``torch.optim.swa_utils.update_bn``).
    """
    # update_bn unwraps a list to its first element: wrap each batch in a list.
    wrapped = ([batch] for batch in batches)
    update_bn(wrapped, _Unpacked(model, batches))


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _load_averaged(learner, averaged: AveragedModel) -> None:
    learner.model.load_state_dict(averaged.module.state_dict())


class EMA(Callback):
    """Polyak averaging: ``average = decay * average + (1 - decay) * weights`` after each step.

    Parameters
    ----------
    decay : float
        The averaging coefficient, e.g. 0.999 (an average over ~1000 steps).
    warmup : bool
        Use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early,
        untrained weights fade quickly (TensorFlow's ``num_updates`` rule).

    Validation during training uses the averaged weights; after ``fit`` they
    replace the model's. Batch-norm buffers are averaged like the weights
    (``use_buffers=True``), so running statistics match the averaged model.
    """

    order = 5

    def __init__(self, decay: float = 0.999, *, warmup: bool = True):
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay=}")
        self.decay, self.warmup = decay, warmup
        self.averaged: AveragedModel | None = None
        self._raw = None

    def current_decay(self, n_updates: int) -> float:
        """The coefficient of update number ``n_updates`` (0-based)."""
        if self.warmup:
            return min(self.decay, (1 + n_updates) / (10 + n_updates))
        return self.decay

    def _update(self, averaged, current, n_averaged) -> None:
        # Our own version of get_ema_multi_avg_fn, a method so that fitted models
        # pickle: it adds the decay warm-up and copies integer buffers (batch
        # norm's num_batches_tracked), which lerp cannot average.
        weight = 1 - self.current_decay(int(n_averaged))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    def on_fit_begin(self, learner) -> None:
        # A resumed fit loads the saved average into this fresh copy afterwards.
        self.averaged = AveragedModel(learner.model, multi_avg_fn=self._update,
                                      use_buffers=True)
        # The same tensors AveragedModel.update_parameters pairs up, gathered once:
        # walking the modules at every step cost more than the update itself.
        averaged = [*self.averaged.module.parameters(), *self.averaged.module.buffers()]
        current = [*learner.model.parameters(), *learner.model.buffers()]
        pairs = list(zip(averaged, current))
        self._floats = ([a.detach() for a, c in pairs if a.is_floating_point()],
                        [c.detach() for a, c in pairs if a.is_floating_point()])
        self._others = [(a, c) for a, c in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def on_batch_end(self, learner) -> None:
        count = self.averaged.n_averaged
        averaged, current = self._floats
        if int(count) == 0:
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1 - self.current_decay(int(count)))
        for a, c in self._others:
            a.copy_(c)
        count += 1

    def on_validation_begin(self, learner) -> None:
        self._raw = copy_state(learner.model)
        _load_averaged(learner, self.averaged)

    def on_validation_end(self, learner) -> None:
        learner.model.load_state_dict(self._raw)
        self._raw = None

    def on_fit_end(self, learner) -> None:
        _load_averaged(learner, self.averaged)

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])


class SWA(Callback):
    """Stochastic weight averaging (Izmailov et al.), equal weights for every collected model.

    Parameters
    ----------
    start : float or int
        When averaging begins: a fraction of training (0.75 = the last
        quarter) or an epoch index.
    swa_lr : float, optional
        Constant mode: from ``start`` the rate anneals (cosine over
        ``anneal_epochs``, as ``torch.optim.swa_utils.SWALR``) to ``swa_lr``
        times each group's peak rate, and one model is averaged at the end of
        every epoch. This phase is part of the fit's schedule
        (:class:`~tabembed.training.schedules.AnnealTo`). ``None``: cyclical
        mode, averaging at each low point of the fit's schedule (SGDR,
        CyclicalLR, CyclicalLinear) after ``start``, leaving the rates alone.
    anneal_epochs : int
        Epochs over which the rate moves to the SWA rate.

    Only two copies of the weights exist: the model and the running average.
    After ``fit`` the average replaces the model's weights and batch-norm
    statistics are recomputed with one pass over the training data.
    """

    order = 5

    def __init__(self, start: float = 0.75, *, swa_lr: float | None = 0.5,
                 anneal_epochs: int = 1):
        if isinstance(start, float) and not 0 <= start < 1:
            raise ValueError(f"a fractional start must be in [0, 1), got {start=}")
        self.start, self.swa_lr, self.anneal_epochs = start, swa_lr, anneal_epochs
        self.averaged: AveragedModel | None = None
        self.collected_at: list[int] = []

    def compose_schedule(self, schedule):
        if self.swa_lr is None:
            return schedule
        return AnnealTo(schedule, start=self.start, target=self.swa_lr,
                        anneal_epochs=self.anneal_epochs)

    def on_fit_begin(self, learner) -> None:
        self.averaged = AveragedModel(learner.model)
        self.collected_at = []
        self.start_step = start_step(self.start, learner.steps_per_epoch, learner.total_steps)
        low = learner.schedule.low_points(learner.steps_per_epoch, learner.total_steps)
        self.low_points = {p for p in low if p > self.start_step}
        if self.swa_lr is None and not self.low_points:
            raise ValueError(
                "SWA(swa_lr=None) averages at the low points of a cyclical schedule, but "
                f"{learner.schedule!r} has none after the start; use SGDR or CyclicalLR, or "
                "give a constant swa_lr"
            )

    def on_batch_end(self, learner) -> None:
        if self.swa_lr is None and learner.step in self.low_points:
            self._collect(learner)

    def on_epoch_end(self, learner) -> None:
        if self.swa_lr is not None and learner.step > self.start_step:
            self._collect(learner)

    def _collect(self, learner) -> None:
        self.averaged.update_parameters(learner.model)
        self.collected_at.append(learner.step)

    def on_fit_end(self, learner) -> None:
        if not self.collected_at:
            return
        _load_averaged(learner, self.averaged)
        if _has_batch_norm(learner.model):
            with learner.threads():
                recompute_batch_norm(learner.model, learner.train_data)

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "collected_at": self.collected_at}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.collected_at = list(state["collected_at"])


class _Ensemble(Callback):
    """Collects weight snapshots; predicts with the mean of their (activated) predictions."""

    order = 15

    def __init__(self, keep: int | None = None, directory=None):
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep=}")
        self.keep, self.directory = keep, directory
        self.snapshots: list = []
        self.collected_at: list[int] = []

    def on_fit_begin(self, learner) -> None:
        # A resumed fit gets its snapshots back from the checkpoint afterwards.
        self.snapshots, self.collected_at = [], []
        learner.predictor = None

    def _collect(self, learner) -> None:
        state = copy_state(learner.model)
        if self.directory is not None:
            path = Path(self.directory) / f"snapshot-step{learner.step}.pt"
            if distributed.is_main_process():     # the ranks' weights are the same
                atomic_write(path, lambda stream, state=state: torch.save(state, stream))
            distributed.barrier()
            state = path
        self.snapshots.append(state)
        self.collected_at.append(learner.step)
        if self.keep is not None and len(self.snapshots) > self.keep:
            dropped = self.snapshots.pop(0)
            self.collected_at.pop(0)
            if isinstance(dropped, Path):
                dropped.unlink(missing_ok=True)

    def on_fit_end(self, learner) -> None:
        if self.snapshots:
            learner.predictor = self

    def _state(self, snapshot):
        if isinstance(snapshot, Path):
            return torch.load(snapshot, map_location="cpu", weights_only=True)
        return snapshot

    def snapshot_states(self) -> list[dict]:
        """Every snapshot's state dict, in memory (those kept on disk are read back)."""
        return [self._state(snapshot) for snapshot in self.snapshots]

    def member_predictions(self, learner, batches) -> list[torch.Tensor]:
        """Each snapshot's activated predictions (the model's own weights restored after)."""
        final = copy_state(learner.model)
        try:
            outputs = []
            for snapshot in self.snapshots:
                learner.model.load_state_dict(self._state(snapshot))
                outputs.append(learner.predict_with_model(batches))
        finally:
            learner.model.load_state_dict(final)
        return outputs

    def predict(self, learner, batches) -> torch.Tensor:
        return torch.stack(self.member_predictions(learner, batches)).mean(dim=0)

    def state_dict(self) -> dict:
        return {"snapshots": [s if not isinstance(s, Path) else str(s) for s in self.snapshots],
                "collected_at": self.collected_at}

    def load_state_dict(self, state: dict) -> None:
        self.snapshots = [Path(s) if isinstance(s, str) else s for s in state["snapshots"]]
        self.collected_at = list(state["collected_at"])


class SnapshotEnsemble(_Ensemble):
    """Snapshot ensembles (Huang et al.): save weights at the end of each cycle of the schedule.

    Use with a cyclical schedule (SGDR: ``cycle_len``, ``cycle_mult``).
    Snapshots live in memory, or on disk under ``directory`` (written
    atomically); ``keep`` keeps only the last M.
    """

    def on_fit_begin(self, learner) -> None:
        super().on_fit_begin(learner)
        points = learner.schedule.low_points(learner.steps_per_epoch, learner.total_steps)
        if not points:
            raise ValueError(
                f"SnapshotEnsemble needs a cyclical schedule, but {learner.schedule!r} has no "
                "cycle ends; use SGDR (cycle_len, cycle_mult) or CyclicalLR"
            )
        self.points = set(points)

    def on_batch_end(self, learner) -> None:
        if learner.step in self.points:
            self._collect(learner)


class FastGeometricEnsemble(_Ensemble):
    """Fast geometric ensembling (Garipov et al.): cyclical-linear cycles at the end of training.

    The last ``n_cycles * cycle_epochs`` epochs of the fit follow
    :class:`~tabembed.training.schedules.CyclicalLinear` between
    ``peak_fraction`` and ``peak_fraction * low_fraction`` of each group's
    peak rate (:class:`~tabembed.training.schedules.FinalCycles`, composed
    into the fit's schedule); a model is collected at each cycle's low point.
    """

    def __init__(self, cycle_epochs: float = 2, n_cycles: int = 4, *,
                 peak_fraction: float = 0.1, low_fraction: float = 0.05, keep=None,
                 directory=None):
        super().__init__(keep=keep, directory=directory)
        self.cycle = CyclicalLinear(cycle_epochs=cycle_epochs, low_fraction=low_fraction)
        self.cycle_epochs, self.n_cycles, self.peak_fraction = cycle_epochs, n_cycles, peak_fraction
        self.low_fraction = low_fraction

    def compose_schedule(self, schedule):
        self._schedule = FinalCycles(schedule, cycle=self.cycle, n_cycles=self.n_cycles,
                                     peak=self.peak_fraction)
        return self._schedule

    def on_fit_begin(self, learner) -> None:
        super().on_fit_begin(learner)
        self.points = set(self._schedule.low_points(learner.steps_per_epoch,
                                                    learner.total_steps))

    def on_batch_end(self, learner) -> None:
        if learner.step in self.points:
            self._collect(learner)
