"""ParquetBatches: mini-batches streamed from Parquet, for data larger than memory.

How an epoch is laid out. Everything is a pure function of the Parquet
metadata, the seed and the epoch number, so each rank computes the same plan
without talking to the others, and a resumed run recomputes it exactly:

1. The row groups are put in a fresh seeded order each epoch (``shuffle``),
   or kept in file order.
2. Their rows, concatenated in that order, are cut into ``world_size``
   contiguous ranges of equal size (within one row). Rank ``r`` reads only
   the row groups overlapping its range, in order: reads stay sequential, and
   at most the two row groups on a range's edges are read by two ranks (each
   keeping its own rows).
3. A rank reads its range in windows of whole row groups, at least
   ``buffer_rows`` rows each: a window is transformed once (vectorised) and
   its rows permuted. That is the bounded shuffle buffer; memory holds
   ``prefetch + 1`` windows.
4. The rank's rows are split into the same number of batches on every rank
   (:func:`tabembed.batches.steps_per_epoch`), sizes within one row, so
   DistributedDataParallel never waits on a rank with one step more, and
   every row is used exactly once per epoch.

Resuming at batch ``b`` recomputes the plan, reads only the window holding
``b``'s first row and goes on: exactly the batches an uninterrupted run would
have produced next.
"""

from __future__ import annotations

import copy
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import torch

from tabembed.batches import check_shard, even_bounds, shard_range, steps_per_epoch
from tabembed.streaming.dataset import Part, RowGroups, ValidationSplit, open_dataset

__all__ = ["ParquetBatches", "TableTransform", "auto_prefetch", "train_valid_sources"]

DEFAULT_BUFFER_ROWS = 1 << 18


def auto_prefetch(environ=None) -> int:
    """Windows read ahead by default: 1 when this machine has a core to spare beyond one
    per training process (torchrun's ``LOCAL_WORLD_SIZE``), else 0.

    The read-ahead thread only pays on a free core: on 2 cores with two
    processes it made training slower (0.74x against 1.09x without).
    """
    environ = os.environ if environ is None else environ
    processes = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return 1 if cores > processes else 0


class TableTransform:
    """An Arrow table to the model's arrays, with a fitted preprocessor (and target encoder).

    The protocol a stream needs from a transform is small: ``columns`` (what
    to read), ``has_target``, and ``transform(table) -> tuple of ndarray``
    with one row per table row. This one returns ``(codes int64 [n, n_cat],
    continuous float32 [n, n_cont])``, then the encoded target (int64 class
    codes for multiclass, float32 otherwise, as the estimators train on).

    Parameters
    ----------
    preprocessor : TabularPreprocessor
        Fitted.
    target : str, optional
        The target column.
    target_transformer : TargetTransformer, optional
        Fitted; required with ``target``.
    """

    def __init__(self, preprocessor, target: str | None = None, target_transformer=None):
        if not hasattr(preprocessor, "categories_"):
            raise ValueError("the preprocessor is not fitted; fit it first (fit_preprocessor "
                             "streams a Parquet dataset)")
        if (target is None) != (target_transformer is None):
            raise ValueError("give target and target_transformer together, or neither")
        if target_transformer is not None and not hasattr(target_transformer, "task_"):
            raise ValueError("the target transformer is not fitted; fit_target streams it")
        self.preprocessor = preprocessor
        self.target = target
        self.target_transformer = target_transformer
        self.features = [*preprocessor.cat_names_, *preprocessor.cont_names_,
                         *preprocessor.date_names_]
        self.columns = [*self.features, *([target] if target is not None else [])]
        self.has_target = target is not None

    def __call__(self, table: pa.Table, *, order: str = "C") -> tuple[np.ndarray, ...]:
        """The arrays of ``table``'s rows; ``order="F"``: codes and continuous values
        column-major (:meth:`TabularPreprocessor.transform_arrays`)."""
        codes, continuous = self.preprocessor.transform_table(table.select(self.features),
                                                              order=order)
        if self.target is None:
            return codes, continuous
        column = table[self.target]
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        encoded = self.target_transformer.transform(column.to_numpy(zero_copy_only=False))
        dtype = np.int64 if self.target_transformer.task_ == "multiclass" else np.float32
        return codes, continuous, encoded.astype(dtype, copy=False)


def _segments(counts: np.ndarray, order: np.ndarray, start: int, stop: int):
    """``(row_group, first, last)`` pieces covering rows ``[start, stop)`` of ``order``'s rows."""
    sizes = counts[order]
    ends = np.cumsum(sizes)
    begins = ends - sizes
    segments = []
    for i in range(int(np.searchsorted(ends, start, side="right")), len(order)):
        if begins[i] >= stop:
            break
        first = max(start, begins[i]) - begins[i]
        last = min(stop, ends[i]) - begins[i]
        segments.append((int(order[i]), int(first), int(last)))
    return segments


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)


class ParquetBatches:
    """Mini-batches streamed from a Parquet dataset and transformed on the fly (a BatchSource).

    Parameters
    ----------
    data : path, URI, list of paths, pyarrow.dataset.Dataset or Part
        Parquet file(s) or folder (:func:`~tabembed.streaming.open_dataset`),
        or one side of a split (:class:`~tabembed.streaming.Part`).
    transform : TableTransform or callable
        ``transform(table) -> tuple of ndarray``, with ``columns`` and ``has_target``.
    batch_size : int
        Rows per batch per process (batch sizes within one of each other, at
        most ``batch_size``).
    shuffle : bool
        A fresh seeded order of row groups each epoch and rows permuted
        within each window of ``buffer_rows``.
    buffer_rows : int
        Rows in a shuffle window (at least; a window holds whole row groups).
    validation : ValidationSplit, optional
        With ``part``: read only the training or the validation side.
    part : {"train", "valid"}
    rank, world_size : int, optional
        This process's shard (both or neither; neither means one process).
    random_state : int, optional
        The seed of every order; required (the same on every rank) when
        shuffling over several processes.
    prefetch : int or "auto"
        Windows read and transformed ahead in background threads while the
        loop trains (0: read in the loop's own thread). ``"auto"``:
        :func:`auto_prefetch` (1, or 0 when the processes of a torchrun fill
        the machine's cores).
    """

    def __init__(self, data, transform, *, batch_size: int = 1024, shuffle: bool = False,
                 buffer_rows: int = DEFAULT_BUFFER_ROWS, validation: ValidationSplit | None = None,
                 part: str = "train", rank: int | None = None, world_size: int | None = None,
                 random_state: int | None = None, prefetch: int | str = "auto"):
        if prefetch == "auto":
            prefetch = auto_prefetch()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size=}")
        if buffer_rows < 1:
            raise ValueError(f"buffer_rows must be positive, got {buffer_rows=}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, got {prefetch=}")
        for name in ("columns", "has_target"):
            if not hasattr(transform, name):
                raise TypeError(f"transform needs a {name!r} attribute (see TableTransform)")
        if isinstance(data, Part):
            if validation is not None:
                raise ValueError("a Part already carries its split; do not pass validation too")
            self.part = data
        else:
            self.part = Part(RowGroups(open_dataset(data)), validation, part)
        self.rank, self.world_size = check_shard(rank, world_size)
        self.n_batches = steps_per_epoch(self.part.n_rows, batch_size, self.world_size)
        if random_state is None:
            if shuffle and self.world_size > 1:
                raise ValueError(
                    "shuffling over several processes needs random_state, the same on every "
                    "rank (tabembed.training.distributed.shared_seed draws one and shares it)"
                )
            random_state = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
        self.transform = transform
        self.batch_size, self.shuffle = batch_size, shuffle
        self.buffer_rows, self.prefetch = buffer_rows, prefetch
        self.has_target = bool(transform.has_target)
        self.seed = int(random_state)
        self.device = torch.device("cpu")
        self._columns = list(dict.fromkeys([*transform.columns, *self.part.columns]))
        self.part.row_groups.require(self._columns, "the stream (features, target and split key)")
        self._epoch, self._position, self._resume = 0, 0, False

    # ------------------------------------------------------------ layout

    @property
    def n_rows(self) -> int:
        """Rows of this source across all ranks (one epoch)."""
        return self.part.n_rows

    @property
    def rank_rows(self) -> tuple[int, int]:
        """This rank's rows ``[start, stop)`` in the epoch's order."""
        return shard_range(self.part.n_rows, self.rank, self.world_size)

    def __len__(self) -> int:
        return self.n_batches

    def _plan(self, epoch: int):
        """This rank's windows (lists of segments) and the epoch row at which each starts."""
        counts = self.part.counts
        order = np.flatnonzero(counts)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 0]).permutation(order)
        start, stop = self.rank_rows
        windows, starts, current, rows, offset = [], [], [], 0, 0
        for segment in _segments(counts, order, start, stop):
            current.append(segment)
            rows += segment[2] - segment[1]
            if rows >= self.buffer_rows:
                windows.append(current)
                starts.append(offset)
                offset += rows
                current, rows = [], 0
        if current:
            windows.append(current)
            starts.append(offset)
        return windows, np.asarray(starts)

    def _load(self, epoch: int, index: int, segments) -> tuple[np.ndarray, ...]:
        """Read, filter, transform and (when shuffling) permute one window."""
        row_groups, tables = self.part.row_groups, []
        for group, first, last in segments:
            table = self.part.filter(group, row_groups.read(group, self._columns))
            tables.append(table.slice(first, last - first))
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        try:
            arrays = tuple(self.transform(table))
        except ValueError as error:
            pieces = [row_groups.fragments[group] for group, _, _ in segments]
            where = ", ".join(f"{p.path} (row group {p.row_groups[0].id})" for p in pieces)
            raise ValueError(f"{error} [reading {where}]") from error
        if any(len(a) != table.num_rows for a in arrays):
            raise ValueError(f"transform returned {[len(a) for a in arrays]} rows for a table "
                             f"of {table.num_rows}; it must keep one row per input row")
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, 1, self.rank, index])
            order = rng.permutation(table.num_rows)
            arrays = tuple(a[order] for a in arrays)
        return arrays

    def _windows(self, epoch: int, windows, starts, first: int):
        """``(epoch row, arrays)`` of each window from ``first`` on, ``prefetch`` ahead."""
        if self.prefetch == 0:
            for index in range(first, len(windows)):
                yield starts[index], self._load(epoch, index, windows[index])
            return
        pool = ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="tabembed-read")
        pending = deque()
        try:
            for index in range(first, min(first + self.prefetch, len(windows))):
                pending.append(pool.submit(self._load, epoch, index, windows[index]))
            index = first
            while pending:
                arrays = pending.popleft().result()
                ahead = index + self.prefetch
                if ahead < len(windows):
                    pending.append(pool.submit(self._load, epoch, ahead, windows[ahead]))
                yield starts[index], arrays
                index += 1
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if not self._resume and self._position > 0:   # a pass left unfinished: start afresh
            self._epoch, self._position = self._epoch + 1, 0
        self._resume = False
        epoch, first_batch = self._epoch, self._position
        windows, starts = self._plan(epoch)
        start, stop = self.rank_rows
        bounds = even_bounds(stop - start, self.n_batches)
        if first_batch >= len(bounds):
            return
        first_window = int(np.searchsorted(starts, bounds[first_batch][0], side="right")) - 1
        loaded = self._windows(epoch, windows, starts, first_window)
        try:
            window_start, window = next(loaded)
            for index in range(first_batch, len(bounds)):
                low, high = bounds[index]
                pieces = []
                while low < high:
                    while low >= window_start + len(window[0]):
                        window_start, window = next(loaded)
                    take = min(high, window_start + len(window[0])) - low
                    offset = low - window_start
                    pieces.append(tuple(a[offset:offset + take] for a in window))
                    low += take
                arrays = pieces[0] if len(pieces) == 1 else tuple(
                    np.concatenate(columns) for columns in zip(*pieces))
                if index + 1 == len(bounds):
                    self._epoch, self._position = epoch + 1, 0
                else:
                    self._position = index + 1   # counted as consumed once handed out
                yield self._to_device(arrays)
        finally:
            loaded.close()

    def _to_device(self, arrays) -> tuple[torch.Tensor, ...]:
        tensors = tuple(_tensor(a) for a in arrays)
        if self.device.type == "cpu":
            return tensors
        if self.device.type == "cuda":   # pinned memory lets the copy overlap compute
            return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in tensors)
        return tuple(t.to(self.device) for t in tensors)

    def to(self, device) -> ParquetBatches:
        """A source yielding tensors on ``device`` (the data stays where it is)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = copy.copy(self)
        moved.device = device
        return moved

    # ------------------------------------------------------------ state

    @property
    def resume_position(self) -> int:
        """The index of the first batch the next pass yields (0 unless resumed mid-epoch)."""
        return self._position if self._resume else 0

    def manual_seed(self, seed: int) -> None:
        """Restart from epoch 0 with ``seed`` (a seeded ``fit`` calls this)."""
        self.seed = int(seed)
        self._epoch, self._position, self._resume = 0, 0, False

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self._epoch, self._position, self._resume = int(epoch), 0, False

    def state_dict(self) -> dict:
        """Seed, epoch and batches handed out in it: enough to resume exactly."""
        return {"seed": self.seed, "epoch": self._epoch, "position": self._position,
                "n_rows": self.part.n_rows, "world_size": self.world_size,
                "n_batches": self.n_batches}

    def load_state_dict(self, state: dict) -> None:
        """The next pass continues exactly where the saved one stopped."""
        position = int(state["position"])
        layout = {k: state[k] for k in ("n_rows", "world_size", "n_batches") if k in state}
        current = {"n_rows": self.part.n_rows, "world_size": self.world_size,
                   "n_batches": self.n_batches}
        if position and any(layout[k] != current[k] for k in layout):
            raise ValueError(
                f"cannot resume mid-epoch: the state was saved with {layout}, this source has "
                f"{current}; resume with the same data, batch size and number of processes, "
                "or from an end-of-epoch checkpoint"
            )
        self.seed = int(state["seed"])
        self._epoch, self._position, self._resume = int(state["epoch"]), position, True


def train_valid_sources(data, transform, validation: ValidationSplit | None, *,
                        batch_size=1024, valid_batch_size: int | None = None,
                        random_state: int | None = None, rank: int | None = None,
                        world_size: int | None = None, buffer_rows: int = DEFAULT_BUFFER_ROWS,
                        prefetch: int | str = "auto", shard_validation: bool = True):
    """A shuffled training stream and an ordered validation stream from one split.

    ``data``: a :class:`RowGroups` or anything :func:`open_dataset` reads. The
    split's row counts are computed once (one pass over the key column when
    splitting by key; none otherwise) and shared by both sources. Without a
    ``validation`` split every row trains and the validation stream is None.
    ``batch_size`` is per process (the estimators pass their global batch's
    share). ``shard_validation=False``: every process reads every validation row.
    """
    row_groups = data if isinstance(data, RowGroups) else RowGroups(open_dataset(data))
    train_part = Part(row_groups, validation, "train")
    options = dict(rank=rank, world_size=world_size, buffer_rows=buffer_rows, prefetch=prefetch)
    train = ParquetBatches(train_part, transform, batch_size=batch_size, shuffle=True,
                           random_state=random_state, **options)
    if validation is None:
        return train, None
    if not shard_validation:
        options.update(rank=None, world_size=None)
    valid = ParquetBatches(train_part.other(), transform, shuffle=False,
                           batch_size=valid_batch_size or max(batch_size, 4096), **options)
    return train, valid
