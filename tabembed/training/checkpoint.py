"""Checkpoints: everything a run needs to continue exactly where it stopped.

:func:`capture` takes the learner's training state (weights, optimizer,
gradient scaler, step counters, frozen groups, every random-number generator,
the batch source's position, the history and the callbacks' states);
:func:`restore` puts it back. Checkpoint files are that state written
atomically with ``torch.save`` and read back with ``weights_only=True``, so a
checkpoint is data, never code. The LR finder uses the same two functions in
memory to leave no trace of its sweep.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch

from tabembed._io import atomic_write, open_regular
from tabembed.training import distributed

__all__ = ["CHECKPOINT_VERSION", "capture", "read_checkpoint", "restore",
           "restore_callbacks", "write_checkpoint"]

CHECKPOINT_VERSION = 2


def random_state() -> dict:
    """The state of torch's (CPU and CUDA), numpy's and Python's global generators."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[1].tolist(), *numpy_state[2:]],
        "python": list(random.getstate()),
    }


def set_random_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    keys, *rest = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def capture(learner, *, callbacks: bool = True) -> dict:
    """A deep copy of ``learner``'s training state (``callbacks``: their states too)."""
    state = {
        "version": CHECKPOINT_VERSION,
        "model": {k: v.detach().clone() for k, v in learner.model.state_dict().items()},
        "optimizer": copy.deepcopy(learner.optimizer.state_dict()),
        "scaler": learner.scaler.state_dict() if learner.scaler is not None else None,
        "epoch": learner.epoch,
        "step": learner.step,
        "frozen_groups": learner.frozen_groups,
        "random": random_state(),
        "epoch_progress": list(getattr(learner, "epoch_progress", (0.0, 0))),
        "train_data": (copy.deepcopy(learner.train_data.state_dict())
                       if hasattr(learner.train_data, "state_dict") else None),
        "history": copy.deepcopy(learner.history.state_dict()),
    }
    if callbacks:
        state["callbacks"] = copy.deepcopy({_key(i, c): c.state_dict()
                                            for i, c in enumerate(learner.active_callbacks)})
    return state


def _by_rank(state: dict) -> list:
    """Every rank's own part of the state (its generators, as dropout masks differ by rank,
    and its share of the epoch's loss), gathered for rank 0 to save."""
    gathered = [None] * distributed.get_world_size()
    own = {"random": state["random"], "epoch_progress": state["epoch_progress"]}
    torch.distributed.all_gather_object(gathered, own)
    return gathered


def restore(learner, state: dict) -> None:
    """Put back what :func:`capture` took, except the callbacks' states."""
    learner.model.load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    if learner.scaler is not None and state["scaler"] is not None:
        learner.scaler.load_state_dict(state["scaler"])
    learner.freeze_to(state["frozen_groups"])
    learner.epoch, learner.step = state["epoch"], state["step"]
    own = state
    by_rank = state.get("by_rank")      # what differs between processes, rank by rank
    if by_rank and len(by_rank) == distributed.get_world_size():
        own = by_rank[distributed.get_rank()]
    learner.epoch_progress = tuple(own.get("epoch_progress", (0.0, 0)))
    set_random_state(own["random"])
    if state["train_data"] is not None:
        learner.train_data.load_state_dict(state["train_data"])
    learner.history.load_state_dict(state["history"])


def restore_callbacks(learner, state: dict) -> None:
    """The callbacks' states, matched by position and class (after ``on_fit_begin``)."""
    saved = state.get("callbacks", {})
    for i, callback in enumerate(learner.active_callbacks):
        if saved.get(_key(i, callback)):
            callback.load_state_dict(saved[_key(i, callback)])


def write_checkpoint(learner, path, *, mid_epoch: bool = False) -> None:
    """Write a checkpoint, atomically: at the end of the current epoch, or after the
    current batch (``mid_epoch``; the batch source resumes at the next batch).

    Under torch.distributed every rank takes part (their random states are
    gathered, their batch-norm statistics averaged) and rank 0 alone writes;
    the others wait for the file.
    """
    # One set of batch-norm statistics for every rank to load (within an epoch each rank
    # tracks its own batches; at its end they are averaged anyway).
    distributed.average_buffers(learner.model)
    state = capture(learner)
    state["resume_epoch"] = learner.epoch if mid_epoch else learner.epoch + 1
    if not mid_epoch:
        state["epoch_progress"] = [0.0, 0]
    if distributed.is_distributed():
        state["by_rank"] = _by_rank(state)
    if distributed.is_main_process():
        atomic_write(path, lambda stream: torch.save(state, stream))
    distributed.barrier()


def read_checkpoint(path, device) -> dict:
    """The state written by :func:`write_checkpoint`; a damaged file is a ``ValueError``
    naming ``path`` (torch's own errors for a truncated file, ``OSError: [Errno 22]`` or a
    bare ``EOFError``, name neither the file nor the cause)."""
    stream, size = open_regular(path, "checkpoint")
    with stream:
        if size == 0:
            raise ValueError(f"{path} is empty (0 bytes), not a checkpoint; resume from "
                             "another checkpoint or start the run again")
        try:
            # weights_only: a checkpoint is data, never code (torch refuses pickled objects).
            state = torch.load(stream, map_location=device, weights_only=True)
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            raise ValueError(
                f"{path} ({size:,} bytes) is not a readable checkpoint: it is truncated, "
                f"damaged or not a tabembed checkpoint ({type(error).__name__}: {first_line}); "
                "resume from another checkpoint or start the run again") from error
    version = state.get("version", 0) if isinstance(state, dict) else 0
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path} was written by a newer tabembed; upgrade to resume from it")
    if version < CHECKPOINT_VERSION:
        raise ValueError(f"{path} was written by an older tabembed (checkpoint format "
                         f"{version}); it cannot be resumed by this version: start the run again")
    return state


def _key(index: int, callback) -> str:
    return f"{index}:{type(callback).__name__}"
