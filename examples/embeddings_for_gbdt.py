"""Entity embeddings as features for gradient boosting, inside one scikit-learn Pipeline.

EntityEmbeddingTransformer trains an MLP on (X, y), then replaces each
categorical column by its learned vector. HistGradientBoostingClassifier then
trains on the embeddings; we compare it with the same booster on raw columns.
Run: python examples/embeddings_for_gbdt.py   (TABEMBED_FAST=1 for a quick smoke run)
"""

import os

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from tabembed import EntityEmbeddingTransformer
from tabembed.datasets import load_adult

FAST = os.environ.get("TABEMBED_FAST") == "1"

train, test = load_adult()
if FAST:
    train, test = train.sample(3000, random_state=0), test.sample(2000, random_state=0)
X_train, y_train = train.drop(columns="income"), train["income"]
X_test, y_test = test.drop(columns="income"), test["income"]
iterations = 30 if FAST else 200

# %% Raw columns: the booster handles pandas categories natively.
raw = HistGradientBoostingClassifier(max_iter=iterations, categorical_features="from_dtype",
                                     random_state=0)
raw.fit(X_train, y_train)
raw_auc = roc_auc_score(y_test == ">50K", raw.predict_proba(X_test)[:, 1])

# %% Learned embeddings feeding the same booster.
pipeline = make_pipeline(
    EntityEmbeddingTransformer(epochs=2 if FAST else 8, random_state=0),
    HistGradientBoostingClassifier(max_iter=iterations, random_state=0),
)
pipeline.fit(X_train, y_train)
embedded_auc = roc_auc_score(y_test == ">50K", pipeline.predict_proba(X_test)[:, 1])
features = pipeline[0].get_feature_names_out()
print(f"booster on raw columns : AUC {raw_auc:.4f}")
print(f"booster on embeddings  : AUC {embedded_auc:.4f} ({len(features)} features, e.g. "
      f"{', '.join(features[:3])})")
