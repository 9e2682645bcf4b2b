"""A Parquet dataset as a list of row groups, and the validation rows held out of it.

Everything here is computed from Parquet metadata (row counts per row group)
or, for a split by key, from one pass over the key column: nothing is
materialised, so a source can know its length before reading any data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

__all__ = ["Part", "RowGroups", "ValidationSplit", "open_dataset"]


def open_dataset(data, *, filesystem=None) -> ds.Dataset:
    """A ``pyarrow.dataset.Dataset`` over Parquet from a file, a folder, a list of files or a URI.

    URIs (``s3://``, ``gs://``, ``hdfs://``, ...) go through pyarrow's
    filesystems; hive-style partition folders (``year=2024/``) become columns.
    A ``Dataset`` is returned unchanged.
    """
    if isinstance(data, ds.Dataset):
        return data
    if isinstance(data, str | os.PathLike):
        data = os.fspath(data)
    elif isinstance(data, list | tuple) and data and all(
            isinstance(p, str | os.PathLike) for p in data):
        data = [os.fspath(p) for p in data]
    else:
        raise TypeError(
            "data must be a path or URI to Parquet files (a file or a folder), a list of "
            f"paths, or a pyarrow.dataset.Dataset; got {type(data).__name__}"
        )
    dataset = ds.dataset(data, format="parquet", filesystem=filesystem, partitioning="hive")
    if not dataset.files:
        raise ValueError(f"no Parquet files found in {data!r} (files starting with '.' or '_' "
                         "are ignored)")
    return dataset


class RowGroups:
    """The non-empty row groups of a Parquet dataset, in file order, with their row counts.

    Attributes
    ----------
    dataset : pyarrow.dataset.Dataset
    counts : ndarray of int64
        Rows of each row group (from the Parquet footers).
    offsets : ndarray of int64
        Position of each row group's first row in the whole dataset.
    n_rows : int
    file_columns : dict
        ``{path: frozenset of column names}`` of each file (its own columns and its
        partition keys). A dataset's schema is its first file's: a column missing
        from another file would read as nulls, and a column only in later files
        would never be read; :meth:`require` and :meth:`unlisted_columns` find both.
    """

    def __init__(self, dataset: ds.Dataset):
        self.dataset = dataset
        self.fragments, counts, self.file_columns = [], [], {}
        for fragment in dataset.get_fragments():
            if not isinstance(fragment, ds.ParquetFileFragment):
                raise TypeError(
                    f"{fragment.path} is not Parquet ({type(fragment).__name__}); stream Parquet "
                    "only (convert with pyarrow.dataset.write_dataset(..., format='parquet'))"
                )
            try:
                self.file_columns[fragment.path] = frozenset(
                    [*fragment.physical_schema.names,
                     *ds.get_partition_keys(fragment.partition_expression)])
                pieces = fragment.split_by_row_group()
            except (pa.ArrowException, OSError) as error:   # a damaged footer
                raise ValueError(f"{fragment.path} is not a readable Parquet file "
                                 f"({type(error).__name__}: {error})") from error
            for piece in pieces:
                rows = piece.row_groups[0].num_rows
                if rows:
                    self.fragments.append(piece)
                    counts.append(rows)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.n_rows = int(self.counts.sum())
        if self.n_rows == 0:
            raise ValueError(f"the Parquet dataset {dataset.files[:3]} has no rows")

    def __len__(self) -> int:
        return len(self.fragments)

    def require(self, columns, needed_for: str) -> None:
        """Raise a ``ValueError`` naming the file and the column where a file lacks one of
        ``columns`` (``needed_for`` says what reads them: "the model's features"), or holds
        one with a type of another kind (numbers, text, times, booleans) than the schema's."""
        columns = list(dict.fromkeys(columns))
        for path, present in self.file_columns.items():
            missing = [c for c in columns if c not in present]
            if missing:
                raise ValueError(_missing_message(path, missing, needed_for, self.file_columns))
        schema = self.dataset.schema
        for fragment in self.dataset.get_fragments():
            physical = fragment.physical_schema
            for column in columns:
                if column not in physical.names or column not in schema.names:
                    continue   # a partition key
                given, expected = physical.field(column).type, schema.field(column).type
                if _kind(given) not in (_kind(expected), "null") and _kind(expected) != "null":
                    raise ValueError(
                        f"the column {column!r} of the Parquet file {fragment.path} holds "
                        f"{given} values where the dataset's schema (its first file's, "
                        f"{self.dataset.files[0]}) says {expected}: every file of a dataset "
                        "must hold each column with one type; convert that file's column")

    def unlisted_columns(self) -> dict:
        """``{column: first file holding it}`` for columns that some files hold but the
        dataset's schema (its first file's) lacks: reading the dataset never sees them."""
        listed, found = set(self.dataset.schema.names), {}
        for path, present in self.file_columns.items():
            for column in sorted(present - listed):
                found.setdefault(column, path)
        return found

    def read(self, index: int, columns: list[str]) -> pa.Table:
        """Columns of row group ``index``, with the dataset's (unified) schema."""
        fragment = self.fragments[index]
        missing = [c for c in columns if c not in self.file_columns[fragment.path]]
        if missing:
            raise ValueError(_missing_message(fragment.path, missing, "this read",
                                              self.file_columns))
        where = f"{fragment.path} (row group {fragment.row_groups[0].id})"
        try:
            return fragment.to_table(schema=self.dataset.schema, columns=columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
            kinds = {c: str(fragment.physical_schema.field(c).type) for c in columns
                     if c in fragment.physical_schema.names}
            expected = {c: str(self.dataset.schema.field(c).type) for c in kinds}
            if kinds == expected:    # not a type clash: damaged data
                raise ValueError(f"reading {where} failed: {error}; the file is "
                                 "damaged") from error
            raise ValueError(
                f"reading {where} failed: {str(error).splitlines()[0]}; its columns have types "
                f"{kinds} where the dataset's schema (its first file's) says {expected}: every "
                "file of a dataset must hold the same columns with the same types") from error
        except (pa.ArrowException, OSError) as error:
            raise ValueError(f"reading {where} failed ({type(error).__name__}: {error}); the "
                             "file is damaged") from error

    def sequential(self, exclude=()) -> ds.Dataset:
        """The dataset as one fragment per row group, scanned one row group at a time.

        pyarrow's scanner reads ahead up to 16 batches in up to 4 files at once,
        so a plain ``Dataset.to_batches`` holds more memory the bigger the files
        (measured: Arrow's peak allocation 54 MiB at 1M rows, 543 MiB at 10M).
        Code that scans with default options (``TabularPreprocessor.fit``) gets
        this instead: memory bounded by one row group, whatever the dataset's size.
        ``exclude`` drops columns from the schema.
        """
        dataset = self.dataset
        schema = pa.schema([f for f in dataset.schema if f.name not in set(exclude)])
        pieces = [dataset.format.make_fragment(piece.path, dataset.filesystem,
                                               piece.partition_expression,
                                               row_groups=[piece.row_groups[0].id])
                  for piece in self.fragments]
        return _Sequential(pieces, schema, dataset.format, dataset.filesystem)


def _kind(kind: pa.DataType) -> str:
    """The family of an Arrow type: values of one family convert to each other's types."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    for family, test in (("number", lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)
                          or pa.types.is_decimal(t)),
                         ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
                          or getattr(pa.types, "is_string_view", lambda _: False)(t)),
                         ("time", lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t)),
                         ("boolean", pa.types.is_boolean), ("null", pa.types.is_null)):
        if test(kind):
            return family
    return str(kind)


def _missing_message(path, missing: list, needed_for: str, file_columns: dict) -> str:
    elsewhere = [c for c in missing if any(c in cs for cs in file_columns.values())]
    message = f"the Parquet file {path} lacks the column(s) {missing} needed for {needed_for}"
    if elsewhere:
        return (message + f"; other files of the dataset hold {elsewhere}. Every file of a "
                "dataset must hold the same columns (a missing one would read as nulls): add "
                "the column to that file (null where unknown) or leave the file out")
    return message + f"; its columns are {sorted(file_columns[path])}"


class _Sequential(ds.FileSystemDataset):
    """A FileSystemDataset whose scans read one fragment and one batch ahead at most."""

    def to_batches(self, **options):
        """Record batches, in order; an error reading a damaged file names the file."""
        options.setdefault("batch_readahead", 1)
        options.setdefault("fragment_readahead", 1)
        fragments = list(self.get_fragments())
        done, current = 0, None     # fragments whose batches were all yielded; the last one
        try:
            for tagged in self.scanner(**options).scan_batches():
                key = (tagged.fragment.path, *(g.id for g in tagged.fragment.row_groups))
                if current is not None and key != current:
                    done += 1
                current = key
                yield tagged.record_batch
        except (pa.ArrowException, OSError) as error:
            # Read ahead by one: the error is the last yielding row group's or the next's.
            where = " or ".join(dict.fromkeys(
                f"{f.path} (row group {f.row_groups[0].id})" for f in fragments[done:done + 2]))
            raise ValueError(f"reading {where or 'the dataset'} failed ({type(error).__name__}: "
                             f"{error}); the file is damaged") from error

    def to_table(self, **options):
        return pa.Table.from_batches(self.to_batches(**options), schema=self.schema)


# splitmix64's finaliser: a fast, well-mixed and platform-independent 64-bit hash.
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _key_hashes(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """A uint64 hash per value, equal for equal values whatever row group they sit in."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        # The same value must hash the same with or without nulls in its row group.
        values = column.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    elif pa.types.is_floating(kind):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    else:
        try:
            text = column.cast(pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(f"the validation key column {name!r} has type {kind}, which cannot "
                             "be hashed; use an integer or string column") from error
        values = text.fill_null("\x00<null>").to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values, categorize=False)


@dataclass(frozen=True)
class ValidationSplit:
    """Which rows of a stream are held out for validation, decided without materialising data.

    Parameters
    ----------
    fraction : float
        Share of rows (or of keys, or of row groups) held out, in (0, 1).
    key : str, optional
        Hold out by a hash of this column: all rows with one key value (a
        user, a session) fall on the same side. One pass over that column
        counts the rows of each side.
    whole_row_groups : bool
        Hold out whole row groups (chosen at random, about ``fraction`` of the
        rows): no validation row is ever read by training. Only right when
        row groups are not sorted by anything that matters (time, label).
    seed : int
        Seeds the hash or the choice of row groups.

    With neither ``key`` nor ``whole_row_groups``, each row is held out by a
    hash of its position in the dataset: a uniform random split, like
    scikit-learn's ``train_test_split``, computed from positions alone.
    """

    fraction: float = 0.1
    key: str | None = None
    whole_row_groups: bool = False
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction=}")
        if self.key is not None and self.whole_row_groups:
            raise ValueError("hold out by key or by whole row groups, not both")

    @property
    def columns(self) -> list[str]:
        """Columns the split reads besides the model's."""
        return [self.key] if self.key is not None else []

    def _held_out(self, hashes: np.ndarray) -> np.ndarray:
        salted = _mix(hashes + _mix(np.array([self.seed % 2**64], dtype=np.uint64)))
        return (salted >> np.uint64(11)) < np.uint64(int(self.fraction * 2**53))

    def held_out_row_groups(self, row_groups: RowGroups) -> np.ndarray:
        """``whole_row_groups``: a boolean per row group (seeded; about ``fraction`` of rows)."""
        if len(row_groups) < 2:
            raise ValueError("whole_row_groups needs at least 2 row groups; the dataset has "
                             f"{len(row_groups)} (split by row instead)")
        order = np.random.default_rng(self.seed).permutation(len(row_groups))
        enough = np.cumsum(row_groups.counts[order]) >= self.fraction * row_groups.n_rows
        n_held = min(int(np.argmax(enough)) + 1, len(row_groups) - 1)
        held = np.zeros(len(row_groups), dtype=bool)
        held[order[:n_held]] = True
        return held

    def mask(self, row_groups: RowGroups, index: int, table: pa.Table,
             held: np.ndarray | None = None) -> np.ndarray:
        """Whether each row of row group ``index`` (read into ``table``) is a validation row.

        ``held`` caches :meth:`held_out_row_groups` for ``whole_row_groups``.
        """
        n = row_groups.counts[index]
        if self.whole_row_groups:
            held = self.held_out_row_groups(row_groups) if held is None else held
            return np.full(n, held[index])
        if self.key is not None:
            return self._held_out(_key_hashes(table[self.key], self.key))
        start = np.uint64(row_groups.offsets[index])
        return self._held_out(np.arange(n, dtype=np.uint64) + start)

    def validation_counts(self, row_groups: RowGroups) -> np.ndarray:
        """Validation rows in each row group (a pass over the key column when ``key``)."""
        if self.whole_row_groups:
            return np.where(self.held_out_row_groups(row_groups), row_groups.counts, 0)
        if self.key is not None and self.key not in row_groups.dataset.schema.names:
            raise ValueError(f"the validation key column {self.key!r} is not in the dataset; "
                             f"its columns are {row_groups.dataset.schema.names}")
        counts = np.empty(len(row_groups), dtype=np.int64)
        for index in range(len(row_groups)):
            table = row_groups.read(index, self.columns)
            counts[index] = int(self.mask(row_groups, index, table).sum())
        return counts


class Part:
    """The rows one source reads: all of a dataset, or its training or validation side.

    Parameters
    ----------
    row_groups : RowGroups
    split : ValidationSplit, optional
    which : {"train", "valid"}
        The side of ``split`` (ignored without a split).

    Attributes
    ----------
    counts : ndarray of int64
        Rows of this part in each row group.
    n_rows : int
    """

    def __init__(self, row_groups: RowGroups, split: ValidationSplit | None = None,
                 which: str = "train", *, _validation_counts: np.ndarray | None = None):
        if which not in ("train", "valid"):
            raise ValueError(f"which must be 'train' or 'valid', got {which!r}")
        if split is None and which == "valid":
            raise ValueError("a validation part needs a ValidationSplit")
        self.row_groups, self.split, self.which = row_groups, split, which
        self._held = None
        if split is None:
            self.validation_counts = None
            self.counts = row_groups.counts
        else:
            if split.whole_row_groups:
                self._held = split.held_out_row_groups(row_groups)
            self.validation_counts = (_validation_counts if _validation_counts is not None
                                      else split.validation_counts(row_groups))
            self.counts = (self.validation_counts if which == "valid"
                           else row_groups.counts - self.validation_counts)
        self.n_rows = int(self.counts.sum())
        if self.n_rows == 0:
            raise ValueError(f"the {which} part of the dataset has no rows "
                             f"({row_groups.n_rows} rows in all); change the split")

    def other(self) -> Part:
        """The other side of the split, sharing the counts (no second pass)."""
        return Part(self.row_groups, self.split, "valid" if self.which == "train" else "train",
                    _validation_counts=self.validation_counts)

    @property
    def columns(self) -> list[str]:
        """Columns to read besides the model's (the split's key)."""
        return self.split.columns if self.split is not None else []

    def filter(self, index: int, table: pa.Table) -> pa.Table:
        """The rows of row group ``index`` (read into ``table``) that belong to this part."""
        if self.split is None:
            return table
        held = self.split.mask(self.row_groups, index, table, self._held)
        keep = held if self.which == "valid" else ~held
        return table if keep.all() else table.filter(pa.array(keep))
