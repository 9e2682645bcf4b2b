"""tabembed.native: the optional C kernels' build, cache and fallback."""

import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from tabembed.native import build

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                    reason="no C compiler on this machine")
needs_kernel = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None or os.environ.get("TABEMBED_NATIVE") == "0",
    reason="no C compiler on this machine, or the kernel turned off (TABEMBED_NATIVE=0)")


@pytest.fixture
def fresh_loader(monkeypatch):
    """``build.load`` as in a new process: nothing loaded or refused yet (and the kernel
    not turned off by the environment the tests run in)."""
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(build, "_reasons", {})
    monkeypatch.delenv("TABEMBED_NATIVE", raising=False)


@needs_compiler
def test_build_compiles_once_then_reuses_the_cached_library(tmp_path, monkeypatch):
    first = build.build("dot_bias", tmp_path)
    assert first.parent == tmp_path and first.name.startswith("dot_bias-")
    assert [p.name for p in tmp_path.iterdir()] == [first.name]     # no scratch file left

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(subprocess, "run", no_compiling)
    assert build.build("dot_bias", tmp_path) == first


def test_a_failing_compiler_is_an_error_and_load_falls_back(tmp_path, monkeypatch,
                                                            fresh_loader):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no 'false' program")
    with pytest.raises(build.NativeBuildError, match="exit status 1"):
        build.build("dot_bias", tmp_path, compiler=false)
    assert list(tmp_path.iterdir()) == []       # the scratch file is removed
    with pytest.raises(build.NativeBuildError, match="no C compiler found"):
        build.build("dot_bias", tmp_path, compiler="no-such-compiler-anywhere")

    monkeypatch.setenv("CC", "no-such-compiler-anywhere")
    monkeypatch.setattr(build, "cache_folder", lambda: tmp_path)
    assert build.load("dot_bias") is None
    assert "no C compiler found" in build.reason("dot_bias")


def test_no_home_folder_means_no_kernel_not_an_error(monkeypatch, fresh_loader):
    from pathlib import Path

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert build.load("dot_bias") is None
    assert "no home folder" in build.reason("dot_bias")


def test_turned_off_by_environment_and_the_model_still_trains(monkeypatch, fresh_loader):
    from tabembed.native import dot_bias as native_dot_bias
    from tabembed.recommenders import EmbeddingRecommender

    monkeypatch.setenv("TABEMBED_NATIVE", "0")
    assert native_dot_bias.library() is None
    assert "TABEMBED_NATIVE=0" in build.reason("dot_bias")
    X, y = _ratings()
    recommender = EmbeddingRecommender(epochs=2, ranking="rating", random_state=0).fit(X, y)
    assert np.isfinite(recommender.predict(X)).all()


@needs_compiler
def test_a_cache_folder_writable_by_anyone_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(build.NativeBuildError, match="writable by anyone"):
        build.build("dot_bias", shared)
    assert list(shared.iterdir()) == []


def _ratings(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, n_users, 3000), rng.integers(0, n_items, 3000)
    taste = rng.normal(size=n_users)[users] * rng.normal(size=n_items)[items]
    rating = np.clip(np.round(3 + taste + rng.normal(0, 0.3, 3000)), 1, 5)
    return pd.DataFrame({"user": users, "item": items}), pd.Series(rating, name="rating")


@needs_kernel
def test_kernel_and_pytorch_path_train_the_same_recommender(monkeypatch):
    """A whole fit (five epochs, one-cycle, weight decay) through each path: the same
    predictions up to float rounding."""
    from tabembed.native import dot_bias as native_dot_bias
    from tabembed.recommenders import EmbeddingRecommender

    assert native_dot_bias.library() is not None, build.reason("dot_bias")
    X, y = _ratings()
    native = EmbeddingRecommender(epochs=5, ranking="rating", random_state=0).fit(X, y)
    monkeypatch.setattr(native_dot_bias, "library", lambda: None)
    plain = EmbeddingRecommender(epochs=5, ranking="rating", random_state=0).fit(X, y)
    np.testing.assert_allclose(native.predict(X), plain.predict(X), rtol=1e-4, atol=1e-4)
    assert np.corrcoef(native.predict(X), y)[0, 1] > 0.5      # it learned the tastes


@needs_kernel
def test_kernel_outputs_float32_whatever_the_default_dtype():
    """The kernel writes floats: its outputs are float32 even where torch's default dtype
    is float64 (tables made before the default changed), and an empty batch takes the
    PyTorch path."""
    import torch

    from tabembed.models import DotBias
    from tabembed.models.dot_bias_terms import dot_bias_terms

    torch.manual_seed(0)
    model = DotBias(n_users=5, n_items=4, n_factors=3)
    tables = (model.user_factors, model.item_factors, model.user_bias, model.item_bias)
    users, items = torch.tensor([1, 2, 4]), torch.tensor([3, 0, 1])
    want = (model.user_factors(users) * model.item_factors(items)).sum(1, keepdim=True) \
        + model.user_bias(users) + model.item_bias(items)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        terms, penalty = dot_bias_terms(*tables, users, items)
    finally:
        torch.set_default_dtype(previous)
    assert type(terms.grad_fn).__name__.startswith("_NativeDotBiasTerms")
    assert terms.dtype == torch.float32 and penalty.dtype == torch.float32
    torch.testing.assert_close(terms, want)
    empty, _ = dot_bias_terms(*tables, users[:0], items[:0])
    assert empty.shape == (0, 1)
