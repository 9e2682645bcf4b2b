"""``fit(X, y, X_unlabeled=...)``: denoising pretraining on labelled and unlabeled rows."""

import numpy as np
import pytest

from tabembed import EmbeddingMLPClassifier, EmbeddingMLPRegressor
from tabembed.datasets import make_synthetic


@pytest.fixture(scope="module")
def regression():
    X, y = make_synthetic(1400, task="regression", random_state=0)
    return X.iloc[:400], y.iloc[:400], X.iloc[400:], y.iloc[400:]


def test_pretraining_on_unlabeled_rows_changes_the_network_and_predicts_well(regression):
    X, y, X_test, y_test = regression
    plain = EmbeddingMLPRegressor(random_state=0).fit(X, y)
    pretrained = EmbeddingMLPRegressor(random_state=0).fit(X, y, X_unlabeled=X_test)
    for (name, ours), theirs in zip(pretrained.model_.state_dict().items(),
                                    plain.model_.state_dict().values(), strict=True):
        if ours.is_floating_point() and "body" in name:
            assert not torch_equal(ours, theirs), name
    # y is a known function of X: 400 labelled rows and 1,000 unlabeled ones learn it.
    assert pretrained.score(X_test, y_test) > 0.7
    # The encoding is the labelled rows' own: the same preprocessor as without them.
    assert pretrained.preprocessor_.to_dict() == plain.preprocessor_.to_dict()
    assert pretrained.n_train_rows_ == plain.n_train_rows_


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_pretraining_works_with_cross_fitting(regression):
    X, y, X_test, y_test = regression
    model = EmbeddingMLPRegressor(n_folds=2, epochs=4, random_state=0).fit(
        X, y, X_unlabeled=X_test)
    assert len(model.members_) == 2
    assert model.score(X_test, y_test) > 0.5


def test_unlabeled_rows_must_have_the_training_columns():
    X, y = make_synthetic(200, task="classification", random_state=0)
    model = EmbeddingMLPClassifier(epochs=1, random_state=0)
    missing = X.columns[0]
    with pytest.raises(ValueError, match=str(missing)):
        model.fit(X, y, X_unlabeled=X.drop(columns=missing))
    assert not hasattr(model, "learner_")
    with pytest.raises(ValueError, match=r"X_unlabeled .* not with .* warm_start"):
        EmbeddingMLPClassifier(warm_start=True).fit(X, y, X_unlabeled=X)
    # The caller's frames are left as they were.
    before = X.copy()
    EmbeddingMLPClassifier(epochs=1, random_state=0).fit(X, y, X_unlabeled=X.iloc[:50])
    assert X.equals(before)
    assert np.isfinite(model.set_params(epochs=1).fit(X, y).predict_proba(X)).all()
