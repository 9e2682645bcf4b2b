"""Side features and their roles: user features, item features and context features.

A side column is a *user feature* when it is constant per user (an age), an
*item feature* when constant per item (a genre), and a *context feature* when
it varies within both (the hour of a click). User and item features are kept
in one table per side (first value per id, in order of first appearance), so
``recommend`` can score any user against every item without being given them
again; context features enter ``predict`` only.

Roles are inferred chunk by chunk (:class:`RoleScan`), so a DataFrame and a
Parquet stream find them the same way; ``user_features=`` and
``item_features=`` (LightFM's names) fix them instead.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tabembed import persistence
from tabembed.streaming.interactions import FirstValues

__all__ = ["RoleScan", "SideFeatures", "column_kinds"]


def column_kinds(frame: pd.DataFrame, columns: list) -> tuple[list, list]:
    """``(categorical, continuous)`` of ``columns``: numbers are continuous, the rest
    (strings, categories, booleans) categorical."""
    cats = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])
            or pd.api.types.is_bool_dtype(frame[c])]
    return cats, [c for c in columns if c not in cats]


@dataclass
class SideFeatures:
    """The roles of the side columns and the user and item tables (indexed by id)."""

    user_features: list
    item_features: list
    context_features: list
    user_table: pd.DataFrame
    item_table: pd.DataFrame

    def to_dict(self) -> dict:
        return {"user_features": self.user_features, "item_features": self.item_features,
                "context_features": self.context_features,
                "user_table": _table_to_json(self.user_table),
                "item_table": _table_to_json(self.item_table)}

    @classmethod
    def from_dict(cls, state: dict, user_column, item_column) -> SideFeatures:
        return cls(list(state["user_features"]), list(state["item_features"]),
                   list(state["context_features"]),
                   _table_from_json(state["user_table"], user_column),
                   _table_from_json(state["item_table"], item_column))


class RoleScan:
    """What decides the roles, accumulated chunk by chunk: each id's first value of every
    side column, and whether any id's value ever changes."""

    def __init__(self, side: list, n_users: int, n_items: int):
        self.side = list(side)
        self.per_user = {c: FirstValues(n_users) for c in side}
        self.per_item = {c: FirstValues(n_items) for c in side}
        self.first_user = np.full(n_users + 1, -1, dtype=np.int64)
        self.first_item = np.full(n_items + 1, -1, dtype=np.int64)

    def update(self, frame: pd.DataFrame, users: np.ndarray, items: np.ndarray,
               positions: np.ndarray) -> None:
        """One chunk: its rows' user and item codes and their positions in the data."""
        for codes, first in ((users, self.first_user), (items, self.first_item)):
            fresh = first[codes] < 0
            ids, where = np.unique(codes[fresh], return_index=True)
            first[ids] = positions[np.flatnonzero(fresh)[where]]
        for column in self.side:
            for values, codes in ((self.per_user[column], users),
                                  (self.per_item[column], items)):
                if not values.varies:
                    values.update(codes, frame[column])

    def features(self, preprocessor, user_column, item_column, *, bags=(),
                 user_features=None, item_features=None) -> SideFeatures:
        """The roles (inferred, or as given) and the tables."""
        varies_for_user = {c: self.per_user[c].varies for c in self.side}
        varies_for_item = {c: self.per_item[c].varies for c in self.side}
        if user_features is None and item_features is None:
            items = [c for c in self.side if not varies_for_item[c]]
            users = [c for c in self.side if varies_for_item[c] and not varies_for_user[c]]
        else:
            users, items = list(user_features or []), list(item_features or [])
            for column, varies, side in [*((c, varies_for_user, "user") for c in users),
                                         *((c, varies_for_item, "item") for c in items)]:
                if varies[column]:
                    raise ValueError(
                        f"{side}_features names {column!r}, but its value changes within "
                        f"a {side}; a {side} feature must be constant per {side} (leave it "
                        "out of the roles to use it as a context feature)")
        context = [c for c in self.side if c not in users and c not in items]
        for column in context:
            if column in bags:
                raise ValueError(f"the multi-valued column {column!r} varies within users and "
                                 "within items; a bag must describe the user or the item")
        if context:
            warnings.warn(
                f"columns {context} vary within users and within items, so they are context "
                "features: predict() uses them, but recommend(), recommend_all() and "
                "recommend_for_items() cannot fill them and will refuse; name the user and "
                "item features (user_features=, item_features=) or drop these columns",
                UserWarning, stacklevel=4)
        return SideFeatures(
            users, items, context,
            self._table(preprocessor, user_column, self.first_user, self.per_user, users),
            self._table(preprocessor, item_column, self.first_item, self.per_item, items))

    @staticmethod
    def _table(preprocessor, id_column, first, per_id, chosen) -> pd.DataFrame:
        # In order of first appearance, as drop_duplicates keeps them.
        codes = np.flatnonzero(first >= 0)
        codes = codes[codes > 0]       # a missing id is no user or item
        codes = codes[np.argsort(first[codes], kind="stable")]
        ids = np.asarray(preprocessor.categories_[id_column], dtype=object)[codes - 1]
        index = pd.Index(ids.tolist(), name=id_column)
        return pd.DataFrame({c: per_id[c].values(codes) for c in chosen},
                            index=index).infer_objects()


def _table_to_json(table: pd.DataFrame) -> dict:
    """A feature table (indexed by id) as JSON lists: column names of any type survive."""
    return {"index": persistence.json_safe(table.index.tolist()),
            "columns": [[persistence.json_safe(c), persistence.json_safe(
                table[c].astype(object).where(table[c].notna(), None).tolist())]
                for c in table.columns]}


def _table_from_json(state, index_name) -> pd.DataFrame:
    if isinstance(state, str):      # the first release's pandas "table" JSON
        return pd.read_json(io.StringIO(state), orient="table").set_index(index_name)
    table = pd.DataFrame({name: values for name, values in state["columns"]},
                         index=pd.Index(state["index"], name=index_name))
    return table.infer_objects()
