"""A training process for tests/test_kill_and_resume.py (not a test module itself).

``python resume_worker.py METHOD CHECKPOINT OUTPUT [KILL_POINT]`` trains a
small EntityEmbeddingMLP with a Checkpoint callback and the averaging method
METHOD, resuming from CHECKPOINT when it exists. KILL_POINT makes it print
``READY`` and wait to be killed, either after a batch (``batch:EPOCH:BATCH``)
or halfway through writing the checkpoint at the end of an epoch
(``write:EPOCH``). A run that completes saves its final weights and
predictions to OUTPUT.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from tabembed.models import EntityEmbeddingMLP, loss_for_task  # noqa: E402
from tabembed.training.averaging import (  # noqa: E402
    EMA,
    SWA,
    FastGeometricEnsemble,
    SnapshotEnsemble,
)
from tabembed.training.callbacks import Callback, Checkpoint  # noqa: E402
from tabembed.training.learner import Learner  # noqa: E402
from tabembed.training.schedules import SGDR, OneCycle  # noqa: E402

EPOCHS = 4


def data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 6, (300, 2), generator=generator)
    continuous = torch.randn(300, 3, generator=generator)
    target = (continuous.sum(1) + codes[:, 0].float() / 3 > 1).float()
    return codes, continuous, target


def averaging(method: str):
    """(callbacks, schedule) of each averaging method."""
    return {
        "none": ([], OneCycle()),
        "ema": ([EMA(decay=0.9)], OneCycle()),
        "swa": ([SWA(start=0.5, swa_lr=0.3)], OneCycle()),
        "snapshot": ([SnapshotEnsemble()], SGDR(cycle_len=1, cycle_mult=1)),
        "fge": ([FastGeometricEnsemble(cycle_epochs=1, n_cycles=2)], OneCycle()),
    }[method]


def learner(method: str) -> tuple[Learner, object]:
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=[(6, 3), (6, 3)], n_continuous=3,
                               task="binary", hidden=(16, 8), dropout=0.1)
    callbacks, schedule = averaging(method)
    return Learner(model, loss_for_task("binary"), data(), batch_size=50, random_state=0,
                   callbacks=callbacks), schedule


class KillPoint(Callback):
    """Announce a point of the run and wait there until the test kills the process."""

    order = 100

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, learner) -> None:
        if (learner.epoch, learner.batch_index) == (self.epoch, self.batch):
            wait_to_be_killed()


def wait_to_be_killed() -> None:
    print("READY", flush=True)
    time.sleep(600)


def kill_while_writing(epoch: int) -> None:
    """Make the checkpoint written at the end of ``epoch`` stop halfway through the file."""
    original = torch.save
    calls = {"n": 0}

    def half_written(state, stream, *args, **kwargs):
        if calls["n"] == epoch:
            stream.write(b"half a checkpoint")
            stream.flush()
            wait_to_be_killed()
        calls["n"] += 1
        return original(state, stream, *args, **kwargs)

    torch.save = half_written


def main(method: str, checkpoint: str, output: str, kill_point: str = "") -> None:
    run, schedule = learner(method)
    extra = [Checkpoint(checkpoint)]
    kind, *where = kill_point.split(":") if kill_point else ("",)
    if kind == "batch":
        extra.append(KillPoint(int(where[0]), int(where[1])))
    elif kind == "write":
        # Epochs already done are not written again by a resumed run.
        done = torch.load(checkpoint, weights_only=True)["resume_epoch"] \
            if Path(checkpoint).exists() else 0
        kill_while_writing(int(where[0]) - done)
    resume = checkpoint if Path(checkpoint).exists() else None
    run.fit(EPOCHS, 1e-2, schedule=schedule, callbacks=extra, resume_from=resume)
    inputs = data(seed=1)[:2]
    torch.save({"model": run.model.state_dict(), "predictions": run.predict(inputs)}, output)


if __name__ == "__main__":
    main(*sys.argv[1:])
