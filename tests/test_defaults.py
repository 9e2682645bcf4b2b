"""The size rule of the MLP's "auto" defaults, as a fit applies it."""

import numpy as np
import pandas as pd
import pytest

from tabembed import EmbeddingMLPRegressor, defaults


def _table(n_rows: int):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=n_rows), "c": rng.choice(["x", "y"], n_rows)})
    return X, X["a"].to_numpy() + (X["c"] == "x")


@pytest.mark.parametrize(("n_rows", "scaling", "scale", "members"), [
    (defaults.SMALL_TABLE_ROWS - 1, "robust", 0.3, 8),
    (defaults.SMALL_TABLE_ROWS, "standard", 3.0, 1),
])
def test_auto_defaults_follow_the_rows_given_to_fit(n_rows, scaling, scale, members):
    X, y = _table(n_rows)
    model = EmbeddingMLPRegressor(epochs=1, lr=1e-3, random_state=0).fit(X, y)
    assert model.preprocessor_.continuous_scaling == scaling
    assert model.model_kwargs_["frequency_init_scale"] == scale
    assert model.model_kwargs_["n_members"] == members
    # The fitted model is itself small or large: a refit reads nothing from the first fit.
    assert model.get_params()["n_members"] == "auto"


def test_explicit_values_override_the_size_rule():
    X, y = _table(300)
    model = EmbeddingMLPRegressor(epochs=1, lr=1e-3, random_state=0, n_members=1,
                                  continuous_scaling="standard").fit(X, y)
    assert model.preprocessor_.continuous_scaling == "standard"
    assert model.model_kwargs_["n_members"] == 1


def test_the_rule_is_one_threshold():
    for rule in (defaults.continuous_scaling, defaults.frequency_init_scale, defaults.n_members):
        assert rule(defaults.SMALL_TABLE_ROWS - 1) != rule(defaults.SMALL_TABLE_ROWS)
