"""The vocabulary of one categorical column: its values and their codes.

Code ``i + 1`` is the vocabulary's ``i``-th value and code 0 the unknown token,
shared by missing values and values never seen in training. A pandas categorical
and an Arrow dictionary column are mapped by *value*, never by their codes, so a
frame whose categories differ from training still maps right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["Vocabulary", "python_scalar", "sorted_vocabulary"]

# At most this many rows are coded by dictionary (see Vocabulary.codes).
FEW_ROWS = 16


def sorted_vocabulary(values: list) -> list:
    """``values`` sorted; mixed types in a deterministic order all the same."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def python_scalar(value):
    """A NumPy scalar as the Python value JSON and dictionaries take."""
    return value.item() if isinstance(value, np.generic) else value


class Vocabulary:
    """Codes of the values of one categorical column.

    Parameters
    ----------
    values : list
        The column's distinct training values, in code order.
    """

    def __init__(self, values: list):
        self.values = values
        self.index = pd.Index(values, dtype=object if not values else None)
        # Dictionaries for a few rows: pd.Index.get_indexer costs ~80 us a call whatever
        # the length, most of a one-row prediction's time.
        self.string_codes = ({value: code for code, value in enumerate(values, start=1)}
                             if values and all(isinstance(v, str) for v in values) else None)
        # The same for integer vocabularies, read from NumPy integer columns only (where
        # get_indexer's matching is plain equality of ints).
        self.integer_codes = (
            {int(value): code for code, value in enumerate(values, start=1)}
            if values and all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                              for v in values) else None)
        self._categorical = None    # (dtype, codes by category) of the last categorical seen

    def __getstate__(self):
        return {**self.__dict__, "_categorical": None}

    def codes(self, series: pd.Series, column) -> np.ndarray:
        """int64 codes of ``series`` (0 for unknown or missing); ``column`` names errors."""
        codes = self._few_codes(series)
        if codes is not None:
            return codes
        if isinstance(series.dtype, pd.CategoricalDtype):
            # Map the (few) categories by value, then gather: never trust the codes.
            lookup = np.append(self.index.get_indexer(series.cat.categories) + 1, 0)
            # Code -1 (missing) hits the 0. The codes as intp first: NumPy indexes with int8
            # codes through a casting loop (163 us for 65,536 rows; 15 + 52 us this way).
            return lookup[series.cat.codes.to_numpy().astype(np.intp)]
        try:
            return self.index.get_indexer(series) + 1
        except TypeError as error:
            raise ValueError(
                f"categorical column {column!r} holds unhashable values ({error}); "
                "convert lists/dicts to strings or tuples first"
            ) from error

    def dictionary_codes(self, values) -> np.ndarray | None:
        """Codes of an Arrow dictionary column of strings, each chunk mapped by its
        dictionary's values as :meth:`codes` maps a categorical's categories; None for
        any other column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        kind = values.type
        if not values.num_chunks or not pa.types.is_dictionary(kind) or not (
                pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
            return None
        if any(chunk.dictionary.null_count for chunk in values.chunks):
            return None
        parts = []
        for chunk in values.chunks:
            lookup = np.append(self.index.get_indexer(chunk.dictionary.to_pandas()) + 1, 0)
            indices = chunk.indices if not chunk.null_count else pc.fill_null(chunk.indices, -1)
            parts.append(lookup[indices.to_numpy().astype(np.intp)])  # -1 (missing) hits the 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _few_codes(self, series: pd.Series) -> np.ndarray | None:
        """Codes by dictionary for up to FEW_ROWS rows: strings or string categories (or
        missing values) in a string vocabulary, or a NumPy integer column in an integer
        vocabulary; None when that does not apply. Same codes as ``get_indexer``
        (tests/test_preprocessing.py checks it)."""
        if len(series) > FEW_ROWS:
            return None
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iu":
            if self.integer_codes is None:
                return None
            return np.array([self.integer_codes.get(value, 0) for value in series.tolist()],
                            dtype=np.int64)
        lookup = self.string_codes
        if lookup is None:
            return None
        if isinstance(dtype, pd.CategoricalDtype):
            # Rows cut from one frame share its dtype object: map its categories once.
            if self._categorical is not None and self._categorical[0] is dtype:
                return self._categorical[1][series.array.codes]
            categorical = series.array
            if len(categorical.categories) > 256:
                return None
            categories = categorical.categories.tolist()
            if not all(isinstance(category, str) for category in categories):
                return None
            # Map the categories by value, then gather: never trust the codes.
            by_code = np.array([*(lookup.get(c, 0) for c in categories), 0])
            self._categorical = (dtype, by_code)
            return by_code[categorical.codes]   # code -1 (missing) hits the 0
        values = series.tolist()
        if not all(isinstance(value, str) or value is None or value is pd.NA
                   or (isinstance(value, float) and value != value) for value in values):
            return None
        return np.array([lookup.get(value, 0) if isinstance(value, str) else 0
                         for value in values], dtype=np.int64)
