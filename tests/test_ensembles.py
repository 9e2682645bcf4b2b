import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV

from tabembed.ensembles import average_predictions, top_configurations


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 3))
    return X, (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)


def test_average_is_the_mean_of_the_members_probabilities():
    X, y = _data()
    members = [LogisticRegression(C=c).fit(X, y) for c in (0.01, 1.0, 100.0)]
    expected = np.mean([m.predict_proba(X) for m in members], axis=0)
    np.testing.assert_allclose(average_predictions(members, X), expected)
    regressors = [Ridge(alpha=a).fit(X, y) for a in (0.1, 10.0)]
    np.testing.assert_allclose(average_predictions(regressors, X),
                               (regressors[0].predict(X) + regressors[1].predict(X)) / 2)


def test_members_must_share_classes():
    X, y = _data()
    other = LogisticRegression().fit(X, np.where(y == 1, 2, 0))
    with pytest.raises(ValueError, match="same labels"):
        average_predictions([LogisticRegression().fit(X, y), other], X)
    with pytest.raises(ValueError, match="at least one"):
        average_predictions([], X)


def test_top_configurations_are_ranked_best_first():
    X, y = _data()
    search = GridSearchCV(LogisticRegression(), {"C": [1e-4, 1e-2, 1.0]}, cv=3).fit(X, y)
    top = top_configurations(search, 2)
    ranked = sorted(zip(search.cv_results_["mean_test_score"], search.cv_results_["params"]),
                    key=lambda pair: -pair[0])
    assert top == [ranked[0][1], ranked[1][1]]
    assert top[0] == search.best_params_
