"""A refit that fails at any stage leaves the fitted estimator, and its saved file, as they were.

Every estimator builds everything, trains, and only then replaces its fitted
state (``TrainedEstimator._adopt``); a failure is injected here at each stage
of a refit on other data: the LR finder, an epoch, the hybrid ranker, and the
file write.
"""

import numpy as np
import pandas as pd
import pytest

import tabembed
from tabembed import EmbeddingMLPClassifier, EmbeddingRecommender, ImplicitRecommender
from tabembed.datasets import make_synthetic
from tabembed.training.callbacks import TrainingDivergedError
from tabembed.training.learner import Learner


class InjectedError(Exception):
    pass


def _ratings(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.4)
    frame = pd.DataFrame({"user": [f"u{k}" for k in pairs[:, 0]],
                          "item": [f"i{k}" for k in pairs[:, 1]]})
    return frame, pd.Series(rng.integers(1, 6, len(pairs)).astype(float))


def _fail_on_second_epoch(monkeypatch):
    original, calls = Learner._train_epoch, []

    def second_epoch_fails(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt     # Ctrl-C in the middle of the refit
        return original(self)

    monkeypatch.setattr(Learner, "_train_epoch", second_epoch_fails)


def _inject(stage, monkeypatch):
    if stage == "lr finder":
        monkeypatch.setattr("tabembed.training.learner.range_test",
                            lambda *a, **k: (_ for _ in ()).throw(InjectedError("finder")))
    elif stage == "epoch":
        _fail_on_second_epoch(monkeypatch)
    elif stage == "hybrid ranker":
        monkeypatch.setattr("tabembed.recommenders.hybrid.ImplicitRecommender.fit",
                            lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    elif stage == "item-item":
        monkeypatch.setattr("tabembed.recommenders.item_item.ease_weights",
                            lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))


CASES = [
    (EmbeddingMLPClassifier, "lr finder"), (EmbeddingMLPClassifier, "epoch"),
    (EmbeddingRecommender, "lr finder"), (EmbeddingRecommender, "epoch"),
    (EmbeddingRecommender, "hybrid ranker"), (EmbeddingRecommender, "item-item"),
    (ImplicitRecommender, "lr finder"), (ImplicitRecommender, "epoch"),
]


@pytest.mark.parametrize(("cls", "stage"), CASES)
def test_a_refit_failing_at_any_stage_changes_nothing(cls, stage, monkeypatch):
    if cls is EmbeddingMLPClassifier:
        X, y = make_synthetic(300, task="classification", random_state=0)
        other_X, other_y = make_synthetic(500, task="classification", random_state=1)
        estimator = cls(epochs=3, hidden=(16,), random_state=0).fit(X, y)
    else:
        X, y = _ratings(30, 20, 0)
        other_X, other_y = _ratings(50, 35, 1)      # other users and items: other tables
        options = {"ranking": "hybrid"} if stage == "hybrid ranker" else {}
        estimator = cls(epochs=3, n_factors=4, random_state=0, **options).fit(X, y)
    before = estimator.predict(X)
    lists = None if cls is EmbeddingMLPClassifier else estimator.recommend(["u0", "u3"], k=5)
    state = dict(vars(estimator))
    if stage == "lr finder":
        estimator.set_params(lr="auto")
    _inject(stage, monkeypatch)
    with pytest.raises((InjectedError, KeyboardInterrupt)):
        estimator.fit(other_X, other_y)
    monkeypatch.undo()
    fitted = {k: v for k, v in state.items() if k.endswith("_") or k == "_scorer_cache"}
    assert all(getattr(estimator, k) is v for k, v in fitted.items())
    np.testing.assert_array_equal(estimator.predict(X), before)
    if lists is not None:
        pd.testing.assert_frame_equal(estimator.recommend(["u0", "u3"], k=5), lists)


def test_a_diverging_implicit_refit_leaves_recommend_working():
    """The case reported: a refit on more rows at lr=1e30 raised, and recommend then failed
    with a tensor size mismatch."""
    X, _ = _ratings(30, 20, 0)
    more, _ = _ratings(60, 40, 1)
    model = ImplicitRecommender(epochs=2, n_factors=4, random_state=0).fit(X)
    lists = model.recommend(["u0", "u1"], k=5)
    with pytest.raises(TrainingDivergedError):
        model.set_params(lr=1e30).fit(more)
    pd.testing.assert_frame_equal(model.recommend(["u0", "u1"], k=5), lists)


@pytest.mark.parametrize("cls", [EmbeddingMLPClassifier, EmbeddingRecommender])
def test_a_failed_save_leaves_the_previous_file(cls, tmp_path, monkeypatch):
    if cls is EmbeddingMLPClassifier:
        X, y = make_synthetic(200, task="classification", random_state=0)
        estimator = cls(epochs=2, hidden=(8,), random_state=0).fit(X, y)
    else:
        X, y = _ratings(20, 15, 0)
        estimator = cls(epochs=2, n_factors=4, random_state=0).fit(X, y)
    path = estimator.save(tmp_path / "model.tabembed")
    saved = path.read_bytes()
    estimator.set_params(epochs=3).fit(X, y)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tabembed._io.os.replace", full_disk)
    with pytest.raises(OSError):
        estimator.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == saved
    assert [p.name for p in tmp_path.iterdir()] == ["model.tabembed"]
    np.testing.assert_array_equal(tabembed.load(path).predict(X), tabembed.load(path).predict(X))
