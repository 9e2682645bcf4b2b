"""Several processes with torch.distributed: launch, process group, DDP, reductions, rank 0.

Start the same script once per process with ``torchrun``::

    torchrun --nproc_per_node 2 train.py                 # one machine, 2 processes
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29400 --rdzv-id JOB train.py   # each of 2 machines

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_process_group` reads them (``env://``), picks
gloo on CPU and nccl on CUDA, and turns the usual failures (a process that
never joined, a mismatched ``WORLD_SIZE``, a rank that died) into a
:class:`DistributedError` after ``timeout`` instead of a silent hang.
Without those variables everything here degrades to one process: rank 0 of
1, reductions return their input, :func:`wrap_model` returns the model.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedError",
    "Launch",
    "all_gather_tensors",
    "all_reduce_sum",
    "average_buffers",
    "barrier",
    "broadcast_object",
    "check_same_on_all_ranks",
    "destroy_process_group",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_distributed",
    "is_main_process",
    "launch_from_environment",
    "rank_zero_only",
    "reduce_mean",
    "shared_seed",
    "translate_errors",
    "unwrap_model",
    "wrap_model",
]

DEFAULT_TIMEOUT = timedelta(minutes=10)
_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_timeout = DEFAULT_TIMEOUT   # the process group's, for monitored_barrier


class DistributedError(RuntimeError):
    """The process group is not set up as expected, or a rank failed or disagreed."""


@dataclass(frozen=True)
class Launch:
    """What the launcher (torchrun) told this process."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def launch_from_environment(environ: Mapping[str, str] | None = None) -> Launch | None:
    """This process's launch from ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``.

    ``None`` when none of them is set (a plain ``python train.py``). Some set
    and others missing, or values out of range, is a :class:`DistributedError`.
    """
    environ = os.environ if environ is None else environ
    present = [k for k in (*_REQUIRED, "LOCAL_RANK") if k in environ]
    if not present:
        return None
    missing = [k for k in _REQUIRED if k not in environ]
    if missing:
        raise DistributedError(
            f"{present} are set but {missing} are not: start the script with torchrun "
            "(which sets them all), or unset them for a single process"
        )
    try:
        rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
        port = int(environ["MASTER_PORT"])
    except ValueError as error:
        raise DistributedError(f"a launch variable is not an integer: {error}") from error
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    if local_rank < 0 or local_rank > rank:
        raise DistributedError(f"LOCAL_RANK={local_rank} must be in [0, RANK={rank}]")
    return Launch(rank, world_size, local_rank, environ["MASTER_ADDR"], port)


def _uses_cuda(device) -> bool:
    if device == "auto":
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def init_process_group(*, backend: str = "auto", device="auto",
                       timeout: timedelta = DEFAULT_TIMEOUT) -> Launch | None:
    """Join the process group torchrun described; ``None`` (and nothing done) without one.

    ``backend="auto"`` is nccl when this process trains on CUDA (each local
    rank on its own GPU) and gloo otherwise. ``timeout`` bounds the wait for
    the other processes to join and for every later collective, so a missing
    or dead rank ends in a :class:`DistributedError`, not a hang. Calling it
    again in an initialised process only checks the launch matches.
    """
    launch = launch_from_environment()
    if launch is None:
        return None
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (launch.rank, launch.world_size):
            raise DistributedError(
                f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not "
                f"match the launch (RANK={launch.rank}, WORLD_SIZE={launch.world_size})")
        return launch
    global _timeout
    _timeout = timeout
    cuda = _uses_cuda(device)
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(launch.local_rank)
    try:
        dist.init_process_group(backend, init_method="env://", rank=launch.rank,
                                world_size=launch.world_size, timeout=timeout)
    except (RuntimeError, TimeoutError) as error:   # DistStoreError is a RuntimeError
        raise DistributedError(
            f"rank {launch.rank} of WORLD_SIZE={launch.world_size} could not join the process "
            f"group at {launch.master_addr}:{launch.master_port} within {timeout}: {error}. "
            "Every process must be started with the same WORLD_SIZE, MASTER_ADDR and "
            "MASTER_PORT (torchrun --nproc_per_node N sets them); a process that never started "
            "or died keeps the others waiting until the timeout"
        ) from error
    return launch


def destroy_process_group(*, wait: bool | float = True) -> None:
    """Leave the process group (a no-op without one).

    ``wait``: first wait for every rank (a barrier), so no process tears its
    connections down while another still uses them (gloo can abort the
    other process then: "terminate called without an active exception").
    A number waits at most that many seconds (gloo's monitored barrier; other
    backends do not wait), for exit paths where another rank may have failed.
    ``wait=False`` does not wait.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        if wait is True:
            barrier()
        elif wait is not False and dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=float(wait)))
            except RuntimeError:      # a rank is gone: leave anyway
                pass
    dist.destroy_process_group()


# How long a process leaving the group at exit waits for the others.
EXIT_WAIT_SECONDS = 30.0


def join_launched_group() -> bool:
    """Join the process group that torchrun launched this process into, once per process.

    Every estimator's ``fit`` calls this first: a script runs unchanged under
    ``torchrun``. Without a launch (plain ``python``) it does nothing. The
    group is left at exit, waiting a bounded time for the other ranks (one
    leaving while another still talks can make gloo abort it; a rank that
    failed never arrives). Returns whether this process is in a group.
    """
    if launch_from_environment() is None:
        return is_distributed()
    if not (dist.is_available() and dist.is_initialized()) and init_process_group() is not None:
        atexit.register(destroy_process_group, wait=EXIT_WAIT_SECONDS)
    return is_distributed()


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that writes checkpoints, plots, logs and progress bars."""
    return get_rank() == 0


def rank_zero_only(function: Callable) -> Callable:
    """Run ``function`` on rank 0 only (other ranks get ``None``): file writes, prints."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs) if is_main_process() else None

    return wrapper


@contextlib.contextmanager
def translate_errors(what: str = "a collective operation"):
    """Turn a backend failure inside the block into a :class:`DistributedError` that says why."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as error:   # DistBackendError, DistNetworkError, gloo timeouts
        if not is_distributed():
            raise
        raise DistributedError(
            f"{what} failed on rank {get_rank()} of {get_world_size()}: {error}. Another rank "
            "probably died or is stuck (see its log), or the ranks disagree on the number of "
            "steps (every rank must see the same len(train_data))"
        ) from error


def _device() -> torch.device:
    """Where this backend's collectives want tensors: CUDA for nccl, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap_model(model: nn.Module, **options) -> nn.Module:
    """``DistributedDataParallel(model)`` under a process group, else ``model`` unchanged.

    Call it after the model is on its device (``device_ids`` is set for CUDA).
    DDP broadcasts rank 0's weights at construction, so every rank starts equal.
    Buffers (batch-norm running statistics) are not re-broadcast from rank 0
    before every forward: in training, batch norm normalises with the batch's
    own statistics, so that collective per step changes nothing but the time
    (+1.1 ms on a 7 ms step). Each rank tracks
    its own; :func:`average_buffers` makes them equal before validation or saving.
    """
    from torch.nn.parallel import DistributedDataParallel

    if not is_distributed() or isinstance(model, DistributedDataParallel):
        return model

    if "broadcast_buffers" not in options and "forward_sync_buffers" not in options:
        accepted = inspect.signature(DistributedDataParallel.__init__).parameters
        options["forward_sync_buffers" if "forward_sync_buffers" in accepted
                else "broadcast_buffers"] = False
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device.type == "cuda":
        options.setdefault("device_ids", [parameter.device.index])
    with translate_errors("wrapping the model in DistributedDataParallel"):
        return DistributedDataParallel(model, **options)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (for saving, averaging, prediction)."""
    return model.module if hasattr(model, "module") and isinstance(
        model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values):
    """Sum ``values`` (a number, a sequence of numbers or a tensor) over all ranks.

    Returns the same kind of value. One collective whatever the length, so
    reduce an epoch's (loss sum, row count, correct count) together.
    """
    if not is_distributed():
        return values
    if torch.is_tensor(values):
        tensor = values.detach().to(_device(), torch.float64).clone()
    else:
        scalar = not isinstance(values, list | tuple)
        tensor = torch.tensor([values] if scalar else list(values), dtype=torch.float64,
                              device=_device())
    with translate_errors("all_reduce"):
        dist.all_reduce(tensor)
    if torch.is_tensor(values):
        return tensor.to(values.device, values.dtype)
    result = tensor.cpu().tolist()
    return result[0] if scalar else type(values)(result)


def reduce_mean(total: float, count: float) -> float:
    """``sum(total) / sum(count)`` over ranks: a mean weighted by each rank's rows."""
    total, count = all_reduce_sum([float(total), float(count)])
    return total / count if count else float("nan")


def all_gather_tensors(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (first dimensions may differ) concatenated in rank order.

    For validation metrics that do not decompose into sums (AUC, quantiles):
    gather the outputs and targets, compute once.
    """
    if not is_distributed():
        return tensor
    device = _device()
    local = tensor.detach().to(device).contiguous()
    with translate_errors("all_gather"):
        sizes = [torch.zeros(1, dtype=torch.int64, device=device)
                 for _ in range(get_world_size())]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
        padded[: local.shape[0]] = local
        gathered = [torch.empty_like(padded) for _ in range(get_world_size())]
        dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)]).to(tensor.device)


def broadcast_object(value, src: int = 0):
    """Rank ``src``'s ``value`` on every rank (picklable; e.g. the LR finder's choice).

    Only for values made by this program: unpickling runs code, so never
    broadcast data read from an untrusted file.
    """
    if not is_distributed():
        return value
    holder = [value if get_rank() == src else None]
    with translate_errors("broadcast_object"):
        dist.broadcast_object_list(holder, src=src, device=_device())
    return holder[0]


def shared_seed(seed: int | None = None) -> int:
    """``seed``, or a fresh one drawn on rank 0, the same on every rank."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**62) if is_main_process() else None
    seed = broadcast_object(seed)
    return int(seed)


def check_same_on_all_ranks(name: str, value) -> None:
    """Raise a :class:`DistributedError` naming each rank's ``value`` unless all are equal.

    Call it before training on what must agree (rows, ``len(train_data)``,
    the preprocessor's vocabulary sizes): a disagreement would otherwise hang
    DDP at the first step one rank does not take.
    """
    if not is_distributed():
        return
    values = [None] * get_world_size()
    with translate_errors(f"checking {name}"):
        dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise DistributedError(f"the ranks disagree on {name}: "
                               + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values)))


def barrier(timeout: timedelta | None = None) -> None:
    """Wait for every rank; with gloo, a rank that does not arrive is named in the error."""
    if not is_distributed():
        return
    with translate_errors("barrier"):
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timeout or _timeout, wait_all_ranks=True)
        else:
            dist.barrier()


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (batch-norm running statistics) over ranks, in place.

    After SWA's ``update_bn`` each rank has statistics of its own shard; with
    equal batch counts per rank (the batch sources guarantee it) their mean
    is what one process would compute over all batches.
    """
    if not is_distributed():
        return
    model = unwrap_model(model)
    with translate_errors("averaging buffers"):
        for buffer in model.buffers():
            if buffer.is_floating_point():
                summed = buffer.detach().to(_device()).clone()
                dist.all_reduce(summed)
                buffer.copy_(summed.to(buffer.device) / get_world_size())
