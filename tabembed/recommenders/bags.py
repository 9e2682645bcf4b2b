"""Multi-valued side features ("Action|Comedy", lists) as bags of token codes.

A bag column holds several values per row: a list, or a string with ``|``
between values. Each value (token) gets an embedding, pooled by mean
(``nn.EmbeddingBag``) into the user's or the item's vector, so a new item
known only by its genres still gets a vector.

A row's bag is one code: the id of its distinct list of known tokens in a
:class:`BagTable` (flat token codes and offsets), so memory follows the
distinct bags' tokens, never rows times the longest bag: one item with
20,000 tags rated 3,000 times stores its tags once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

__all__ = ["SEPARATOR", "BagEncoder", "BagTable", "canonical", "detect_bag_columns"]

SEPARATOR = "|"
# A string column is a bag when at least this share of its values hold the separator.
MIN_SEPARATED_SHARE = 0.1


def _missing(value) -> bool:
    if isinstance(value, list | tuple | set | np.ndarray):
        return False
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _tokens(value) -> list[str]:
    if isinstance(value, list | tuple | set | np.ndarray):
        return [str(token) for token in value]
    if _missing(value):
        return []
    return [token.strip() for token in str(value).split(SEPARATOR) if token.strip()]


def canonical(series: pd.Series) -> pd.Series:
    """A multi-valued column as "|"-joined strings (hashable, JSON-safe), missing kept:
    tokens stripped of spaces, empty tokens dropped."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # Each distinct string once (a genres column has ~1,000 in 100,000 rows).
        # Factorised as they are: object copies of long strings would cost their size per row.
        codes, distinct = pd.factorize(series)
        text = (pd.Series(np.asarray(distinct, dtype=object), dtype="string")
                .str.replace(r"\s*\|\s*", SEPARATOR, regex=True)   # "a | b" -> "a|b"
                .str.replace(r"\|{2,}", SEPARATOR, regex=True)      # empty tokens
                .str.strip().str.strip(SEPARATOR))
        joined = np.append(text.to_numpy(dtype=object), None)[codes]   # -1: missing
        return pd.Series(joined, index=series.index, dtype=object, name=series.name)
    # Lists (or a mix) are Python objects: pandas has no vectorised join for them.
    joined = [SEPARATOR.join(_tokens(v)) if not _missing(v) else None for v in series]
    return pd.Series(joined, index=series.index, dtype=object, name=series.name)


def bag_tokens(joined: pd.Series) -> pd.Series:
    """The tokens of "|"-joined strings, one per row of the result, indexed by the
    position of the row they came from (missing and empty values give none)."""
    tokens = (joined.reset_index(drop=True).astype("string")
              .str.split(SEPARATOR).explode())
    return tokens[tokens.notna() & (tokens != "")]


def detect_bag_columns(chunks: Iterable[pd.DataFrame], candidates: list) -> list:
    """The ``candidates`` that are bags, counted over every chunk: list-valued columns, and
    text columns in which at least a tenth of the values hold ``|``."""
    listed, numeric = set(), set()
    values, separated = dict.fromkeys(candidates, 0), dict.fromkeys(candidates, 0)
    for chunk in chunks:
        for column in candidates:
            if column in listed or column in numeric:
                continue
            series = chunk[column]
            if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                numeric.add(column)
                continue
            present = series.dropna()
            if present.empty:
                continue
            if values[column] == 0 and isinstance(present.iloc[0], list | tuple | set |
                                                  np.ndarray):
                listed.add(column)
                continue
            values[column] += len(present)
            separated[column] += int(present.astype(str).str.contains(
                SEPARATOR, regex=False).sum())
    return [c for c in candidates if c in listed or (
        c not in numeric and values[c] and separated[c] / values[c] >= MIN_SEPARATED_SHARE)]


class BagTable:
    """The distinct bags of one column: their known token codes, flat, and offsets.

    Bag ``i`` holds ``tokens[offsets[i]:offsets[i + 1]]``; id 0 is the empty
    bag (missing values, and bags whose tokens are all unknown). Ids are handed
    out once and never change (the table only grows, under a lock), so codes
    encoded earlier stay valid while other threads encode new bags. Copies
    share the table (``copy.deepcopy`` returns it): a model and its averaged
    copies must read the ids the encoder gave out.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._ids = {(): 0}
        self._tokens = np.zeros(64, np.int64)
        self._offsets = np.zeros(64, np.int64)
        self._n_tokens, self._n_bags = 0, 1
        self._views = {}

    def __len__(self) -> int:
        return self._n_bags

    def register(self, bags: list[np.ndarray]) -> np.ndarray:
        """The ids of ``bags`` (arrays of known token codes), new ones appended."""
        ids = np.empty(len(bags), np.int64)
        with self._lock:
            for index, tokens in enumerate(bags):
                key = tuple(tokens.tolist())
                found = self._ids.get(key)
                if found is None:
                    found = self._append(tokens)
                    self._ids[key] = found
                ids[index] = found
        return ids

    def _append(self, tokens: np.ndarray) -> int:
        stop = self._n_tokens + len(tokens)
        if stop > len(self._tokens):
            # A new array, never resized in place: views handed out keep the old one.
            self._tokens = np.concatenate([self._tokens[:self._n_tokens], np.zeros(
                max(stop, 2 * len(self._tokens)) - self._n_tokens, np.int64)])
        if self._n_bags + 1 >= len(self._offsets):
            self._offsets = np.concatenate([self._offsets[:self._n_bags + 1],
                                            np.zeros(len(self._offsets), np.int64)])
        self._tokens[self._n_tokens:stop] = tokens
        self._offsets[self._n_bags + 1] = stop
        self._n_tokens, self._n_bags = stop, self._n_bags + 1
        self._views = {}
        return self._n_bags - 1

    def tensors(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, offsets)`` of every bag so far (``offsets`` has one entry more)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        with self._lock:
            view = self._views.get(device)
            if view is None:
                view = (torch.from_numpy(self._tokens[:self._n_tokens]).to(device),
                        torch.from_numpy(self._offsets[:self._n_bags + 1]).to(device))
                self._views[device] = view
        return view

    def __deepcopy__(self, memo) -> BagTable:
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]
        state["_views"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@dataclass
class BagEncoder:
    """The bag columns, each one's token vocabulary and its longest row (in tokens).

    Fitted chunk by chunk (:meth:`update`), so one pass over Parquet or one
    DataFrame fit it the same way. Token code 0 is the unknown token. Each
    column's distinct bags live in a :class:`BagTable` (:meth:`table`), filled
    as rows are encoded; it is not saved: encoding the same rows again gives
    bags the same tokens.
    """

    columns: list = field(default_factory=list)
    vocabulary: dict = field(default_factory=dict)
    lengths: dict = field(default_factory=dict)

    def __post_init__(self):
        self._seen = {c: set(self.vocabulary.get(c, ())) for c in self.columns}
        for column in self.columns:
            self.lengths.setdefault(column, 1)
        self.tables = {c: BagTable() for c in self.columns}

    def table(self, column) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, offsets)`` of ``column``'s distinct bags encoded so far."""
        return self.tables[column].tensors()

    def canonical(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with each bag column as "|"-joined strings (a new frame)."""
        present = [c for c in self.columns if c in frame.columns]
        if not present:
            return frame
        return frame.assign(**{c: canonical(frame[c]) for c in present})

    def update(self, frame: pd.DataFrame) -> None:
        """Learn the tokens and row lengths of a canonical chunk."""
        for column in self.columns:
            tokens = bag_tokens(pd.Series(frame[column].dropna().unique(), dtype=object))
            self._seen[column].update(tokens.unique())
            if len(tokens):
                self.lengths[column] = max(self.lengths[column],
                                           int(tokens.index.value_counts().max()))

    def finish(self) -> None:
        """Fix the vocabularies (sorted) after the last :meth:`update`."""
        self.vocabulary = {c: sorted(self._seen[c]) for c in self.columns}

    def sizes(self) -> list[tuple[int, int]]:
        """``(tokens + unknown, longest row)`` per bag column."""
        return [(len(self.vocabulary[c]) + 1, self.lengths[c]) for c in self.columns]

    def encode(self, frame: pd.DataFrame) -> list[torch.Tensor]:
        """Each bag column of a canonical frame as bag ids ``[n, 1]`` in its
        :class:`BagTable`: the row's known tokens (code >= 1) in their order; unknown
        tokens are left out, as the padded mean left them out."""
        blocks = []
        for column in self.columns:
            # Per distinct value (genre combinations repeat), then gathered per row.
            codes, distinct = pd.factorize(frame[column].to_numpy(dtype=object))
            tokens = bag_tokens(pd.Series(distinct, dtype=object))
            known = pd.Index(self.vocabulary[column]).get_indexer(
                tokens.to_numpy(dtype=object)) + 1
            rows = tokens.index.to_numpy()[known > 0]
            known = known[known > 0].astype(np.int64)
            # ``rows`` ascend (explode keeps the order), so each value's tokens are a run.
            bounds = np.searchsorted(rows, np.arange(len(distinct) + 1))
            ids = self.tables[column].register(
                [known[bounds[i]:bounds[i + 1]] for i in range(len(distinct))])
            ids = np.append(ids, 0)       # code -1 (missing): the empty bag
            blocks.append(torch.from_numpy(ids[codes]).reshape(-1, 1))
        return blocks

    def to_dict(self) -> dict:
        return {"columns": list(self.columns),
                "vocabulary": [self.vocabulary[c] for c in self.columns],
                "lengths": [self.lengths[c] for c in self.columns]}

    @classmethod
    def from_dict(cls, state: dict) -> BagEncoder:
        columns = list(state["columns"])
        return cls(columns, dict(zip(columns, state["vocabulary"], strict=True)),
                   dict(zip(columns, state["lengths"], strict=True)))
