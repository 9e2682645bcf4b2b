"""tabembed.native: the optional C kernels' build, cache and fallback."""

import os
import shutil
import stat
import subprocess

import numpy as np
import pandas as pd
import pytest

from tabembed.native import build

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                    reason="no C compiler on this machine")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                                reason="libraries load through /proc/self/fd (Linux)")
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


# ------------------------------------------------------------------ a cache no one else can change

@pytest.fixture
def home(tmp_path, monkeypatch, fresh_loader):
    """A fresh home folder (HOME) for the cache, under umask 002 (group-writable files),
    where the shared-library swap was possible."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    previous = os.umask(0o002)
    yield tmp_path / "home"
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@needs_kernel
@needs_proc
def test_the_cache_is_created_private_whatever_the_umask_and_loaded_by_descriptor(home):
    """Under umask 002 the folder was 0775 and the library 0775: another user of the group
    could swap it. Now the folders are 0700, the library 0700, and it is loaded through
    the descriptor that was checked."""
    library = build.load("dot_bias")
    assert library is not None, build.reason("dot_bias")
    assert library._name.startswith(f"{build.PROC_FDS}/")
    for folder in (home / ".cache", home / ".cache" / "tabembed", build.cache_folder()):
        assert _mode(folder) == 0o700, folder
    (built,) = build.cache_folder().iterdir()
    assert _mode(built) == 0o700 and not built.name.startswith(".")


@needs_compiler
@pytest.mark.parametrize("mode", [0o775, 0o777, 0o757], ids=oct)
def test_a_cache_folder_others_can_write_is_refused(home, mode):
    folder = build.cache_folder()
    folder.mkdir(parents=True)
    folder.chmod(mode)
    with pytest.raises(build.NativeBuildError, match=r"writable by its group or by anyone.*chmod"):
        build.build("dot_bias", folder)
    assert list(folder.iterdir()) == []
    assert build.load("dot_bias") is None
    assert "writable by its group or by anyone" in build.reason("dot_bias")


@needs_compiler
def test_a_cache_owned_by_another_user_is_refused(home, monkeypatch):
    folder = build.cache_folder()
    build.build("dot_bias", folder)
    monkeypatch.setattr(build, "_user", lambda: os.getuid() + 1)   # as seen by another user
    with pytest.raises(build.NativeBuildError, match=r"owned by uid .* not by this user"):
        build.build("dot_bias", folder)
    assert build.load("dot_bias") is None


@needs_compiler
@needs_proc
def test_a_cached_library_that_is_a_symlink_or_group_writable_is_refused(home, tmp_path):
    folder = build.cache_folder()
    built = build.build("dot_bias", folder)
    elsewhere = tmp_path / "elsewhere.so"
    elsewhere.write_bytes(built.read_bytes())
    elsewhere.chmod(0o700)
    built.unlink()
    built.symlink_to(elsewhere)
    with pytest.raises(build.NativeBuildError, match="without following a symlink"):
        build.build("dot_bias", folder)
    with pytest.raises(build.NativeBuildError, match="without following a symlink"):
        build.load_trusted(built)
    built.unlink()
    built.write_bytes(elsewhere.read_bytes())
    built.chmod(0o770)
    with pytest.raises(build.NativeBuildError, match="writable by its group"):
        build.load_trusted(built)
    built.chmod(0o700)
    assert build.load_trusted(built) is not None


@needs_compiler
@needs_proc
def test_what_is_checked_is_what_is_loaded(home, monkeypatch):
    """A file swapped in at the path after the check (renameat2(RENAME_EXCHANGE) did it
    in 15 of 200 tries) is never what runs: the checked descriptor is loaded."""
    folder = build.cache_folder()
    built = build.build("dot_bias", folder)
    checked = build._open_library

    def check_then_swap(directory, path, mode=None):
        descriptor = checked(directory, path, mode)
        swapped = path.with_name(".swap")
        swapped.write_bytes(b"not a library: loading this by its path would fail")
        os.replace(swapped, path)
        return descriptor

    monkeypatch.setattr(build, "_open_library", check_then_swap)
    library = build.load_trusted(built)
    assert hasattr(library, "dot_bias_forward")


def test_without_proc_fd_the_library_is_not_loaded(home, monkeypatch):
    monkeypatch.setattr(build, "PROC_FDS", str(home / "no-proc" / "self" / "fd"))
    assert build.load("dot_bias") is None
    assert "not available here" in build.reason("dot_bias")


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
