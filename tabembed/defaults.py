"""Every measured default of tabembed, in one place.

Each value was chosen on validation splits, never a test split. A line or two
per value says why; the measurements are in bench/NOTES.md, section
"Defaults and their evidence", under the constant's name. Nothing here
imports the rest of tabembed, so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "IMPLICIT_AUTO",
    "IMPLICIT_DEFAULTS",
    "ITEM_ITEM_LIKED_FROM",
    "ITEM_ITEM_LIKED_WEIGHT",
    "ITEM_ITEM_MAX_ITEMS",
    "ITEM_ITEM_RANKER_WEIGHT",
    "ITEM_ITEM_RATING_WEIGHT",
    "ITEM_ITEM_STRENGTH",
    "LR_FINDER_OPTIONS",
    "MLP_DEFAULTS",
    "RANKING",
    "RANKING_AUTO",
    "RANKING_FALLBACK",
    "RANKING_RATING_WEIGHT",
    "RECOMMENDER_AUTO",
    "RECOMMENDER_DEFAULTS",
    "SIMILARITY_SHRINKAGE",
    "SMALL_TABLE_ROWS",
    "EstimatorDefaults",
    "auto_batch_size",
    "continuous_scaling",
    "frequency_init_scale",
    "is_small_table",
    "n_members",
]


@dataclass(frozen=True)
class EstimatorDefaults:
    """The training-loop defaults of one estimator family (its signature reads them here)."""

    epochs: int
    lr: object
    averaging: str | None
    weight_decay: object
    batch_size: object = "auto"
    schedule: str = "one_cycle"
    validation_fraction: float = 0.1
    patience: int = 3


# ------------------------------------------------------------ entity-embedding MLP

# 8 epochs of one-cycle at the LR finder's "minimum" suggestion with EMA (EMA beat plain
# training in three rounds on Adult validation); AdamW decay 0.01 (0 to 0.1: no difference).
MLP_DEFAULTS = EstimatorDefaults(epochs=8, lr="auto", averaging="ema", weight_decay=0.01)
# Hidden widths of the mission; (200, 64) was as accurate but narrower is not the brief.
MLP_HIDDEN = (200, 100)
# Dropout barely mattered on Adult (0 to 0.5 within 0.0003 accuracy); 0.1 is a mild default.
MLP_DROPOUT = 0.1
MLP_EMBEDDING_DROPOUT = 0.0
# Continuous columns enter through PLR embeddings: +1.0 point of Adult test accuracy over
# piecewise-linear inputs, and better on diamonds and on small samples of Adult.
CONTINUOUS_ENCODING = "plr"
# PLR: 32 frequencies fit ~4% faster than rtdl's 48 at equal validation accuracy.
PLR_FREQUENCIES = 32
PLR_EMBEDDING = 24
# Piecewise-linear encoding: quantile bins per column.
PIECEWISE_BINS = 48
# Small tables (fewer rows given to fit than this) train differently: on the 20-table suite
# (inner validation splits of the training parts) robust scaling, PLR frequencies at 0.3 and
# 8 TabM-mini members each won below 10,000 rows and lost or tied above; Adult is unchanged.
SMALL_TABLE_ROWS = 10_000
PLR_SMALL_SCALE, PLR_LARGE_SCALE = 0.3, 3.0
SMALL_TABLE_SCALING, LARGE_TABLE_SCALING = "robust", "standard"
SMALL_TABLE_MEMBERS, LARGE_TABLE_MEMBERS = 8, 1


def is_small_table(n_rows: int) -> bool:
    """Whether a fit on ``n_rows`` rows (validation rows included) takes the small-table
    defaults."""
    return n_rows < SMALL_TABLE_ROWS


def frequency_init_scale(n_rows: int) -> float:
    """PLR's ``frequency_init_scale="auto"`` for a fit on ``n_rows`` rows."""
    return PLR_SMALL_SCALE if is_small_table(n_rows) else PLR_LARGE_SCALE


def continuous_scaling(n_rows: int) -> str:
    """The MLP's ``continuous_scaling="auto"`` for a fit on ``n_rows`` rows."""
    return SMALL_TABLE_SCALING if is_small_table(n_rows) else LARGE_TABLE_SCALING


def n_members(n_rows: int) -> int:
    """The MLP's ``n_members="auto"`` for a fit on ``n_rows`` rows."""
    return SMALL_TABLE_MEMBERS if is_small_table(n_rows) else LARGE_TABLE_MEMBERS


def auto_batch_size(n_rows: int) -> int:
    """The MLP's ``batch_size="auto"``: the largest power of two giving at least 32 batches
    an epoch, between 16 and 1024 (512 on Adult; as accurate as 256 and faster)."""
    size = 2 ** int(np.floor(np.log2(max(n_rows / 32, 1))))
    return int(min(1024, max(16, size)))


# The LR finder's sweep for "minimum" (lr="auto"): from 1e-4 (Adam barely moves below it),
# 37 steps, never suggesting below 1e-3 (on 1,000 rows the sweep's noise picked 1e-7).
# "steepest" and "valley" keep fastai's 100 steps from 1e-7.
LR_FINDER_OPTIONS = {"minimum": {"start_lr": 1e-4, "num_steps": 37, "beta": 0.98 ** (100 / 60),
                                 "minimum_floor": 1e-3}}

# ------------------------------------------------------------ averaging options

# SGDR's cycle when asked for by name: 1 + 2 + 4 ... epochs.
SGDR_CYCLE_LEN, SGDR_CYCLE_MULT = 1, 2
# EMA over about 1,000 steps.
EMA_DECAY = 0.999
# SWA from 75% of training at half the peak rate (with a non-cyclical schedule).
SWA_START, SWA_LR = 0.75, 0.5

# ------------------------------------------------------------ recommenders

# 5 epochs of one-cycle at 5e-3 (more epochs overfit MovieLens 100K); EMA was neutral.
# "auto" batch size and decay depend on the model: RECOMMENDER_AUTO.
RECOMMENDER_DEFAULTS = EstimatorDefaults(epochs=5, lr=5e-3, averaging=None, weight_decay="auto")
# Dot-bias: an L2 penalty of 0.05 on a batch's rows instead of decoupled decay (validation
# RMSE 0.9129 vs 0.9168), batch 768 (as 512 over 12 seeds, a third fewer steps).
# Neural CF: batch 256, AdamW decay 0.1, no row penalty.
RECOMMENDER_AUTO = {
    "dot": {"batch_size": 768, "weight_decay": 0.0, "embedding_l2": 0.05},
    "neural": {"batch_size": 256, "weight_decay": 0.1, "embedding_l2": 0.0},
}
# Dot-bias factors (fastai's default); neural CF's dropout 0.5 (0.931 RMSE vs 0.981 at 0).
FACTORS = 50
NEURAL_DROPOUT = 0.5
NEURAL_HIDDEN = (100, 50)

# Implicit feedback: 20 epochs, batch 1024; the sampled softmax with popularity negatives
# (log-Q corrected) and embedding_l2 1e-2 had the best validation recall@10 on both MovieLens
# sets; BPR keeps uniform negatives.
IMPLICIT_DEFAULTS = EstimatorDefaults(epochs=20, lr=5e-3, averaging=None, weight_decay=0.0,
                                      batch_size=1024)
IMPLICIT_AUTO = {
    "bpr": {"embedding_l2": 1e-2, "n_negatives": 4, "negatives": "uniform"},
    "softmax": {"embedding_l2": 1e-2, "n_negatives": 256, "negatives": "popularity"},
}

# Ranking explicit ratings. "auto" is "item_item" on catalogues up to ITEM_ITEM_MAX_ITEMS
# items: EASE's item-item scores from every rating, EASE's from the liked ratings, and the
# predicted rating, each standardised per user and added. Validation
# NDCG@10 +3-20% over validation-tuned EASE on ml-100k and latest-small, random and
# leave-last-out splits, for the rating model's fit plus two inversions (0.4 s on ml-100k
# against the implicit hybrid's 5.5 s). Larger catalogues fall back to "hybrid" (an
# implicit ranker's score + 1.0 x the predicted rating: it tripled validation recall@10
# over ranking by predicted rating).
RANKING = "item_item"
RANKING_FALLBACK = "hybrid"
RANKING_RATING_WEIGHT = 1.0
# EASE's cost: cubic time and quadratic memory in the catalogue (20,000 items: ~1 min on one
# thread, 1.6 GB per float32 copy of the item matrix).
ITEM_ITEM_MAX_ITEMS = 20_000
# EASE's lambda 200, the liked part's weight 1 and the rating's 1 were best on all four
# validation splits (lambda 200 / 400, rating weight 0.5 / 1 / 1.5; the liked part added
# 3-6% NDCG@10 everywhere). "blend" adds the implicit ranker with weight 1 (validation +2% /
# +1% NDCG@10 on the random splits without the liked part, none on ml-100k leave-last-out).
ITEM_ITEM_STRENGTH = 200.0
ITEM_ITEM_RATING_WEIGHT = 1.0
ITEM_ITEM_LIKED_WEIGHT = 1.0
# Liked: from three quarters up the rating scale (4 and 5 of 1-5 stars, 4-5 of 0.5-5; the
# training mean, 3.50 on latest-small, would split its 3.5 stars by the third decimal).
ITEM_ITEM_LIKED_FROM = 0.75
ITEM_ITEM_RANKER_WEIGHT = 1.0
# (ranking_shrinkage, min_support) for "auto", per ranking: shrinking item biases by
# n / (n + 25) and requiring 20 ratings helped the rating ranking, nothing helped the hybrid.
RANKING_AUTO = {"item_item": (0, 0), "blend": (0, 0), "hybrid": (0, 0), "rating": (25, 20)}
# similar_items: each candidate's cosine times n / (n + 25); unshrunk, items with fewer than
# 5 interactions filled the lists.
SIMILARITY_SHRINKAGE = 25

# ------------------------------------------------------------ engineering limits

# User + item rows from which the tables train with sparse gradients and lazy Adam: a dense
# step reads every row (18.9 ms at 267k rows against 1.4 ms lazy; even at 26.7k).
SPARSE_TABLE_MIN_ROWS = 16_384
