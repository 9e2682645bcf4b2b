"""A fitted TabularPreprocessor as JSON-safe data, and back, checked.

Saved model files hold this state, never a pickle. A restored state is checked
as a whole (:func:`check_state`), so a damaged file fails at load with the
reason, never later at predict.
"""

from __future__ import annotations

import math

import numpy as np

from tabembed.scaling import SCALINGS
from tabembed.vocabulary import python_scalar

__all__ = ["FORMAT", "FORMAT_VERSION", "check_state", "read_state", "state_of"]

FORMAT = "tabembed.TabularPreprocessor"
FORMAT_VERSION = 1
# The state's dictionaries keyed by column name (JSON turns every key into a string).
_KEYED = ("categories", "embedding_sizes", "medians", "means", "stds", "quantiles",
          "column_kinds", "timezones", "few_values")


def state_of(preprocessor) -> dict:
    """The JSON-safe fitted state of ``preprocessor``."""
    p = preprocessor
    indicators = {f"{c}_na" for c in p.na_names_}
    state = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        # A custom embedding_rule has no JSON form; the sizes it gave are saved below.
        "params": {k: v for k, v in p.get_params().items() if k != "embedding_rule"},
        "feature_names_in": [python_scalar(c) for c in p.feature_names_in_],
        "cat_names": p.cat_names_, "cont_names": p.cont_names_,
        "date_names": p.date_names_, "na_names": p.na_names_,
        "categories": {k: v for k, v in p.categories_.items() if k not in indicators},
        "embedding_sizes": {k: list(v) for k, v in p.embedding_sizes_.items()},
        "medians": p.medians_, "means": p.means_, "stds": p.stds_,
        "quantiles": p.quantiles_,
        "few_values": getattr(p, "few_values_", {}),
        "column_kinds": getattr(p, "column_kinds_", {}),
        "timezones": getattr(p, "timezones_", {}),
    }
    # JSON keys are strings: remember the columns whose names are not (ints, floats).
    used = [*p.feature_names_in_, *p.cat_names_, *p.cont_names_, *p.date_names_,
            *(p.embedding_sizes or {})]
    for field in _KEYED:
        used.extend(state[field])
    state["column_names"] = _column_names(used)
    for column, values in state["categories"].items():
        for value in values:
            if not isinstance(value, str | int | float | bool):
                raise TypeError(
                    f"category {value!r} of column {column!r} is a {type(value).__name__}, "
                    "which has no JSON form; convert the column to strings first"
                )
    return state


def read_state(state: dict) -> tuple[dict, dict]:
    """``(params, fitted attributes)`` of a state written by :func:`state_of`; the
    attributes derived from them (output columns, vocabularies) are left to the
    preprocessor."""
    if state.get("format") != FORMAT:
        raise ValueError("not a TabularPreprocessor state (format field missing or wrong)")
    if state.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"this state was written by a newer tabembed (format version "
            f"{state['version']} > {FORMAT_VERSION}); upgrade tabembed to read it"
        )
    names = {key: name for key, name in state.get("column_names", [])}
    state = {**state, **{field: _restore_keys(state[field], names) for field in _KEYED
                         if isinstance(state.get(field), dict)}}
    params = dict(state["params"])
    if isinstance(params.get("embedding_sizes"), dict):
        params["embedding_sizes"] = _restore_keys(params["embedding_sizes"], names)
    feature_names = np.asarray(state["feature_names_in"], dtype=object)
    fitted = {
        "feature_names_in_": feature_names, "n_features_in_": len(feature_names),
        "cat_names_": list(state["cat_names"]), "cont_names_": list(state["cont_names"]),
        "date_names_": list(state["date_names"]),
        "categories_": {k: list(v) for k, v in state["categories"].items()},
        "na_names_": list(state["na_names"]),
        "medians_": dict(state["medians"]), "means_": dict(state["means"]),
        "stds_": dict(state["stds"]), "quantiles_": dict(state.get("quantiles", {})),
        "few_values_": {k: list(v) for k, v in state.get("few_values", {}).items()},
        # Files of the first release lack these: no type-change warnings, naive dates.
        "column_kinds_": dict(state.get("column_kinds", {})),
        "timezones_": dict(state.get("timezones", {})),
        "embedding_sizes_": {k: tuple(v) for k, v in state["embedding_sizes"].items()},
    }
    return params, fitted


def check_state(preprocessor, few_values_limit: int) -> None:
    """Raise ``ValueError`` unless a restored preprocessor's parts fit together."""
    p = preprocessor

    def damaged(why):
        return ValueError(f"damaged TabularPreprocessor state: {why}")

    if p.continuous_scaling not in SCALINGS:
        raise damaged(f"continuous_scaling={p.continuous_scaling!r}")
    inputs = set(p.feature_names_in_.tolist())
    roles = p.cat_names_ + p.cont_names_ + p.date_names_
    if not set(roles) <= inputs or len(set(roles)) != len(roles):
        raise damaged(f"the column roles {roles} do not match the input columns "
                      f"{sorted(map(str, inputs))}")
    for column in p.cat_columns_:
        values = p.categories_[column]
        if not all(isinstance(v, str | int | float | bool) for v in values) \
                or len(set(values)) != len(values):
            raise damaged(f"the vocabulary of {column!r} holds repeated or non-scalar values")
    if list(p.embedding_sizes_) != p.cat_columns_:
        raise damaged(f"embedding sizes are given for {list(p.embedding_sizes_)}, "
                      f"the categorical columns are {p.cat_columns_}")
    for column, size in p.embedding_sizes_.items():
        if not (len(size) == 2 and all(isinstance(n, int) and n >= 1 for n in size)
                and size[0] == len(p.categories_[column]) + 1):
            raise damaged(f"column {column!r} has {len(p.categories_[column])} values "
                          f"but an embedding table of {size}")
    for column in p.cont_columns_:
        stats = [p.medians_.get(column), p.means_.get(column), p.stds_.get(column)]
        if not all(isinstance(v, int | float) and np.isfinite(v) for v in stats) \
                or stats[2] <= 0:
            raise damaged(f"continuous column {column!r} lacks a finite median, mean or "
                          f"positive std: {stats}")
        few = p.few_values_.get(column, [])
        if len(few) > few_values_limit or not all(
                isinstance(v, int | float) and math.isfinite(v) for v in few):
            raise damaged(f"the distinct values of {column!r} are not {few_values_limit} or "
                          "fewer finite numbers")
        if p.continuous_scaling == "quantile":
            quantiles = np.asarray(p.quantiles_.get(column, []), dtype=np.float64)
            if quantiles.ndim != 1 or len(quantiles) < 2 or not np.isfinite(quantiles).all() \
                    or (np.diff(quantiles) < 0).any():
                raise damaged(f"the quantiles of {column!r} are not increasing numbers")


def _column_names(names) -> list:
    """``[[json_key, name], ...]`` for the column names JSON would turn into other strings."""
    pairs, seen = [], {}
    for name in names:
        name = python_scalar(name)
        if (not isinstance(name, str | int | float) or isinstance(name, bool)
                or (isinstance(name, float) and not np.isfinite(name))):
            raise TypeError(
                f"column name {name!r} is a {type(name).__name__}; saved models keep column "
                "names that are strings, integers or floats: rename the column")
        key = str(name)
        if key in seen and not (seen[key] == name and type(seen[key]) is type(name)):
            raise ValueError(f"columns {seen[key]!r} and {name!r} have the same name as text "
                             f"({key!r}), which a saved model cannot tell apart: rename one")
        if key not in seen and not isinstance(name, str):
            pairs.append([key, name])
        seen[key] = name
    return pairs


def _restore_keys(mapping: dict, names: dict) -> dict:
    return {names.get(key, key): value for key, value in mapping.items()}
