"""Transfer learned entity embeddings between fitted models, matched by category value.

Two models fitted on different data give the same value (``"Exec-managerial"``)
different codes, so copying weight rows by code would scramble them. Here each
target code is decoded to its value, looked up in the source's vocabulary and
the source's row copied; values the source never saw keep the target's
initialisation, and the unknown token's row (code 0) is copied too, except
into or from a table that pins it at zero (``padding_idx``, the recommenders). Works on
``(TabularPreprocessor, model)`` pairs or on anything with ``preprocessor_``
and ``model_`` (the fitted MLP estimators and the recommender).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from tabembed.models.layers import CategoricalEmbeddings

__all__ = ["embedding_tables", "transfer_embeddings"]


def _pair(fitted):
    if isinstance(fitted, tuple) and len(fitted) == 2:
        return fitted
    if hasattr(fitted, "preprocessor_") and hasattr(fitted, "model_"):
        return fitted.preprocessor_, fitted.model_
    raise TypeError("expected a (TabularPreprocessor, model) pair or a fitted estimator with "
                    f"preprocessor_ and model_, got {type(fitted).__name__}")


def embedding_tables(preprocessor, model: nn.Module) -> dict:
    """``{categorical column: nn.Embedding}`` of a fitted model.

    MLPs hold one table per categorical column (:class:`CategoricalEmbeddings`);
    collaborative models hold the user and item factors for columns 0 and 1.
    """
    columns = list(preprocessor.cat_columns_)
    embeddings = getattr(model, "embeddings", None)
    if isinstance(embeddings, CategoricalEmbeddings):
        return dict(zip(columns, embeddings.embeddings))
    if hasattr(model, "user_factors") and hasattr(model, "item_factors"):
        return {columns[0]: model.user_factors, columns[1]: model.item_factors}
    raise TypeError(f"{type(model).__name__} has no entity embeddings tabembed knows how to "
                    "transfer (CategoricalEmbeddings, or user/item factors)")


def transfer_embeddings(source, target, columns: Sequence | None = None) -> dict:
    """Copy embedding rows of ``columns`` from ``source`` into ``target``, matched by value.

    Parameters
    ----------
    source, target : (TabularPreprocessor, model) or fitted estimator
        ``target``'s weights are changed in place; ``source`` is only read.
    columns : sequence, optional
        Categorical columns to transfer; default every column both have.

    Returns
    -------
    dict
        ``{column: number of target values found in the source}``.
    """
    source_preprocessor, source_model = _pair(source)
    target_preprocessor, target_model = _pair(target)
    source_tables = embedding_tables(source_preprocessor, source_model)
    target_tables = embedding_tables(target_preprocessor, target_model)
    if columns is None:
        columns = [c for c in target_tables if c in source_tables]
        if not columns:
            raise ValueError("source and target share no categorical column; source has "
                             f"{list(source_tables)}, target has {list(target_tables)}")
    report = {}
    for column in columns:
        for name, tables in (("source", source_tables), ("target", target_tables)):
            if column not in tables:
                raise ValueError(f"column {column!r} is not a categorical column of the {name} "
                                 f"model; it has {list(tables)}")
        source_table, target_table = source_tables[column], target_tables[column]
        if source_table.embedding_dim != target_table.embedding_dim:
            raise ValueError(
                f"column {column!r}: the source's embeddings have width "
                f"{source_table.embedding_dim}, the target's {target_table.embedding_dim}; fit "
                f"the target's preprocessor with embedding_sizes={{{column!r}: "
                f"{source_table.embedding_dim}}}"
            )
        values = pd.Series(target_preprocessor.categories_[column], dtype=object)
        source_codes = np.asarray(source_preprocessor.encode(column, values))
        found = source_codes > 0
        target_codes, source_rows = np.flatnonzero(found) + 1, source_codes[found]
        if target_table.padding_idx is None and source_table.padding_idx is None:
            # The unknown token's row moves too, unless one side pins it at zero (the
            # recommenders' prior for unknown users and items).
            target_codes, source_rows = np.append(target_codes, 0), np.append(source_rows, 0)
        with torch.no_grad():
            weights = source_table.weight.detach()[torch.as_tensor(source_rows)]
            target_table.weight[torch.as_tensor(target_codes)] = weights.to(
                target_table.weight.device, target_table.weight.dtype)
        report[column] = int(found.sum())
    return report
