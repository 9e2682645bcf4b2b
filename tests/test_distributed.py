"""torch.distributed helpers, and real 2-process DDP training with gloo on this machine."""

import faulthandler
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tabembed.datasets import make_synthetic
from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.preprocessing import TabularPreprocessor
from tabembed.streaming import (
    ParquetBatches,
    TableTransform,
    ValidationSplit,
    fit_preprocessor,
    fit_target,
    train_valid_sources,
)
from tabembed.training import distributed
from tabembed.training.callbacks import Callback, Checkpoint
from tabembed.training.distributed import DistributedError, launch_from_environment
from tabembed.training.learner import Learner

ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
       "MASTER_PORT": "29500"}


# ------------------------------------------------------------------ one process

def test_launch_is_read_from_torchrun_variables():
    assert launch_from_environment({}) is None
    launch = launch_from_environment(ENV)
    assert (launch.rank, launch.world_size, launch.local_rank) == (1, 2, 1)
    with pytest.raises(DistributedError, match=r"\['MASTER_ADDR', 'MASTER_PORT'\] are not"):
        launch_from_environment({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        launch_from_environment({**ENV, "RANK": "2"})
    with pytest.raises(DistributedError, match="not an integer"):
        launch_from_environment({**ENV, "WORLD_SIZE": "two"})


def test_without_a_process_group_everything_is_one_process(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_process_group() is None
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)
    assert distributed.is_main_process() and not distributed.is_distributed()
    model = nn.Linear(2, 1)
    assert distributed.wrap_model(model) is model and distributed.unwrap_model(model) is model
    assert distributed.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    assert distributed.reduce_mean(6.0, 3) == 2.0
    assert distributed.broadcast_object({"lr": 0.01}) == {"lr": 0.01}
    assert distributed.shared_seed(5) == 5
    assert distributed.rank_zero_only(lambda: "written")() == "written"
    distributed.check_same_on_all_ranks("anything", 1)


# ------------------------------------------------------------------ several processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, world_size: int, *args, launch_size: int | None = None):
    port = _free_port()
    mp.spawn(_run, args=(worker, world_size, launch_size or world_size, port, *args),
             nprocs=world_size, join=True)


def _run(rank, worker, world_size, launch_size, port, *args):
    faulthandler.enable(all_threads=True)   # a crash in a child shows its Python stacks
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(launch_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    worker(rank, world_size, *args)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """4,801 rows (odd on purpose) in 3 files with uneven row groups."""
    X, y = make_synthetic(4801, task="classification", cardinalities=(6, 40), n_continuous=2,
                          noise=0.3, random_state=5)
    frame = X.assign(target=y.to_numpy(), row=np.arange(len(X)))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    folder = tmp_path_factory.mktemp("ddp")
    for i, (start, stop, group) in enumerate([(0, 1500, 500), (1500, 1501, 1), (1501, 4801, 450)]):
        pq.write_table(table.slice(start, stop - start), folder / f"part-{i}.parquet",
                       row_group_size=group)
    return folder


class _WithRowIds:
    """TableTransform's arrays plus the row ids, inserted before the target."""

    def __init__(self, transform):
        self.transform = transform
        self.columns = [*transform.columns, "row"]
        self.has_target = True

    def __call__(self, table):
        *inputs, target = self.transform(table)
        return (*inputs, table["row"].to_numpy().astype(np.int64), target)


class _Recording(nn.Module):
    """Records the row ids of every training batch, then runs the real model."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, codes, continuous, rows):
        if self.training and torch.is_grad_enabled():
            self.seen.append(rows.clone())
        return self.model(codes, continuous)


def _train(rank, world_size, folder, out, epochs=2):
    distributed.init_process_group(timeout=timedelta(seconds=60))
    try:
        # Rank 0 fits the preprocessor once; the others receive its fitted state.
        state = (fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
                 .to_dict() if distributed.is_main_process() else None)
        pre = TabularPreprocessor.from_dict(distributed.broadcast_object(state))
        target = fit_target(folder, "target")
        transform = _WithRowIds(TableTransform(pre, "target", target))
        seed = distributed.shared_seed(None if rank else 13)
        train, valid = train_valid_sources(
            folder, transform, ValidationSplit(0.2, seed=1), batch_size=128 // world_size,
            random_state=seed, rank=rank, world_size=world_size, buffer_rows=1000)
        distributed.check_same_on_all_ranks("len(train)", len(train))
        torch.manual_seed(0)
        model = _Recording(EntityEmbeddingMLP(
            embedding_sizes=list(pre.embedding_sizes_.values()),
            n_continuous=len(pre.cont_columns_), d_out=1, task="binary", hidden=(32, 16)))
        learner = Learner(distributed.wrap_model(model), loss_for_task("binary"), train,
                          random_state=0, num_threads=1)
        learner.fit(epochs, 5e-3)
        parameters = {k: v.detach().clone() for k, v in model.named_parameters()}
        # DDP syncs gradients, not batch-norm running statistics (each rank tracks its own
        # batches; SyncBatchNorm is CUDA-only): average them before validating or saving.
        distributed.average_buffers(model)
        # Validation: each rank its shard, sums reduced (the pattern the Learner will use).
        correct = count = 0.0
        model.eval()
        with torch.inference_mode():
            for codes, continuous, _rows, y in valid:
                predicted = (model.model(codes, continuous)[:, 0] > 0).float()
                correct += float((predicted == y).sum())
                count += len(y)
        accuracy = distributed.reduce_mean(correct, count)
        steps = len(train)
        seen = [torch.cat(model.seen[e * steps:(e + 1) * steps]) for e in range(epochs)]
        sizes = distributed.all_gather_tensors(torch.tensor([len(s) for s in seen]))
        torch.save({"state": distributed.unwrap_model(learner.model).state_dict(),
                    "parameters": parameters, "seen": seen,
                    "accuracy": accuracy, "steps": steps, "sizes": sizes,
                    "sum": distributed.all_reduce_sum(float(rank + 1))},
                   Path(out) / f"rank{rank}.pt")
    except BaseException:
        distributed.destroy_process_group(wait=False)
        raise
    distributed.destroy_process_group()


def _results(out, world_size):
    return [torch.load(Path(out) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


@pytest.mark.slow
def test_two_gloo_processes_train_identical_weights_on_disjoint_shards(parquet, tmp_path):
    runs = {}
    for name, world_size in (("one", 1), ("two", 2), ("two_again", 2)):
        (tmp_path / name).mkdir()
        _spawn(_train, world_size, str(parquet), str(tmp_path / name))
        runs[name] = _results(tmp_path / name, world_size)
    first, second = runs["two"]
    assert first["steps"] == second["steps"]
    for key, value in first["parameters"].items():            # DDP kept the weights equal
        assert torch.equal(value, second["parameters"][key]), key
    for key, value in first["state"].items():                 # and, averaged, the buffers
        assert torch.equal(value, second["state"][key]), key
    for key, value in first["state"].items():                 # and the run is reproducible
        assert torch.equal(value, runs["two_again"][0]["state"][key]), key
    assert first["sum"] == 3.0 and torch.equal(first["sizes"], second["sizes"])
    frame = pd.read_parquet(parquet)
    valid = ValidationSplit(0.2, seed=1)
    train_rows = None
    for epoch in range(2):
        rows = torch.cat([first["seen"][epoch], second["seen"][epoch]]).numpy()
        assert len(rows) == len(np.unique(rows))                  # no row twice
        if train_rows is None:
            train_rows = np.sort(rows)
        assert np.array_equal(np.sort(rows), train_rows)          # every row, every epoch
    single = np.sort(runs["one"][0]["seen"][0].numpy())
    assert np.array_equal(single, train_rows)                     # the same training rows
    assert 0.75 * len(frame) < len(train_rows) < 0.85 * len(frame) and valid.fraction == 0.2
    one, two = runs["one"][0]["accuracy"], first["accuracy"]
    assert one > 0.75 and abs(one - two) < 0.03, (one, two)
    assert first["accuracy"] == second["accuracy"]               # reduced: the same everywhere


def _rank_fails(rank, world_size, out, how):
    distributed.init_process_group(timeout=timedelta(seconds=5))
    if rank == 1:
        if how == "dies":
            os._exit(0)     # killed (OOM, node lost): its sockets close
        time.sleep(15)      # stuck: never reaches the collective
        return
    try:
        distributed.all_reduce_sum(1.0)
        message = "no error"
    except DistributedError as error:
        message = str(error)
    Path(out, f"{how}.txt").write_text(message)
    os._exit(0)             # gloo may abort while tearing down a broken group


def _nobody_else_comes(rank, world_size, out):
    try:
        distributed.init_process_group(timeout=timedelta(seconds=3))
        message = "joined"
    except DistributedError as error:
        message = str(error)
    Path(out, "message.txt").write_text(message)


@pytest.mark.slow
def test_a_dead_rank_or_a_wrong_world_size_is_a_clear_error(tmp_path):
    for how in ("dies", "stuck"):
        _spawn(_rank_fails, 2, str(tmp_path), how)
        message = (tmp_path / f"{how}.txt").read_text()
        assert "all_reduce failed on rank 0 of 2" in message
        assert "Another rank probably died or is stuck" in message
    _spawn(_nobody_else_comes, 1, str(tmp_path), launch_size=2)
    message = (tmp_path / "message.txt").read_text()
    assert "could not join" in message and "WORLD_SIZE=2" in message



class _ExitAfterCheckpoint(Callback):
    """Ends the process (as a kill would) right after the mid-epoch checkpoint of ``step``."""

    order = 50      # after Checkpoint

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, learner):
        if learner.step == self.step:
            distributed.destroy_process_group(wait=False)
            os._exit(0)


def _resumable(rank, world_size, folder, out, interrupt, save_at=52, epochs=3):
    """The Learner over a Parquet shard with DDP, checkpointing every 4 steps (mid-epoch
    included): model, optimizer, stream position and every rank's random state."""
    distributed.init_process_group(timeout=timedelta(seconds=60))
    out = Path(out)
    pre = fit_preprocessor(folder, TabularPreprocessor(), exclude=["target", "row"])
    source = ParquetBatches(folder, TableTransform(pre, "target", fit_target(folder, "target")),
                            batch_size=64, shuffle=True, buffer_rows=1000, random_state=3,
                            rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=list(pre.embedding_sizes_.values()),
                               n_continuous=len(pre.cont_columns_), hidden=(32,), dropout=0.3,
                               task="binary")
    checkpoint = out / "checkpoint.pt"
    callbacks = [Checkpoint(checkpoint, every_steps=4)]
    if interrupt:
        callbacks.append(_ExitAfterCheckpoint(save_at))
    learner = Learner(model, loss_for_task("binary"), source, random_state=3, num_threads=1)
    learner.fit(epochs, 1e-2, callbacks=callbacks,
                resume_from=checkpoint if checkpoint.exists() else None)
    if rank == 0:
        torch.save({"model": model.state_dict(), "steps": len(source),
                    "history": learner.history.records}, out / "final.pt")
    distributed.destroy_process_group()


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(parquet, tmp_path):
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    _spawn(_resumable, 2, str(parquet), str(tmp_path / "straight"), False)
    _spawn(_resumable, 2, str(parquet), str(tmp_path / "resumed"), True)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "final.pt").exists()
    _spawn(_resumable, 2, str(parquet), str(tmp_path / "resumed"), False)
    straight = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "final.pt", weights_only=True)
    assert straight["steps"] == 38            # so step 52 is in the middle of the 2nd epoch
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    # The resumed epoch's training loss counts the batches from before the kill too.
    def losses(history):
        return [(r["epoch"], r["train_loss"]) for r in history]

    assert losses(straight["history"]) == losses(resumed["history"])
