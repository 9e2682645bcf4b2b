"""Training and prediction from Parquet larger than memory.

- :func:`open_dataset`, :class:`ValidationSplit`: the data and the rows held out.
- :class:`ParquetBatches`, :class:`TableTransform`, :func:`train_valid_sources`:
  batch sources streaming Parquet, sharded over processes.
- :func:`fit_preprocessor`, :func:`fit_target`:
  what fitting needs, from the stream.
- :func:`predict_to_parquet`: predictions written to Parquet in bounded memory.
"""

from tabembed.streaming.dataset import Part, RowGroups, ValidationSplit, open_dataset
from tabembed.streaming.fitting import column_bounds, fit_preprocessor, fit_target
from tabembed.streaming.prediction import predict_to_parquet
from tabembed.streaming.source import ParquetBatches, TableTransform, train_valid_sources

__all__ = [
    "ParquetBatches",
    "Part",
    "RowGroups",
    "TableTransform",
    "ValidationSplit",
    "column_bounds",
    "fit_preprocessor",
    "fit_target",
    "open_dataset",
    "predict_to_parquet",
    "train_valid_sources",
]
