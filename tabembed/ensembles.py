"""Plain ensembles of independent fits: average the predictions of fitted estimators.

The classic form, beside the k members in one model (``n_members``): several
seeds of one configuration, or the top configurations of a cross-validated
search, each fitted on all the data. Probabilities are averaged (never
labels or logits), as deep ensembles and TabM do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["average_predictions", "top_configurations"]


def average_predictions(estimators: Sequence, X, *, method: str | None = None) -> np.ndarray:
    """The mean over ``estimators`` of ``predict_proba(X)`` (classifiers) or ``predict(X)``.

    Classifiers must have been fitted on the same classes, in the same order.
    """
    estimators = list(estimators)
    if not estimators:
        raise ValueError("average_predictions needs at least one fitted estimator")
    if method is None:
        method = "predict_proba" if hasattr(estimators[0], "predict_proba") else "predict"
    classes = [getattr(e, "classes_", None) for e in estimators]
    if classes[0] is not None:
        for index, other in enumerate(classes[1:], start=1):
            if other is None or not np.array_equal(other, classes[0]):
                raise ValueError(f"estimator {index} was fitted on classes {other}, estimator 0 "
                                 f"on {classes[0]}; fit every member on the same labels")
    return np.mean([np.asarray(getattr(e, method)(X), dtype=float) for e in estimators], axis=0)


def top_configurations(search, n: int) -> list[dict]:
    """The parameters of the ``n`` best-ranked candidates of a fitted scikit-learn search
    (``GridSearchCV``, ``RandomizedSearchCV``), best first, to refit and average."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n=}")
    results = search.cv_results_
    order = np.argsort(results["rank_test_score"], kind="stable")[:n]
    return [dict(results["params"][i]) for i in order]
