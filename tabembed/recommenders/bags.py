"""Multi-valued side features ("Action|Comedy", lists) as bags of token codes.

A bag column holds several values per row: a list, or a string with ``|``
between values. Each value (token) gets an embedding, pooled by mean
(``nn.EmbeddingBag``) into the user's or the item's vector, so a new item
known only by its genres still gets a vector.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

__all__ = ["SEPARATOR", "BagEncoder", "canonical", "detect_bag_columns"]

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
        codes, distinct = pd.factorize(series.to_numpy(dtype=object))
        text = (pd.Series(distinct, dtype="string")
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


@dataclass
class BagEncoder:
    """The bag columns, each one's token vocabulary and its longest row (in tokens).

    Fitted chunk by chunk (:meth:`update`), so one pass over Parquet or one
    DataFrame fit it the same way. Code 0 is the unknown (and padding) token.
    """

    columns: list = field(default_factory=list)
    vocabulary: dict = field(default_factory=dict)
    lengths: dict = field(default_factory=dict)

    def __post_init__(self):
        self._seen = {c: set(self.vocabulary.get(c, ())) for c in self.columns}
        for column in self.columns:
            self.lengths.setdefault(column, 1)

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
        """Each bag column of a canonical frame as token codes ``[n, longest row]``: each
        token's code (0: unknown) at its place in its row; tokens past the training
        maximum are dropped."""
        blocks = []
        for column in self.columns:
            # Per distinct value (genre combinations repeat), then gathered per row.
            codes, distinct = pd.factorize(frame[column].to_numpy(dtype=object))
            tokens = bag_tokens(pd.Series(distinct, dtype=object))
            length = self.lengths[column]
            known = pd.Index(self.vocabulary[column]).get_indexer(
                tokens.to_numpy(dtype=object)) + 1
            rows = tokens.index.to_numpy()
            place = tokens.groupby(level=0).cumcount().to_numpy()
            table = np.zeros((len(distinct) + 1, length), np.int64)   # last row: missing
            kept = place < length
            table[rows[kept], place[kept]] = known[kept]
            blocks.append(torch.from_numpy(table[codes]))
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
