"""Batch prediction over a Parquet dataset, written to Parquet in bounded memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from tabembed._io import atomic_file
from tabembed.batches import check_shard, shard_range
from tabembed.streaming.dataset import Part, RowGroups, open_dataset
from tabembed.streaming.source import TableTransform, _segments

__all__ = ["predict_to_parquet"]


def _dictionary_columns(table: pa.Table) -> list[str]:
    """The leaf columns to dictionary-encode: all but floating-point ones.

    Parquet's writer tries a dictionary for every column by default; for
    probabilities and regression outputs (nearly all values distinct) the try
    is wasted: 7 of the 10 ms that 65,536 rows of two probabilities and a label
    took to write, and the file was 48% larger.
    """
    def leaves(path: str, kind: pa.DataType):
        if pa.types.is_struct(kind):
            for index in range(kind.num_fields):
                child = kind.field(index)
                yield from leaves(f"{path}.{child.name}", child.type)
        elif pa.types.is_map(kind):
            yield from leaves(f"{path}.key_value.key", kind.key_type)
            yield from leaves(f"{path}.key_value.value", kind.item_type)
        elif (pa.types.is_list(kind) or pa.types.is_large_list(kind)
              or pa.types.is_fixed_size_list(kind)):
            yield from leaves(f"{path}.list.element", kind.value_type)
        elif not pa.types.is_floating(kind):
            yield path

    return [leaf for field in table.schema for leaf in leaves(field.name, field.type)]


def _columns_of(output, n_rows: int, names) -> dict:
    """Named 1-D columns (ndarrays, or Arrow arrays as given) from what ``predict_batch``
    returned."""
    if isinstance(output, dict):
        columns = {str(k): v if isinstance(v, pa.Array) else
                   np.asarray(v.cpu() if torch.is_tensor(v) else v) for k, v in output.items()}
    else:
        values = np.asarray(output.cpu() if torch.is_tensor(output) else output)
        if values.ndim == 2 and values.shape[1] == 1 and names is None:
            values = values[:, 0]
        if values.ndim == 1:
            names = names or ["prediction"]
            if len(names) != 1:
                raise ValueError(f"predict_batch returned one column but {names=}")
            columns = {names[0]: values}
        elif values.ndim == 2:
            names = names or [f"prediction_{j}" for j in range(values.shape[1])]
            if len(names) != values.shape[1]:
                raise ValueError(f"predict_batch returned {values.shape[1]} columns but "
                                 f"{len(names)} output_names: {names}")
            columns = {name: values[:, j] for j, name in enumerate(names)}
        else:
            raise ValueError(f"predict_batch must return 1-D or 2-D outputs, got {values.shape}")
    for name, values in columns.items():
        if isinstance(values, pa.Array):
            if len(values) != n_rows:
                raise ValueError(f"output {name!r} has {len(values)} rows; expected {n_rows}")
        elif len(values) != n_rows or values.ndim != 1:
            raise ValueError(f"output {name!r} has shape {values.shape}; expected ({n_rows},)")
    return columns


def _concatenated(pieces: list):
    """One column from a row group's pieces (ndarrays or Arrow arrays)."""
    if isinstance(pieces[0], pa.Array):
        return pa.concat_arrays(pieces)
    return np.concatenate(pieces)


def _destination(destination, rank: int, world_size: int) -> Path:
    destination = Path(destination)
    if world_size == 1:
        return destination
    # One file per rank; reading the folder lists them in rank order, which is row order.
    return destination / f"part-{rank:05d}-of-{world_size:05d}.parquet"


def _check_not_a_source(path: Path, data, dataset) -> None:
    """Refuse to write the predictions over a file of the source, or into a source folder
    (the next read of that folder would take the predictions for data)."""
    if not isinstance(dataset.filesystem, pafs.LocalFileSystem):
        return
    target = Path(os.path.realpath(path))   # a symlink is written through to its target
    for source in dataset.files:
        if os.path.realpath(source) == str(target) or (
                target.exists() and os.path.samefile(source, target)):
            raise ValueError(
                f"the destination {path} is the source file {source}: writing the predictions "
                "would replace the data; write them to another path")
    if isinstance(data, str | os.PathLike):
        data = [data]
    if isinstance(data, list | tuple):
        for folder in data:
            if isinstance(folder, str | os.PathLike) and os.path.isdir(folder) and \
                    target.is_relative_to(os.path.realpath(folder)):
                raise ValueError(
                    f"the destination {path} is inside the source folder {folder}: the next "
                    "read of that folder would take the predictions for data; write them "
                    "outside it")


def _check_collisions(keep_columns: list, predicted: dict) -> None:
    """A kept input column may not share a name with an output column, which would replace
    it in the output."""
    clashes = [c for c in keep_columns if c in predicted]
    if clashes:
        raise ValueError(
            f"keep_columns {clashes} have the names of output column(s) (the outputs are "
            f"{list(predicted)}); the output would replace the source's column: rename that "
            "column in the source, or leave it out of keep_columns")


def predict_to_parquet(data, destination, predict_batch: Callable, preprocessor, *,
                       batch_size: int = 65536, keep_columns=(), output_names=None,
                       rank: int | None = None, world_size: int | None = None,
                       progress: bool | None = None, prefetch: int = 1,
                       order: str = "C") -> Path:
    """Predict every row of a Parquet dataset and write the predictions to Parquet.

    Rows are read one row group at a time (the next read and transformed in a
    background thread), transformed, predicted ``batch_size`` rows at a time
    and appended to the output (written in another thread while the next row
    group is predicted), so memory holds a few row groups whatever the
    dataset's size. Output rows keep the input's order.

    Parameters
    ----------
    data : path, URI, list of paths or pyarrow.dataset.Dataset
    destination : path
        The Parquet file to write (atomically: a temporary file in the same
        folder, renamed at the end). With several processes, a folder in
        which rank ``r`` writes ``part-<r>-of-<world_size>.parquet`` with its
        contiguous share of the rows. It may not be a file of the source, nor
        lie inside a source folder (either is an error before anything is read).
    predict_batch : callable
        ``predict_batch(*tensors) -> tensor, ndarray or dict of them``: the
        model's outputs for the preprocessed inputs of ``n`` rows, ``(n,)``
        or ``(n, k)`` (for example probabilities per class); a dict's values
        may also be ``pyarrow.Array`` of ``n`` values (labels, written as given).
        Called under ``torch.inference_mode``.
    preprocessor : TabularPreprocessor or TableTransform
        Fitted; turns a table into the inputs ``predict_batch`` takes.
    keep_columns : sequence of str
        Input columns copied to the output beside the predictions (ids). A name
        that is also an output column's (``prediction``) is an error, never a
        silently replaced column.
    output_names : list of str, optional
        Names of the output columns (default ``prediction`` or
        ``prediction_0..k-1``).
    rank, world_size : int, optional
        This process's share (both or neither).
    progress : bool, optional
        A tqdm bar of rows; ``None`` shows it in terminals on rank 0.
    prefetch : int
        1 (default): the next row group is read and transformed, and the last
        one written, in background threads; 0: everything in the caller's thread.
    order : {"C", "F"}
        Layout of the inputs ``predict_batch`` gets: row-major (default) or
        column-major slices, which skip a copy of every row group; tabembed's
        networks take either (the estimators pass ``"F"``).

    Returns
    -------
    Path of the file written.
    """
    transform = (preprocessor if isinstance(preprocessor, TableTransform)
                 else TableTransform(preprocessor))
    if transform.has_target:
        transform = TableTransform(transform.preprocessor)   # prediction reads features only
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size=}")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' (row-major) or 'F' (column-major), got {order=}")
    rank, world_size = check_shard(rank, world_size)
    part = Part(RowGroups(open_dataset(data)))
    keep_columns = list(keep_columns)
    missing = [c for c in keep_columns if c not in part.row_groups.dataset.schema.names]
    if missing:
        raise ValueError(f"keep_columns not in the dataset: {missing}")
    part.row_groups.require(transform.columns, "the model's features")
    part.row_groups.require(keep_columns, "keep_columns")
    columns = list(dict.fromkeys([*transform.columns, *keep_columns]))
    path = _destination(destination, rank, world_size)
    _check_not_a_source(path, data, part.row_groups.dataset)
    start, stop = shard_range(part.n_rows, rank, world_size)
    segments = _segments(part.counts, np.arange(len(part.counts)), start, stop)

    def load(segment):
        group, first, last = segment
        table = part.row_groups.read(group, columns).slice(first, last - first)
        arrays = transform(table) if order == "C" else transform(table, order=order)
        return table, tuple(torch.from_numpy(a) for a in arrays)

    show = (rank == 0) if progress is None else progress
    bar = tqdm(total=stop - start, unit="rows", desc="predicting", mininterval=0.5,
               disable=(None if progress is None else False) if show else True)
    pool = ThreadPoolExecutor(max_workers=1) if prefetch else None
    # Row groups are written (Arrow encodes without the GIL) while the next one is
    # predicted; one write in flight, in order.
    writing = ThreadPoolExecutor(max_workers=1) if prefetch else None
    try:
        with atomic_file(path) as stream:
            writer, written = None, None
            try:
                upcoming = pool.submit(load, segments[0]) if pool else None
                for index, segment in enumerate(segments):
                    table, inputs = upcoming.result() if pool else load(segment)
                    if pool and index + 1 < len(segments):
                        upcoming = pool.submit(load, segments[index + 1])
                    outputs = []
                    with torch.inference_mode():
                        for low in range(0, table.num_rows, batch_size):
                            chunk = tuple(t[low:low + batch_size] for t in inputs)
                            outputs.append(_columns_of(predict_batch(*chunk), len(chunk[0]),
                                                       output_names))
                    predicted = {name: _concatenated([o[name] for o in outputs])
                                 for name in outputs[0]}
                    if writer is None:
                        _check_collisions(keep_columns, predicted)
                    result = pa.table({**{c: table[c] for c in keep_columns}, **predicted})
                    if writer is None:
                        writer = pq.ParquetWriter(stream, result.schema,
                                                  use_dictionary=_dictionary_columns(result))
                    if writing is None:
                        writer.write_table(result)
                    else:
                        if written is not None:
                            written.result()     # the previous group's write, or its error
                        written = writing.submit(writer.write_table, result)
                    bar.update(table.num_rows)
                if written is not None:
                    written.result()
            finally:
                if written is not None:
                    wait([written])      # never two threads on the writer
                if writer is not None:   # the footer; on failure the file is discarded anyway
                    writer.close()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if writing is not None:
            writing.shutdown(wait=True)
    return path
