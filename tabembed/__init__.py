"""tabembed: deep learning on tabular data with entity embeddings."""

from tabembed._version import __version__

__all__ = ["__version__"]
