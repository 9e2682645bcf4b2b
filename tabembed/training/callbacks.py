"""Callbacks: named hooks into the training loop.

Events, in the order the loop fires them::

    on_fit_begin
      on_epoch_begin
        on_batch_begin -> forward, loss, backward -> on_after_backward -> step -> on_batch_end
      on_validation_begin -> validation -> on_validation_end
      on_epoch_end
    on_fit_end

Every hook receives the :class:`~tabembed.training.learner.Learner`. A
callback given to an estimator's ``fit(..., callbacks=[...])`` may also
implement two estimator events, fired around the whole fit:
``on_estimator_fit_begin(estimator)`` and ``on_estimator_fit_end(estimator,
error)`` (``error`` is the exception the fit raised, or None; at its end the
fitted attributes are in place). A
callback that must survive a checkpoint implements ``state_dict`` and
``load_state_dict`` (restored after ``on_fit_begin``, so the hook can build
what the state fills). Callbacks run in ascending ``order``.

The schedule alone sets the learning rate of every step. A callback that
needs its own rates (SWA's constant phase, FGE's final cycles) contributes
them through :meth:`Callback.compose_schedule` before the fit starts, so the
whole run can be previewed with ``simulate``/``plot`` like any schedule.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys

import torch
from tqdm.std import tqdm

EVENTS = (
    "on_fit_begin", "on_epoch_begin", "on_batch_begin", "on_after_backward", "on_batch_end",
    "on_validation_begin", "on_validation_end", "on_epoch_end", "on_fit_end",
)


class TrainingDivergedError(FloatingPointError):
    """The loss, or the weights at the end of training, became NaN or infinite."""


class Callback:
    """Base class: override any of the ``on_*`` events."""

    order = 0

    def compose_schedule(self, schedule):
        """The fit's schedule with this callback's part added (default: unchanged)."""
        return schedule

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        # The constructor arguments that differ from their defaults, as an estimator's
        # parameter (averaging=EMA(decay=0.99)) prints.
        shown = []
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL,
                                                    parameter.VAR_KEYWORD):
                continue
            value = getattr(self, name, parameter.default)
            if value is not parameter.default and value != parameter.default:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def check_callbacks(callbacks) -> list[Callback]:
    """``callbacks`` (None, or a list or tuple of :class:`Callback`) as a list, or a
    ``TypeError`` naming what is wrong and the fix."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    if not isinstance(callbacks, list | tuple):
        raise TypeError(f"callbacks must be a list of Callback objects, got "
                        f"{type(callbacks).__name__}")
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks holds {callback!r} ({type(callback).__name__}), which "
                            "is not a Callback: subclass tabembed.training.callbacks.Callback "
                            "and override its on_* events")
    return list(callbacks)


def compose_schedule(schedule, callbacks):
    """``schedule`` after every callback (in ``order``) has added its part: the rates a fit
    with these callbacks will use, ready for ``simulate``/``plot``."""
    for callback in sorted(callbacks, key=lambda c: c.order):
        schedule = callback.compose_schedule(schedule)
    return schedule


def overrides(callback: Callback, event: str) -> bool:
    """Whether ``callback`` implements ``event`` (so the loop skips empty hooks)."""
    return callable(getattr(type(callback), event, None))


def copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class LearningRateScheduler(Callback):
    """Set every parameter group's rate (and momentum) from a schedule before each batch."""

    order = -10

    def __init__(self, schedule):
        self.schedule = schedule

    def on_batch_begin(self, learner) -> None:
        step, per_epoch, total = learner.step, learner.steps_per_epoch, learner.total_steps
        factor = self.schedule.factor(step, per_epoch, total)
        momentum = self.schedule.momentum(step, per_epoch, total)
        for group in learner.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                elif "momentum" in group:
                    group["momentum"] = momentum


class GradientClipping(Callback):
    """Clip the global gradient norm to ``max_norm`` after each backward pass."""

    def __init__(self, max_norm: float = 1.0):
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm=}")
        self.max_norm = max_norm

    def on_after_backward(self, learner) -> None:
        if learner.scaler is not None:
            learner.scaler.unscale_(learner.optimizer)
        grads = [p.grad for p in learner.model.parameters() if p.grad is not None]
        if not any(grad.is_sparse for grad in grads):
            torch.nn.utils.clip_grad_norm_(learner.model.parameters(), self.max_norm)
            return
        # torch's clip has no norm for sparse gradients (large recommender tables): the
        # same global norm, a sparse gradient's rows summed first.
        total = torch.sqrt(sum((grad.coalesce().values() if grad.is_sparse else grad)
                               .float().pow(2).sum() for grad in grads))
        scale = self.max_norm / (float(total) + 1e-6)
        if scale < 1:
            for grad in grads:
                grad.mul_(scale)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; restore the best weights."""

    order = 10

    def __init__(self, monitor: str = "valid_loss", *, mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0, restore_best: bool = True):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode=}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = min_delta, restore_best
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_state = None, 0, None

    def on_fit_begin(self, learner) -> None:
        if not learner.resuming:
            self._reset()

    def on_epoch_end(self, learner) -> None:
        record = learner.history.records[-1]
        if self.monitor not in record:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r} but the history has "
                f"{sorted(record)}; pass validation data or monitor another value"
            )
        value = record[self.monitor]
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait = value, record["epoch"], 0
            if self.restore_best:
                self.best_state = copy_state(learner.model)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                learner.stop(f"early stopping: {self.monitor} has not improved for "
                             f"{self.patience} epochs (best {self.best:.5g} at epoch "
                             f"{self.best_epoch})")

    def on_fit_end(self, learner) -> None:
        if self.restore_best and self.best_state is not None:
            learner.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.best_state = state["wait"], state["best_state"]


class Checkpoint(Callback):
    """Write a resumable checkpoint every ``every`` epochs, atomically (temporary file, rename).

    ``every_steps`` also writes one every that many batches, inside epochs: a
    long epoch over a stream then resumes at the next batch, not from its start.
    Under torch.distributed rank 0 writes and the other ranks wait.
    """

    order = 20

    def __init__(self, path, *, every: int = 1, every_steps: int | None = None):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every=}")
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be at least 1, got {every_steps=}")
        self.path, self.every, self.every_steps = path, every, every_steps

    def on_batch_end(self, learner) -> None:
        if (self.every_steps and learner.step % self.every_steps == 0
                and learner.batch_index + 1 < learner.steps_per_epoch):
            learner.save_checkpoint(self.path, mid_epoch=True)

    def on_epoch_end(self, learner) -> None:
        if (learner.epoch + 1) % self.every == 0 or learner.stop_training:
            learner.save_checkpoint(self.path)


class GradualUnfreezing(Callback):
    """Train the last layer group first, then unfreeze one more group each epoch (ULMFiT)."""

    order = -20

    def on_epoch_begin(self, learner) -> None:
        n_groups = len(learner.layer_groups)
        learner.freeze_to(max(0, n_groups - 1 - learner.epoch))


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (Jupyter, JupyterLab, Kaggle, Colab)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


def progress_bar(*, total: int, desc: str, stream=None, leave: bool = False):
    """A tqdm bar that shows where people look: a widget in notebooks with ipywidgets,
    text in other notebooks and terminals, nothing when the output is a file or a pipe."""
    stream = stream or sys.stderr
    notebook = in_notebook()
    interactive = notebook or (hasattr(stream, "isatty") and stream.isatty())
    bar_class = tqdm
    if notebook and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as bar_class
    return bar_class(total=total, desc=desc, leave=leave, file=stream,
                     disable=not interactive, mininterval=0.5)


class ProgressBar(Callback):
    """A progress bar over the fit and a table with one row per epoch.

    The bar (on stderr) runs over every batch of the fit and names the epoch
    it is in. The table holds the training loss, the validation loss and
    metrics when there is validation data, the learning rate and the epoch's
    seconds: text lines in a terminal or a log, an HTML table updated in place
    in a notebook. The reason training stopped early, if it did, ends the output.

    Parameters
    ----------
    stream : file, optional
        Where the table goes (default ``sys.stdout``).
    """

    order = 30

    def __init__(self, stream=None):
        self.stream = stream
        self.bar = None
        self.rows: list[dict] = []
        self._display = None

    def on_fit_begin(self, learner) -> None:
        self.rows, self._display = [], None
        self.bar = progress_bar(total=learner.total_steps, desc="training", leave=True)
        self.bar.update(learner.step)      # a resumed fit starts where it stopped

    def on_epoch_begin(self, learner) -> None:
        self.bar.set_description(f"epoch {learner.epoch + 1}/{learner.epochs}", refresh=False)

    def on_batch_end(self, learner) -> None:
        self.bar.update()
        if learner.batch_index % 20 == 0:
            self.bar.set_postfix(loss=f"{learner.last_loss:.4f}", refresh=False)

    def on_epoch_end(self, learner) -> None:
        self.rows.append(dict(learner.history.records[-1]))
        if in_notebook() and self.stream is None:
            self._show_html()
        else:
            self._print_row()

    def on_fit_end(self, learner) -> None:
        self.bar.close()
        if learner.stop_reason:
            print(f"stopped: {learner.stop_reason}", file=self.stream or sys.stdout)

    def _print_row(self) -> None:
        columns = list(self.rows[-1])
        lines = ["  ".join(f"{c:>10}" for c in columns)] if len(self.rows) == 1 else []
        lines.append("  ".join(f"{format_value(c, self.rows[-1][c]):>10}" for c in columns))
        for line in lines:      # above the bar, which redraws below
            tqdm.write(line, file=self.stream or sys.stdout)

    def _show_html(self) -> None:
        import pandas as pd
        from IPython.display import HTML, display

        frame = pd.DataFrame(self.rows)
        html = HTML(frame.to_html(index=False, formatters={
            c: (lambda v, c=c: format_value(c, v)) for c in frame.columns}))
        if self._display is None:
            self._display = display(html, display_id=True)
        else:
            self._display.update(html)


class StepProgress(Callback):
    """One bar over a whole fit's steps (the LR finder's sweep)."""

    order = 30

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.bar = total, desc, None

    def on_fit_begin(self, learner) -> None:
        self.bar = progress_bar(total=self.total, desc=self.desc, leave=True)

    def on_batch_end(self, learner) -> None:
        self.bar.update()

    def on_fit_end(self, learner) -> None:
        self.bar.close()


def format_value(column: str, value) -> str:
    """A history value as people read it: seconds with a unit, rates in e-notation."""
    if column == "time":
        return f"{value:.2f}s"
    if column == "lr":
        return f"{value:.2e}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
