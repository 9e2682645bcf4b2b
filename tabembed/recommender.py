"""Deprecated: the recommenders moved to :mod:`tabembed.recommenders` (a package).

This alias keeps ``from tabembed.recommender import EmbeddingRecommender`` working
for one release, with a ``FutureWarning``.
"""

import warnings

from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender

__all__ = ["EmbeddingRecommender", "ImplicitRecommender"]

warnings.warn("tabembed.recommender is deprecated and will be removed in the next release; "
              "import from tabembed.recommenders (or tabembed) instead", FutureWarning,
              stacklevel=2)
