"""Learner: the one training loop shared by every model family.

It knows a model (any ``nn.Module``), a loss, batch sources and callbacks;
nothing about tables, users or items. The hot path per batch is: set the
rate, forward, loss, backward, step. Everything else hangs off events.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from tabembed.batches import (
    EVALUATION_BATCH_SIZE,
    BatchSource,
    TensorBatches,
    as_batches,
    split_batch,
)
from tabembed.training import checkpoint, distributed, optimizers
from tabembed.training.callbacks import (
    EVENTS,
    Callback,
    LearningRateScheduler,
    ProgressBar,
    TrainingDivergedError,
    compose_schedule,
    overrides,
    progress_bar,
)
from tabembed.training.history import History
from tabembed.training.lr_finder import LRFinderResult, range_test
from tabembed.training.optimizer_step import clear_gradients, optimizer_step
from tabembed.training.parameter_groups import layer_groups, parameter_groups
from tabembed.training.schedules import get_schedule

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PRECISIONS = ("32", "bf16", "fp16")


def pick_device(device="auto") -> torch.device:
    """``"auto"``: CUDA if available, then Apple's MPS, then CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def split_learning_rates(lr, n_groups: int) -> list[float]:
    """One rate per layer group from a float, a list, or a ``slice(low, high)``.

    A slice spreads rates geometrically from ``low`` (first group) to
    ``high`` (last); ``slice(None, high)`` gives ``high / 10`` to all but the
    last group (fastai's convention). This is the one place a learning rate
    is checked: every rate must be a positive finite number.
    """
    if isinstance(lr, slice):
        _check_rate(lr.stop, lr)
        if lr.start is None:
            rates = [lr.stop / 10] * (n_groups - 1) + [lr.stop]
        elif n_groups == 1:
            rates = [lr.stop]
        else:
            _check_rate(lr.start, lr)
            rates = list(np.geomspace(lr.start, lr.stop, n_groups))
    elif isinstance(lr, Sequence) and not isinstance(lr, str):
        if len(lr) != n_groups:
            raise ValueError(f"lr lists {len(lr)} rates but the model has {n_groups} layer groups")
        rates = list(lr)
    else:
        rates = [lr] * n_groups
    for rate in rates:
        _check_rate(rate, lr)
    return [float(rate) for rate in rates]


def _check_rate(rate, lr) -> None:
    number = isinstance(rate, int | float | np.integer | np.floating) and not isinstance(
        rate, bool)
    if not (number and math.isfinite(rate) and rate > 0):
        raise ValueError(f"learning rates must be positive finite numbers, got {lr=}")


class Learner:
    """Train any ``nn.Module`` on batch sources, with callbacks.

    Parameters
    ----------
    model : nn.Module
        Its ``forward`` takes a batch's input tensors. ``layer_groups()``, if
        present, drives discriminative rates and freezing.
    loss : callable
        ``loss(output, target) -> scalar tensor``.
    train_data : BatchSource or tuple of tensors
        The training batches (inputs..., target); tensors are wrapped in a
        shuffling :class:`~tabembed.batches.TensorBatches`.
    valid_data : BatchSource or tuple of tensors, optional
    optimizer : {"adamw", "adam", "sgd"} or callable
        A name, or ``factory(param_groups) -> torch.optim.Optimizer``.
        AdamW (decoupled weight decay) by default.
    weight_decay : float
        Not applied to biases and normalisation layers.
    decay_embeddings : bool
        Whether weight decay applies to embedding tables.
    metrics : dict or sequence of callables
        ``metric(output, target) -> float`` over the whole validation set.
    callbacks : sequence of Callback
    batch_size : int
        Used when ``train_data``/``valid_data`` are tensors: the rows of one step
        over all processes (under torchrun each process takes its share).
    device : str
        ``"auto"`` picks CUDA, then MPS, then CPU.
    precision : {"32", "bf16", "fp16"}
        bf16 autocast (CPU or CUDA) or fp16 autocast with a gradient scaler (CUDA).
    num_threads : int or "auto", optional
        Intra-op CPU threads while training and predicting (restored after).
        ``"auto"`` follows the measured rule in :func:`auto_threads`; ``None``
        leaves torch's setting alone.
    random_state : int, optional
        Seeds torch's generator and the batch order at the start of ``fit``.
    verbose : int
        0 is silent; 1 prints a line per epoch and shows a bar in terminals.
    output_activation : callable, optional
        Applied to outputs by :meth:`predict` (probabilities for classifiers);
        ensembles average after it.
    penalty : callable, optional
        ``penalty(model, inputs) -> scalar tensor`` added to the training loss
        of each batch (not to validation), e.g. an L2 penalty on the embedding
        rows the batch used.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable,
        train_data,
        valid_data=None,
        *,
        optimizer="adamw",
        weight_decay: float = 0.0,
        decay_embeddings: bool = True,
        metrics=None,
        callbacks: Sequence[Callback] = (),
        batch_size: int = 256,
        device="auto",
        precision: str = "32",
        num_threads="auto",
        random_state: int | None = None,
        verbose: int = 0,
        output_activation: Callable | None = None,
        penalty: Callable | None = None,
    ):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision=}")
        self.device = pick_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs CUDA; use 'bf16' on CPU")
        self.model = distributed.unwrap_model(model).to(self.device)
        self.loss = loss
        if random_state is None and distributed.is_distributed():
            random_state = distributed.shared_seed()     # one stream for every rank
        self.random_state = random_state
        self.train_data = self._sharded(as_batches(train_data, batch_size=batch_size,
                                                   shuffle=True)).to(self.device)
        self.valid_data = (None if valid_data is None else
                           as_batches(valid_data, batch_size=EVALUATION_BATCH_SIZE).to(self.device))
        # The module the training steps run: DistributedDataParallel under torchrun (it
        # averages the gradients over ranks), the model itself otherwise. Validation,
        # prediction, averaging and checkpoints use the plain model.
        self.train_model = model if model is not self.model else distributed.wrap_model(model)
        self.optimizer_spec = optimizer
        self.weight_decay = weight_decay
        self.decay_embeddings = decay_embeddings
        if metrics is None:
            metrics = {}
        elif not isinstance(metrics, dict):
            metrics = {getattr(m, "__name__", f"metric_{i}"): m for i, m in enumerate(metrics)}
        self.metrics = metrics
        self.callbacks = list(callbacks)
        self.precision = precision
        self.num_threads = num_threads
        self.verbose = verbose if distributed.is_main_process() else 0
        self.output_activation = output_activation
        self.penalty = penalty
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.history = History()
        self.optimizer = None
        self.predictor = None        # set by ensemble callbacks: predict() delegates to it
        self.layer_groups = layer_groups(self.model)
        self.frozen_groups = 0
        self.step = 0
        self.epoch = 0
        self.epochs = 0
        self.steps_per_epoch = len(self.train_data)
        self.total_steps = 0
        self.stop_training = False
        self.stop_now = False
        self.stop_reason = None
        self.resuming = False
        self.fitting = False
        self.validating = True
        self.active_callbacks: list[Callback] = []
        self.schedule = None
        self.last_loss = math.nan
        self.epoch_progress = (0.0, 0)     # (loss sum, rows) of the epoch in progress

    # ------------------------------------------------------------ setup

    def set_learning_rates(self, lr) -> None:
        """Set each parameter group's peak rate ``base_lr`` from ``lr`` (float, list or slice).

        The rate of each step is ``base_lr`` times the schedule's factor, set by
        the schedule alone (:class:`~tabembed.training.callbacks.LearningRateScheduler`).
        """
        rates = split_learning_rates(lr, len(self.layer_groups))
        if self.optimizer is None:
            groups = parameter_groups(self.model, lr=rates, weight_decay=self.weight_decay,
                                      decay_embeddings=self.decay_embeddings)
            self.optimizer = optimizers.build(self.optimizer_spec, groups, rates,
                                              weight_decay=self.weight_decay, device=self.device)
        for group in self.optimizer.param_groups:
            group["base_lr"] = rates[group.get("layer_group", -1)]

    def freeze_to(self, n: int) -> None:
        """Freeze the first ``n`` layer groups (their weights and batch-norm statistics)."""
        n_groups = len(self.layer_groups)
        if not -n_groups <= n <= n_groups:
            raise ValueError(f"freeze_to needs -{n_groups} <= n <= {n_groups}, got {n=}")
        self.frozen_groups = n % n_groups if n < 0 else n
        for index, group in enumerate(self.layer_groups):
            for parameter in group.parameters():
                parameter.requires_grad_(index >= self.frozen_groups)
                if index < self.frozen_groups:
                    parameter.grad = None

    def freeze(self) -> None:
        """Train only the last layer group."""
        self.freeze_to(len(self.layer_groups) - 1)

    def unfreeze(self) -> None:
        self.freeze_to(0)

    def _train_mode(self) -> None:
        self.model.train()
        for group in self.layer_groups[: self.frozen_groups]:
            for module in group.modules():
                if isinstance(module, _NORM_TYPES):
                    module.eval()   # frozen batch norm keeps its running statistics

    @contextlib.contextmanager
    def threads(self):
        """Inside, torch uses the intra-op threads this learner trains with (``num_threads``)."""
        wanted = auto_threads(self) if self.num_threads == "auto" else self.num_threads
        if wanted is None or self.device.type != "cpu":
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(wanted)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _autocast(self):
        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _emit(self, event: str) -> None:
        for callback in self._handlers[event]:
            getattr(callback, event)(self)

    def stop(self, reason: str, *, immediately: bool = False) -> None:
        """Ask the loop to stop after the current epoch (``immediately``: the current batch)."""
        self.stop_training, self.stop_reason = True, reason
        self.stop_now = self.stop_now or immediately

    def _sharded(self, source):
        """Under torch.distributed, this rank's shard of ``source``, seeded like every rank's."""
        if not distributed.is_distributed() or getattr(source, "world_size", 1) > 1:
            return source
        if getattr(source, "n_rows", None) == 0:     # a learner that only predicts
            return source
        if not hasattr(source, "sharded"):     # TensorBatches, NegativeSampling
            raise distributed.DistributedError(
                f"{type(source).__name__} is not sharded across the {distributed.get_world_size()}"
                " processes; give rank= and world_size= to the batch source")
        world_size = distributed.get_world_size()
        # batch_size counts the rows of one optimizer step over all processes, so a run
        # on N processes takes the same steps as on one.
        return source.sharded(distributed.get_rank(), world_size, random_state=self.random_state,
                              batch_size=max(1, math.ceil(source.batch_size / world_size)))

    def set_train_data(self, data, *, batch_size: int | None = None) -> None:
        """Train on other data from now on (``warm_start``, ``partial_fit``); tensors are
        batched by ``batch_size`` (default: the current source's)."""
        if batch_size is None:
            batch_size = getattr(self.train_data, "batch_size", 256)
        batches = as_batches(data, batch_size=batch_size, shuffle=True)
        if isinstance(batches, TensorBatches) and isinstance(self.train_data, TensorBatches):
            batches.generator = self.train_data.generator   # one random stream per learner
        self.train_data = self._sharded(batches).to(self.device)
        self.steps_per_epoch = len(self.train_data)

    # ------------------------------------------------------------ training

    def fit(self, epochs: int, lr, *, schedule=None, callbacks: Sequence[Callback] = (),
            resume_from=None, learner_callbacks: bool = True, validate: bool = True) -> Learner:
        """Train for ``epochs`` epochs.

        Parameters
        ----------
        epochs : int
        lr : float, list of float, or slice
            Peak rate(s), one per layer group for a list; a slice spreads them.
        schedule : Schedule or str, optional
            A :mod:`~tabembed.training.schedules` schedule (default constant);
            callbacks may add their part (:func:`~tabembed.training.callbacks.compose_schedule`).
        callbacks : sequence of Callback
            Extra callbacks for this fit only (the learner keeps no reference to them
            afterwards, so a fitted model never holds, say, a tuning trial).
        resume_from : path, optional
            A checkpoint written by :class:`~tabembed.training.callbacks.Checkpoint`;
            training continues exactly where it stopped.
        learner_callbacks : bool
            Run the learner's own callbacks (those given to the constructor).
        validate : bool
            Evaluate the validation data after each epoch, when there is some.
        """
        if not (isinstance(epochs, int | np.integer) and epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, got {epochs=}")
        self.set_learning_rates(lr)
        self.epochs = int(epochs)
        self.steps_per_epoch = len(self.train_data)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.stop_training, self.stop_now, self.stop_reason = False, False, None
        self.validating = validate
        chosen = [*(self.callbacks if learner_callbacks else ()), *callbacks]
        if self.verbose and learner_callbacks:
            chosen.append(ProgressBar())
        self.schedule = compose_schedule(get_schedule(schedule), chosen)
        self.active_callbacks = sorted([LearningRateScheduler(self.schedule), *chosen],
                                       key=lambda c: c.order)
        self._handlers = {e: [c for c in self.active_callbacks if overrides(c, e)]
                          for e in EVENTS}
        start, saved = 0, None
        self.resuming = resume_from is not None
        if self.resuming:
            saved = checkpoint.read_checkpoint(resume_from, self.device)
            checkpoint.restore(self, saved)
            start = saved["resume_epoch"]
        else:
            self.step = 0
            self._seed()
        distributed.check_same_on_all_ranks("batches per epoch", self.steps_per_epoch)
        self.fitting = True
        try:
            with self.threads(), distributed.translate_errors("training"):
                self._emit("on_fit_begin")
                if saved is not None:
                    checkpoint.restore_callbacks(self, saved)
                self.resuming = False
                for epoch in range(start, self.epochs):
                    self.epoch = epoch
                    self._train_epoch()
                    if self.stop_training:
                        break
                self._emit("on_fit_end")
                distributed.average_buffers(self.model)
        finally:
            self.fitting, self.resuming = False, False
            self.model.eval()     # predictions come next, in eval mode
            if callbacks:
                self._forget(callbacks)
        self._check_weights()
        return self

    def _forget(self, callbacks: Sequence[Callback]) -> None:
        """Drop one fit's extra callbacks from the active ones."""
        extra = {id(callback) for callback in callbacks}
        self.active_callbacks = [c for c in self.active_callbacks if id(c) not in extra]
        self._handlers = {event: [c for c in handlers if id(c) not in extra]
                          for event, handlers in self._handlers.items()}

    def _seed(self) -> None:
        if self.random_state is None:
            return
        model_seed, order_seed = np.random.SeedSequence(self.random_state).generate_state(2)
        # Every rank shares the batch order (its shard of it); dropout masks differ by rank.
        torch.manual_seed(int(model_seed) + distributed.get_rank())
        if hasattr(self.train_data, "manual_seed"):
            self.train_data.manual_seed(int(order_seed))

    def _check_weights(self) -> None:
        """A diverged last step leaves NaN weights and no NaN loss to show it: check them."""
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingDivergedError(
                    f"training ended with non-finite weights in {name!r} (the last steps "
                    "diverged); lower the learning rate (try lr_find), add gradient clipping, "
                    "or check the inputs for extreme values"
                )

    def _train_epoch(self) -> None:
        started = time.perf_counter()
        self._emit("on_epoch_begin")
        # After the event: a callback that freezes or unfreezes layers there
        # (GradualUnfreezing) gets batch norm's mode right in this very epoch.
        self._train_mode()
        first = getattr(self.train_data, "resume_position", 0)   # a pass resumed mid-epoch
        total, rows = self.epoch_progress if first else (0.0, 0)
        for batch_index, batch in enumerate(self.train_data, start=first):
            self.batch_index = batch_index
            loss = self._train_step(batch)
            size = batch[0].shape[0]
            total += loss * size
            rows += size
            self.epoch_progress = (total, rows)     # a mid-epoch checkpoint saves them
            self._emit("on_batch_end")
            if self.stop_now:
                return
        self.epoch_progress = (0.0, 0)
        total, rows = distributed.all_reduce_sum([total, rows])
        distributed.average_buffers(self.model)       # one set of batch-norm statistics
        record = {"epoch": self.epoch + 1, "train_loss": total / max(rows, 1)}
        if self.valid_data is not None and self.validating:
            record.update(self.validate())
        record["lr"] = max(group["lr"] for group in self.optimizer.param_groups)
        record["time"] = time.perf_counter() - started
        self.history.records.append(record)
        self._emit("on_epoch_end")
        # A rank that decided to stop stops them all (the next step would wait for it).
        self.stop_training = bool(distributed.all_reduce_sum(float(self.stop_training)))

    def _train_step(self, batch) -> float:
        """One optimisation step on ``batch`` (inputs..., target[, weight]); returns the loss."""
        self.batch = batch
        self._emit("on_batch_begin")
        inputs, target, weight = split_batch(batch, self.train_data)
        with self._autocast():
            loss = self._loss(self.train_model(*inputs), target, weight)
            if self.penalty is not None:
                loss = loss + self.penalty(self.model, inputs)
        value = loss.item()
        if self.train_model is not self.model:
            # Every rank must see the same verdict on a diverged loss, or one rank raises
            # while the others wait for it in the next gradient all-reduce.
            value = distributed.all_reduce_sum(value) / distributed.get_world_size()
        self.last_loss = value
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"the training loss became {value} at epoch {self.epoch + 1}, batch "
                f"{self.batch_index + 1}; lower the learning rate (try lr_find), add gradient "
                "clipping, or check the inputs for extreme values"
            )
        clear_gradients(self.optimizer)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self._emit("on_after_backward")
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self._emit("on_after_backward")
            optimizer_step(self.optimizer)
        self.step += 1
        self.history.batch_losses.append(value)
        self.history.batch_lrs.append(self.optimizer.param_groups[-1]["lr"])
        return value

    # ------------------------------------------------------------ evaluation

    def _loss(self, output, target, weight=None):
        # The weight is passed only when there is one, so plain two-argument losses work.
        return self.loss(output, target) if weight is None else self.loss(output, target, weight)

    @contextlib.contextmanager
    def _eval_mode(self):
        training = self.model.training
        if training:      # walking every module costs as much as a one-row forward
            self.model.eval()
        try:
            yield
        finally:
            if training:
                self.model.train()

    @torch.inference_mode()
    def _outputs(self, batches: BatchSource) -> tuple[torch.Tensor, ...]:
        """Concatenated model outputs, targets and weights (or None) over ``batches``."""
        outputs, targets, weights = [], [], []
        if self.verbose and not self.fitting and len(batches) > 4:
            bar = progress_bar(total=len(batches), desc="predicting")
            batches_seen = _counted(batches, bar)
        else:
            batches_seen = batches
        with self._eval_mode():
            for batch in batches_seen:
                inputs, target, weight = split_batch(batch, batches)
                with self._autocast():
                    outputs.append(self.model(*inputs).float())
                if target is not None:
                    targets.append(target)
                if weight is not None:
                    weights.append(weight)
        return (torch.cat(outputs), torch.cat(targets) if targets else None,
                torch.cat(weights) if weights else None)

    @torch.inference_mode()
    def _outputs_of(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Activated outputs of one batch of inputs (the model in eval mode meanwhile)."""
        with self._eval_mode(), self._autocast():
            output = self.model(*inputs).float()
        return self.output_activation(output) if self.output_activation else output

    def validate(self, data=None, *, metrics: bool = True) -> dict[str, float]:
        """Loss and metrics on ``data`` (default: the validation data), weighted when the
        data carries sample weights; ``metrics=False``: the loss alone."""
        batches = self.valid_data if data is None else as_batches(
            data, batch_size=EVALUATION_BATCH_SIZE).to(self.device)
        if batches is None:
            raise ValueError("no validation data: pass valid_data to Learner or data here")
        self._emit_if_fitting("on_validation_begin")
        output, target, weight = self._outputs(batches)
        if getattr(batches, "world_size", 1) > 1:      # each rank scored its shard
            output, target = map(distributed.all_gather_tensors, (output, target))
            weight = None if weight is None else distributed.all_gather_tensors(weight)
        with torch.inference_mode():
            result = {"valid_loss": float(self._loss(output, target, weight))}
            for name, metric in (self.metrics if metrics else {}).items():
                arguments = (output.cpu(), target.cpu()) + (
                    () if weight is None else (weight.cpu(),))
                result[name] = float(metric(*arguments))
        self._emit_if_fitting("on_validation_end")
        return result

    def _emit_if_fitting(self, event: str) -> None:
        if self.fitting:
            self._emit(event)

    def predict(self, data, *, batch_size: int = EVALUATION_BATCH_SIZE) -> torch.Tensor:
        """Outputs for ``data`` (inputs only, or a batch source), after ``output_activation``.

        An ensemble callback may have installed a ``predictor``; then this
        returns the ensemble's averaged prediction through the same call.
        """
        if self.predictor is None and _one_batch(data, batch_size):
            # A few rows (serving): one forward pass without a batch source.
            with self.threads():
                return self._outputs_of(tuple(t.to(self.device) for t in data)).cpu()
        batches = as_batches(data, batch_size=batch_size, has_target=False)
        with self.threads():
            if self.predictor is not None:
                return self.predictor.predict(self, batches.to(self.device)).cpu()
            return self.predict_with_model(batches.to(self.device)).cpu()

    def predict_with_model(self, batches: BatchSource) -> torch.Tensor:
        """The current model's activated outputs (ensembles call this per member)."""
        output = self._outputs(batches)[0]
        return self.output_activation(output) if self.output_activation else output

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path, *, mid_epoch: bool = False) -> None:
        """Everything to resume exactly: weights, optimizer, step, RNG, history, callbacks.

        See :mod:`tabembed.training.checkpoint`; the file is written atomically.
        ``mid_epoch``: taken after the current batch, resumed at the next one.
        """
        checkpoint.write_checkpoint(self, path, mid_epoch=mid_epoch)

    # ------------------------------------------------------------ LR finder

    def lr_find(self, **options) -> LRFinderResult:
        """The LR range test, run through :meth:`fit` with an
        :class:`~tabembed.training.lr_finder.LRFinder` callback (``options`` are its
        parameters: ``start_lr``, ``end_lr``, ``num_steps``, ``beta``, ``divergence``);
        see :func:`tabembed.training.lr_finder.range_test`."""
        return range_test(self, **options)

def _counted(batches, bar):
    """Iterate ``batches``, advancing ``bar`` (closed at the end)."""
    try:
        for batch in batches:
            yield batch
            bar.update()
    finally:
        bar.close()


def auto_threads(learner: Learner) -> int:
    """Intra-op CPU threads for ``num_threads="auto"``: one.

    On our 2-core machines a second
    thread saves 0-18% of an Adult epoch on a quiet machine, and costs 2.2x
    to 4.6x when the other core is busy (a second notebook, a data loader).
    One thread is the choice that is never badly wrong; pass ``num_threads=2``
    (or more) on a dedicated machine with large batches.
    """
    return 1


def _one_batch(data, batch_size: int) -> bool:
    """Whether ``data`` is a tuple of input tensors that fits in one batch."""
    return (isinstance(data, tuple) and len(data) > 0
            and all(isinstance(t, torch.Tensor) for t in data)
            and len(data[0]) <= min(batch_size, 64))
