"""Recommenders: rating prediction, top-k recommendations and similar items.

:class:`EmbeddingRecommender` learns from ratings (``explicit.py``),
:class:`ImplicitRecommender` from interactions without ratings (``implicit.py``);
both stand on :class:`~tabembed.recommenders.base.Recommender` (``base.py``).
One concept a file:

- ``interaction_data.py``: one scan of a DataFrame or a Parquet stream
  (:class:`Interactions`), shared by every model trained on it;
- ``bags.py``: multi-valued side features ("Action|Comedy") as bags of tokens;
- ``side_features.py``: user, item and context features, and their tables;
- ``scoring.py``: users x items scores, shrinkage by support, top-k;
- ``fold_in.py``: a new user's vector fitted with the model fixed;
- ``hybrid.py``: the explicit model's default ranking, the implicit model's
  score plus the predicted rating.
"""

from tabembed.recommenders.explicit import EmbeddingRecommender
from tabembed.recommenders.implicit import ImplicitRecommender
from tabembed.recommenders.interaction_data import Interactions

__all__ = ["EmbeddingRecommender", "ImplicitRecommender", "Interactions"]
