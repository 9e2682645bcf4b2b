"""``augmentation=``: swap noise and mixup as option objects, and the retired
``swap_noise``/``mixup_alpha`` parameters folded into it."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone

import tabembed
from tabembed import EmbeddingMLPClassifier, EmbeddingMLPRegressor, Mixup, SwapNoise
from tabembed.datasets import make_synthetic
from tabembed.models.augmentation import MixupLoss

FAST = {"epochs": 3, "hidden": (16,), "lr": 1e-2, "batch_size": 64, "random_state": 0}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(300, task="classification", random_state=0)


@pytest.mark.parametrize(("augmentation", "rates"), [
    (None, (0.0, 0.0)),
    ("swap_noise", (0.15, 0.0)),
    ("mixup", (0.0, 0.2)),
    (SwapNoise(rate=0.3), (0.3, 0.0)),
    ([SwapNoise(rate=0.1), Mixup(alpha=0.4)], (0.1, 0.4)),
    (("mixup", "swap_noise"), (0.15, 0.2)),
])
def test_each_form_sets_the_networks_noise(data, augmentation, rates):
    X, y = data
    model = EmbeddingMLPClassifier(augmentation=augmentation, **FAST).fit(X, y)
    assert (model.model_kwargs_["swap_noise"], model.model_kwargs_["mixup_alpha"]) == rates
    assert isinstance(model.learner_.loss, MixupLoss) == (rates[1] > 0)


@pytest.mark.parametrize("bad", ["cutmix", SwapNoise, [SwapNoise(), SwapNoise(rate=0.2)], 0.1,
                                 [["mixup"]]])
def test_a_bad_augmentation_fails_at_fit_naming_the_forms(data, bad):
    X, y = data
    with pytest.raises(ValueError, match="augmentation must be None, 'swap_noise', 'mixup'"):
        EmbeddingMLPClassifier(augmentation=bad, **FAST).fit(X, y)


def test_option_objects_check_their_values():
    with pytest.raises(ValueError, match=r"SwapNoise: rate must be a number in \[0, 1\)"):
        SwapNoise(rate=1.5)
    with pytest.raises(ValueError, match="Mixup: alpha must be a finite number >= 0"):
        Mixup(alpha=-1)


def test_retired_swap_noise_and_mixup_alpha_warn_and_train_the_same_model(data):
    X, y = data
    with pytest.warns(FutureWarning, match=r"mixup_alpha, swap_noise is deprecated.*"
                                           r"augmentation=\[SwapNoise\(rate=0.2\), "
                                           r"Mixup\(alpha=0.4\)\]"):
        old = EmbeddingMLPClassifier(swap_noise=0.2, mixup_alpha=0.4, **FAST)
    new = EmbeddingMLPClassifier(augmentation=[SwapNoise(rate=0.2), Mixup(alpha=0.4)], **FAST)
    assert repr(old) == repr(new)
    np.testing.assert_array_equal(old.fit(X, y).predict_proba(X),
                                  new.fit(X, y).predict_proba(X))
    # set_params folds into what is there: mixup off keeps the swap noise.
    with pytest.warns(FutureWarning, match=r"pass augmentation=SwapNoise\(rate=0.2\)"):
        old.set_params(mixup_alpha=0.0)
    assert old.augmentation == SwapNoise(rate=0.2)
    with pytest.warns(FutureWarning, match="pass augmentation=None"):
        old.set_params(swap_noise=0)
    assert old.augmentation is None
    with pytest.warns(FutureWarning, match="no effect"):
        EmbeddingMLPRegressor(swap_noise=0.0)
    with pytest.warns(FutureWarning, match="SwapNoise"):
        assert EmbeddingMLPRegressor(swap_noise=0.1).augmentation == SwapNoise(rate=0.1)


def test_augmentation_round_trips_through_files_and_clone(data, tmp_path):
    X, y = data
    options = [SwapNoise(rate=0.1), Mixup(alpha=0.3)]
    model = EmbeddingMLPClassifier(augmentation=options, **FAST).fit(X, y)
    assert clone(model).augmentation == options
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        loaded = tabembed.load(model.save(tmp_path / "noisy.tabembed"))
    assert loaded.augmentation == options
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
