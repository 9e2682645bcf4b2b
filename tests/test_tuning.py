"""tabembed.tuning: Optuna search spaces, the pruning callback and tune() (optional extra)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from tabembed import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EmbeddingRecommender,
    ImplicitRecommender,
)
from tabembed.datasets import make_synthetic

optuna = pytest.importorskip("optuna")

from tabembed.tuning import OptunaPruning, search_space, tune  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return make_synthetic(800, cardinalities=(6, 12), n_continuous=2, task="classification",
                          random_state=0)


def _ratings(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    users, items = rng.normal(0, 1, (n_users, 2)), rng.normal(0, 1, (n_items, 2))
    pairs = np.argwhere(rng.random((n_users, n_items)) < 0.5)
    u, i = pairs[:, 0], pairs[:, 1]
    rating = 3 + (users[u] * items[i]).sum(1) + rng.normal(0, 0.1, len(u))
    return (pd.DataFrame({"user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i]}),
            pd.Series(rating, name="rating"))


def test_a_three_trial_study_prunes_the_bad_trial_and_refits_the_best(table):
    X, y = table
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0))
    # The same good rate twice, a hopeless one between: the median rule must stop it.
    for lr in (1e-2, 1e-7, 1e-2):
        study.enqueue_trial({"lr": lr})

    def space(trial):
        return {"lr": trial.suggest_float("lr", 1e-7, 1e-1, log=True)}

    estimator = EmbeddingMLPClassifier(epochs=4, random_state=0)
    best, study = tune(estimator, X, y, n_trials=3, search_space=space, study=study)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    pruned = study.trials[1]
    # Pruned early (at the first epoch, 25% of 4 epochs), its values the negated loss.
    assert max(pruned.intermediate_values) == 25
    assert all(v < 0 for v in pruned.intermediate_values.values())
    assert study.best_params == {"lr": 1e-2}
    assert best.lr == 1e-2 and best.n_train_rows_ == len(X)       # refitted on every row
    assert best.score(X, y) > 0.6
    assert estimator.get_params()["lr"] == "auto"      # the starting point is untouched


@pytest.mark.parametrize("make, data", [
    (lambda: EmbeddingMLPClassifier(random_state=0), "table"),
    (lambda: EmbeddingMLPRegressor(random_state=0), "regression"),
    (lambda: EmbeddingRecommender(ranking="rating", random_state=0), "ratings"),
    (lambda: ImplicitRecommender(random_state=0), "interactions"),
])
def test_default_search_spaces_give_fits_that_work(make, data, table):
    if data == "table":
        X, y = table
    elif data == "regression":
        X, y = make_synthetic(600, cardinalities=(6,), n_continuous=2, random_state=0)
    else:
        X, y = _ratings()
        if data == "interactions":
            y = None
    best, study = tune(make(), X, y, n_trials=3, random_state=0)
    assert len(study.trials) == 3
    assert all(np.isfinite(t.value) for t in study.trials if t.state.name == "COMPLETE")
    # The refit used the best trial's parameters, decoded into the estimator's.
    decoded = search_space(best)(optuna.trial.FixedTrial(study.best_params))
    assert {k: best.get_params()[k] for k in decoded} == decoded
    assert np.isfinite(best.predict(X.iloc[:20])).all() if data != "table" else \
        set(best.predict(X.iloc[:20])) <= set(y)


def test_cross_validation_scores_the_mean_of_the_folds(table):
    X, y = table

    def space(trial):
        return {"dropout": trial.suggest_float("dropout", 0.0, 0.5)}

    best, study = tune(EmbeddingMLPClassifier(epochs=2, lr=1e-2, random_state=0), X, y,
                       cv=2, n_trials=2, search_space=space, refit=False)
    assert best is None
    for trial in study.trials:
        # One intermediate value per fold: the running mean of the fold scores.
        assert sorted(trial.intermediate_values) == [0, 1]
        assert trial.value == pytest.approx(trial.intermediate_values[1])


def test_the_pruning_callback_reports_every_epoch_of_the_history(table):
    X, y = table
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    classifier = EmbeddingMLPClassifier(epochs=3, lr=1e-2, random_state=0)
    classifier.fit(X.iloc[200:], y.iloc[200:], eval_set=(X.iloc[:200], y.iloc[:200]),
                   callbacks=[OptunaPruning(trial, "valid_loss")])
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {
        epoch: pytest.approx(loss) for epoch, loss in
        zip(classifier.history_["epoch"], classifier.history_["valid_loss"], strict=True)}
    # AUC is better higher; this study minimises: the values are negated.
    trial = study.ask()
    classifier.fit(X.iloc[200:], y.iloc[200:], eval_set=(X.iloc[:200], y.iloc[:200]),
                   callbacks=[OptunaPruning(trial, "auc")])
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    assert reported[3] == pytest.approx(-classifier.history_["auc"].iloc[-1])


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruned_fit_leaves_no_half_fitted_estimator(table):
    X, y = table
    study = optuna.create_study(pruner=AlwaysPrune())
    fresh = EmbeddingMLPClassifier(epochs=3, lr=1e-2, random_state=0)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        fresh.fit(X, y, eval_set=(X, y), callbacks=[OptunaPruning(study.ask())])
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    fitted = EmbeddingMLPClassifier(epochs=2, lr=1e-2, random_state=0).fit(X, y)
    before = fitted.predict_proba(X)
    with pytest.raises(optuna.TrialPruned):
        fitted.fit(X, y, eval_set=(X, y), callbacks=[OptunaPruning(study.ask())])
    np.testing.assert_array_equal(fitted.predict_proba(X), before)


def test_bad_arguments_are_refused(table):
    X, y = table
    estimator = EmbeddingMLPClassifier()
    with pytest.raises(ValueError, match="give n_trials, timeout or both"):
        tune(estimator, X, y, n_trials=None)
    with pytest.raises(TypeError, match="rows in memory"):
        tune(estimator, "data/", "target")
    with pytest.raises(ValueError, match="direction='maximize'"):
        tune(estimator, X, y, study=optuna.create_study(direction="minimize"))
    with pytest.raises(TypeError, match="no default search space for str"):
        search_space("model")
    with pytest.raises(KeyError, match="pass validation data"):
        EmbeddingMLPClassifier(epochs=1).fit(
            X, y, callbacks=[OptunaPruning(optuna.create_study().ask())])
