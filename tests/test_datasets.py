import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabembed import datasets
from tabembed.datasets import (
    ADULT_COLUMNS,
    ChecksumError,
    load_adult,
    load_movielens,
    load_movielens_items,
    load_movielens_users,
    make_synthetic,
)

# ------------------------------------------------------------------ Adult

def test_adult_shapes_columns_and_labels(adult):
    train, test = adult
    assert train.shape == (32561, 15)
    assert test.shape == (16281, 15)
    assert list(train.columns) == ADULT_COLUMNS == list(test.columns)
    # Banner line skipped, trailing periods removed: both splits share labels.
    assert set(train["income"].dropna()) == {"<=50K", ">50K"}
    assert set(test["income"].dropna()) == {"<=50K", ">50K"}
    assert test["income"].notna().all()
    assert (test["income"] == ">50K").sum() == 3846
    assert (train["income"] == ">50K").sum() == 7841


def test_adult_missing_values_and_dtypes(adult):
    train, test = adult
    for frame in (train, test):
        assert not (frame.astype("string") == "?").any().any()
    assert train["workclass"].isna().sum() == 1836
    assert train["occupation"].isna().sum() == 1843
    assert train["native_country"].isna().sum() == 583
    numeric = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
    for column in ADULT_COLUMNS:
        if column in numeric:
            assert pd.api.types.is_integer_dtype(train[column]), column
        else:
            assert isinstance(train[column].dtype, pd.CategoricalDtype), column
            # Values are stripped of the separator's space.
            assert not train[column].dropna().astype(str).str.startswith(" ").any()
    assert train["age"].iloc[0] == 39 and train["workclass"].iloc[0] == "State-gov"


def test_adult_shipped_copy_matches_shared_original(shared_datasets):
    shipped_train, shipped_test = load_adult()
    original_train, original_test = load_adult(shared_datasets / "adult")
    pd.testing.assert_frame_equal(shipped_train, original_train)
    pd.testing.assert_frame_equal(shipped_test, original_test)


def test_adult_missing_folder_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"adult\.data"):
        load_adult(tmp_path)


# -------------------------------------------------------------- MovieLens

def _run_mku(source: Path, workdir: Path) -> None:
    """Run GroupLens' own mku.sh (with allbut.pl through perl) to build the reference folds."""
    for name in ("u.data", "mku.sh", "allbut.pl"):
        shutil.copy(source / name, workdir / name)
    script = (workdir / "mku.sh").read_text().replace("allbut.pl", "perl allbut.pl")
    script = script.replace("trap `rm -f tmp.$$; exit 1` 1 2 15", "")
    (workdir / "mku.sh").write_text(script)
    subprocess.run(["sh", "mku.sh"], cwd=workdir, check=True, capture_output=True)


@pytest.fixture(scope="module")
def grouplens_folds(shared_datasets, tmp_path_factory):
    if shutil.which("perl") is None:
        pytest.skip("perl is needed to run GroupLens' allbut.pl")
    workdir = tmp_path_factory.mktemp("mku")
    _run_mku(shared_datasets / "ml-100k", workdir)
    return workdir


def _read_fold_file(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None,
                       names=["user", "item", "rating", "timestamp"], dtype="int64")


@pytest.mark.parametrize("fold", ["u1", "u2", "u3", "u4", "u5", "ua", "ub"])
def test_movielens_folds_match_grouplens_scripts(fold, shared_datasets, grouplens_folds):
    train, test = load_movielens("100k", data_home=shared_datasets, fold=fold)
    pd.testing.assert_frame_equal(train, _read_fold_file(grouplens_folds / f"{fold}.base"))
    pd.testing.assert_frame_equal(test, _read_fold_file(grouplens_folds / f"{fold}.test"))


def test_movielens_fold_sizes_and_rules(shared_datasets):
    train, test = load_movielens("100k", data_home=shared_datasets, fold="u1")
    assert train.shape == (80000, 4) and test.shape == (20000, 4)
    assert list(train.columns) == ["user", "item", "rating", "timestamp"]
    full = load_movielens("100k", data_home=shared_datasets)
    # u1 tests on the first 20,000 lines of u.data.
    first = full.iloc[:20000].sort_values(["user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(test, first)
    train, test = load_movielens("100k", data_home=shared_datasets, fold="ua")
    assert train.shape == (90570, 4) and test.shape == (9430, 4)
    assert (test.groupby("user").size() == 10).all()
    assert len(pd.concat([train, test]).drop_duplicates(["user", "item"])) == 100000


def test_movielens_environment_variable(shared_datasets, monkeypatch):
    monkeypatch.setenv("TABEMBED_DATA", str(shared_datasets))
    assert load_movielens("100k").shape == (100000, 4)


def test_movielens_latest_small_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TABEMBED_DATA", str(tmp_path))   # empty: falls back to the shipped copy
    monkeypatch.setattr(datasets, "_cache_root", lambda: tmp_path / "cache")
    ratings = load_movielens("latest-small")
    assert ratings.shape == (100836, 4)
    assert ratings["user"].nunique() == 610
    assert set(np.unique(ratings["rating"])) == set(np.arange(1, 11) / 2)
    items = load_movielens_items("latest-small")
    assert len(items) == 9742 and items.loc[0, "title"] == "Toy Story (1995)"
    assert items.loc[0, "year"] == 1995


def test_movielens_metadata(shared_datasets):
    items = load_movielens_items("100k", data_home=shared_datasets)
    assert len(items) == 1682 and list(items.columns) == ["item", "title", "year", "genres"]
    assert items.loc[0, "genres"] == "Animation|Children's|Comedy"
    users = load_movielens_users("100k", data_home=shared_datasets)
    assert users.shape == (943, 5) and users.loc[0, "zip"] == "85711"


def test_movielens_bad_names(shared_datasets):
    with pytest.raises(ValueError, match="latest-small"):
        load_movielens("1m")
    with pytest.raises(ValueError, match="u1"):
        load_movielens("100k", data_home=shared_datasets, fold="u9")
    with pytest.raises(ValueError, match="only for '100k'"):
        load_movielens("latest-small", fold="u1")


def _zip_of(source: Path, zip_path: Path, corrupt: bool = False) -> None:
    with zipfile.ZipFile(zip_path, "w") as bundle:
        for file in sorted(source.iterdir()):
            data = file.read_bytes()
            if corrupt and file.name == "u.data":
                data = data.replace(b"\t5\t", b"\t4\t", 1)
            bundle.writestr(f"ml-100k/{file.name}", data)


def test_movielens_download_path_with_a_local_url(shared_datasets, tmp_path, monkeypatch):
    zip_path = tmp_path / "ml-100k.zip"
    _zip_of(shared_datasets / "ml-100k", zip_path)
    archive = datasets._MOVIELENS["100k"]
    monkeypatch.setitem(datasets._MOVIELENS, "100k",
                        datasets._Archive(archive.folder, zip_path.as_uri(), archive.files))
    home = tmp_path / "home"
    train, test = load_movielens("100k", data_home=home, fold="u1")
    assert train.shape == (80000, 4) and test.shape == (20000, 4)
    assert (home / "ml-100k" / "u.data").is_file()
    assert [p.name for p in home.iterdir()] == ["ml-100k"]   # no scratch left behind
    digest = hashlib.sha256((home / "ml-100k" / "u.data").read_bytes()).hexdigest()
    assert digest == archive.files["u.data"]


def test_movielens_checksum_mismatch_leaves_nothing(shared_datasets, tmp_path, monkeypatch):
    zip_path = tmp_path / "bad.zip"
    _zip_of(shared_datasets / "ml-100k", zip_path, corrupt=True)
    archive = datasets._MOVIELENS["100k"]
    monkeypatch.setitem(datasets._MOVIELENS, "100k",
                        datasets._Archive(archive.folder, zip_path.as_uri(), archive.files))
    home = tmp_path / "home"
    with pytest.raises(ChecksumError, match=r"u\.data"):
        load_movielens("100k", data_home=home)
    assert list(home.iterdir()) == []


def test_movielens_no_network_names_folder_and_files(tmp_path, monkeypatch):
    archive = datasets._MOVIELENS["100k"]
    missing = (tmp_path / "nowhere.zip").as_uri()
    monkeypatch.setitem(datasets._MOVIELENS, "100k",
                        datasets._Archive(archive.folder, missing, archive.files))
    home = tmp_path / "home"
    with pytest.raises(FileNotFoundError) as error:
        load_movielens("100k", data_home=home)
    message = str(error.value)
    assert "u.data" in message and str(home) in message and "TABEMBED_DATA" in message
    assert list(home.iterdir()) == []


# -------------------------------------------------------------- synthetic

def test_make_synthetic_shapes_and_missing():
    X, y = make_synthetic(5000, cardinalities=(3, 7), n_continuous=2, missing_fraction=0.1)
    assert X.shape == (5000, 4) and y.shape == (5000,)
    assert list(X.columns) == ["cat_0", "cat_1", "num_0", "num_1"]
    assert isinstance(X["cat_1"].dtype, pd.CategoricalDtype)
    assert len(X["cat_1"].cat.categories) == 7
    assert 0.07 < X["num_0"].isna().mean() < 0.13
    assert 0.07 < X["cat_0"].isna().mean() < 0.13


def test_make_synthetic_is_deterministic():
    a = make_synthetic(1000, random_state=3)
    b = make_synthetic(1000, random_state=3)
    c = make_synthetic(1000, random_state=4)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_series_equal(a[1], b[1])
    assert not a[1].equals(c[1])


def test_make_synthetic_signal_is_the_known_answer():
    X, y, truth = make_synthetic(20000, cardinalities=(5, 9), n_continuous=2, noise=0.0,
                                 missing_fraction=0.05, return_truth=True)
    expected = np.zeros(len(X))
    for name, effect in truth["effects"].items():
        values = effect[0].reindex(X[name].astype("string")).fillna(0.0).to_numpy()
        expected += values
    expected += X[["num_0", "num_1"]].fillna(0.0).to_numpy() @ truth["weights"][:, 0]
    np.testing.assert_allclose(y.to_numpy(), expected, atol=1e-9)
    # Category means of y recover the planted effects up to noise.
    X, y, truth = make_synthetic(50000, cardinalities=(4,), n_continuous=0, noise=0.5,
                                 missing_fraction=0.0, return_truth=True)
    means = y.groupby(X["cat_0"], observed=True).mean()
    np.testing.assert_allclose(means.to_numpy(), truth["effects"]["cat_0"][0].to_numpy(),
                               atol=0.05)


def test_make_synthetic_classification():
    _, y, truth = make_synthetic(20000, task="classification", n_classes=3, noise=0.0,
                                 return_truth=True)
    assert set(y.unique()) == {0, 1, 2}
    np.testing.assert_array_equal(y.to_numpy(), truth["signal"].argmax(axis=1))
    _, yb = make_synthetic(1000, task="classification")
    assert set(yb.unique()) == {0, 1}
    with pytest.raises(ValueError, match="task"):
        make_synthetic(10, task="ranking")
