"""Dataset loaders: UCI Adult, MovieLens 100K and latest-small, and a synthetic generator.

Adult and MovieLens latest-small ship with tabembed: in a checkout they are read from
the repository's ``datasets/``, and an installed wheel carries a copy of that folder
(licences included) as ``tabembed/_data`` (:func:`shipped_data` says which is used).
MovieLens 100K may not be redistributed, so it is looked for, in order, in
``data_home``, in the folder named by the ``TABEMBED_DATA`` environment
variable, and in ``~/.cache/tabembed``; if it is in none of them, the official
GroupLens archive is downloaded into the cache, its files are checked against
their SHA-256 digests, and the folder is moved into place atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ADULT_COLUMNS",
    "load_adult",
    "load_movielens",
    "load_movielens_items",
    "load_movielens_users",
    "make_synthetic",
    "shipped_data",
]

_PACKAGE = Path(__file__).resolve().parent


def shipped_data() -> Path:
    """The folder holding the shipped ``adult/`` and ``ml-latest-small/`` folders.

    An installed wheel's copy (``tabembed/_data``, written by the build) where there is
    one, otherwise the checkout's ``datasets/`` (an editable install, or a clone on
    ``sys.path``).
    """
    folder = _shipped_folder()
    if folder is None:
        raise FileNotFoundError(
            f"the shipped datasets are neither in {_PACKAGE / '_data'} (an installed wheel) "
            f"nor in {_PACKAGE.parent / 'datasets'} (a checkout); reinstall tabembed from a "
            "wheel or an sdist, or pass data_home= pointing at a folder with the files")
    return folder


def _shipped_folder() -> Path | None:
    for folder in (_PACKAGE / "_data", _PACKAGE.parent / "datasets"):
        if (folder / "adult").is_dir():
            return folder
    return None


ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
]
_ADULT_NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss",
                  "hours_per_week"]


def _first_existing(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def load_adult(data_home: str | os.PathLike | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load UCI Adult as ``(train, test)`` DataFrames of shapes (32561, 15) and (16281, 15).

    ``?`` becomes missing, the test file's banner line is skipped and its
    labels lose their trailing period, so both splits use ``<=50K``/``>50K``.
    Discrete columns are ``category``, numbers ``int64``.

    Parameters
    ----------
    data_home : path, optional
        A folder holding ``adult.data``/``adult.test`` (plain or ``.gz``), or
        an ``adult/`` sub-folder with them. Defaults to the shipped copy.
    """
    folder = Path(data_home) if data_home is not None else shipped_data() / "adult"
    if not (folder / "adult.data").exists() and (folder / "adult").is_dir():
        folder = folder / "adult"
    frames = []
    for split in ("data", "test"):
        path = _first_existing(folder, [f"adult.{split}", f"adult.{split}.gz"])
        if path is None:
            raise FileNotFoundError(
                f"adult.{split} (or adult.{split}.gz) not found in {folder}; "
                "pass data_home= pointing at a folder with the UCI Adult files."
            )
        frame = pd.read_csv(
            path, header=None, names=ADULT_COLUMNS, sep=",", skipinitialspace=True,
            na_values=["?"], skiprows=1 if split == "test" else 0, comment="|",
            skip_blank_lines=True, dtype={c: "int64" for c in _ADULT_NUMERIC},
        )
        frame["income"] = frame["income"].str.rstrip(".")
        frames.append(frame)
    train, test = frames
    for column in ADULT_COLUMNS:
        if column in _ADULT_NUMERIC:
            continue
        # One category set for both splits, so codes agree across them.
        categories = sorted(set(train[column].dropna()) | set(test[column].dropna()))
        for frame in (train, test):
            frame[column] = pd.Categorical(frame[column], categories=categories)
    return train, test


# ---------------------------------------------------------------- MovieLens

@dataclass(frozen=True)
class _Archive:
    folder: str                 # folder name inside the zip and in the cache
    url: str
    files: dict[str, str]       # file name -> SHA-256 of the official file


_MOVIELENS = {
    "100k": _Archive(
        folder="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        files={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
        },
    ),
    "latest-small": _Archive(
        folder="ml-latest-small",
        url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        files={
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        },
    ),
}
_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


class ChecksumError(OSError):
    """A downloaded file does not match its published SHA-256 digest."""


def _check_name(name: str) -> _Archive:
    if name not in _MOVIELENS:
        raise ValueError(f"unknown MovieLens dataset {name!r}; valid names: {sorted(_MOVIELENS)}")
    return _MOVIELENS[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _holds(folder: Path, archive: _Archive) -> bool:
    return all(
        _first_existing(folder, [f, f + ".gz"]) is not None for f in archive.files
    )


def _search_folders(archive: _Archive, data_home) -> list[Path]:
    roots = []
    if data_home is not None:
        roots.append(Path(data_home).expanduser())
    elif os.environ.get("TABEMBED_DATA"):
        roots.append(Path(os.environ["TABEMBED_DATA"]).expanduser())
    roots.append(_cache_root())
    if data_home is None and _shipped_folder() is not None:
        roots.append(_shipped_folder())
    folders = []
    for root in roots:
        folders += [root / archive.folder, root]
    return folders


def _cache_root() -> Path:
    return Path.home() / ".cache" / "tabembed"


def _download(archive: _Archive, destination_root: Path) -> Path:
    """Fetch the archive, verify every file we read, and move its folder into place atomically."""
    destination_root.mkdir(parents=True, exist_ok=True)
    target = destination_root / archive.folder
    with tempfile.TemporaryDirectory(dir=destination_root, prefix=".download-") as scratch:
        zip_path = Path(scratch) / "archive.zip"
        try:
            with urllib.request.urlopen(archive.url, timeout=60) as response, \
                    open(zip_path, "wb") as handle:
                shutil.copyfileobj(response, handle)
        except (urllib.error.URLError, OSError) as error:
            raise FileNotFoundError(
                f"MovieLens files {sorted(archive.files)} were not found and could not be "
                f"downloaded from {archive.url} ({error}). Put the unzipped '{archive.folder}' "
                f"folder in {destination_root}, or point data_home= or the TABEMBED_DATA "
                "environment variable at the folder that holds it."
            ) from error
        unpacked = Path(scratch) / "unpacked"
        try:
            with zipfile.ZipFile(zip_path) as bundle:
                bundle.extractall(unpacked)
        except zipfile.BadZipFile as error:
            raise ChecksumError(f"{archive.url} is not a valid zip archive: {error}") from error
        folder = unpacked / archive.folder
        for name, expected in archive.files.items():
            found = _sha256(folder / name) if (folder / name).is_file() else "missing"
            if found != expected:
                raise ChecksumError(
                    f"{archive.folder}/{name} from {archive.url} has SHA-256 {found}, "
                    f"expected {expected}; the download is corrupt and was discarded."
                )
        if not target.exists():
            os.replace(folder, target)   # atomic: the folder appears whole or not at all
    return target


def _locate(name: str, data_home) -> Path:
    archive = _check_name(name)
    for folder in _search_folders(archive, data_home):
        if folder.is_dir() and _holds(folder, archive):
            return folder
    root = Path(data_home).expanduser() if data_home is not None else (
        Path(os.environ["TABEMBED_DATA"]).expanduser() if os.environ.get("TABEMBED_DATA")
        else _cache_root()
    )
    return _download(archive, root)


def _read(folder: Path, name: str, **kwargs) -> pd.DataFrame:
    path = _first_existing(folder, [name, name + ".gz"])
    return pd.read_csv(path, **kwargs)


def _read_100k_ratings(folder: Path) -> pd.DataFrame:
    return _read(folder, "u.data", sep="\t", header=None,
                 names=["user", "item", "rating", "timestamp"], dtype="int64")


def _split_fold(ratings: pd.DataFrame, fold: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild GroupLens' canonical splits, following ``mku.sh`` and ``allbut.pl``."""
    n = len(ratings)
    if fold in ("ua", "ub"):
        # allbut.pl: in file order, a user's ratings number start..stop go to test.
        start, stop = (1, 10) if fold == "ua" else (11, 20)
        rank = ratings.groupby("user").cumcount().to_numpy() + 1
        in_test = (rank >= start) & (rank <= stop)
        in_test &= np.cumsum(in_test) <= 100000     # allbut's max_test argument
    else:
        i = int(fold[1])
        in_test = np.zeros(n, dtype=bool)
        in_test[(i - 1) * 20000: i * 20000] = True
    def sort(frame):
        return frame.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    return sort(ratings[~in_test]), sort(ratings[in_test])


def load_movielens(name: str = "100k", data_home=None, fold: str | None = None):
    """Load MovieLens ratings as a DataFrame with columns ``user, item, rating, timestamp``.

    Parameters
    ----------
    name : {"100k", "latest-small"}
    data_home : path, optional
        Folder holding the unzipped ``ml-100k``/``ml-latest-small`` folder (or
        its files directly). Defaults to ``$TABEMBED_DATA``, then
        ``~/.cache/tabembed``; latest-small also falls back to the shipped copy.
    fold : {"u1", ..., "u5", "ua", "ub"}, optional
        For 100K only: return ``(train, test)`` exactly as GroupLens' ``mku.sh``
        builds them (u1-u5: 80,000/20,000; ua/ub: 10 test ratings per user).
    """
    folder = _locate(name, data_home)
    if name == "100k":
        ratings = _read_100k_ratings(folder)
    else:
        ratings = _read(folder, "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item"}
        )
        ratings = ratings.astype({"user": "int64", "item": "int64", "rating": "float64",
                                  "timestamp": "int64"})
    if fold is None:
        return ratings
    if name != "100k" or fold not in _FOLDS:
        raise ValueError(
            f"fold {fold!r} is not valid for {name!r}; canonical folds exist only for '100k': "
            f"{list(_FOLDS)}"
        )
    return _split_fold(ratings, fold)


def load_movielens_items(name: str = "100k", data_home=None) -> pd.DataFrame:
    """Item metadata: ``item, title, year, genres`` (genres joined by ``|``)."""
    folder = _locate(name, data_home)
    if name == "latest-small":
        items = _read(folder, "movies.csv").rename(columns={"movieId": "item"})
        titles = items["title"].str.strip()
    else:
        genre_names = _read(folder, "u.genre", sep="|", header=None, names=["genre", "id"],
                            encoding="latin-1").dropna()["genre"].tolist()
        raw = _read(folder, "u.item", sep="|", header=None, encoding="latin-1",
                    names=["item", "title", "release", "video", "url", *genre_names])
        flags = raw[genre_names].to_numpy(dtype=bool)
        names = np.array(genre_names, dtype=object)
        genres = ["|".join(names[row]) or "(no genres listed)" for row in flags]
        items = pd.DataFrame({"item": raw["item"], "title": raw["title"], "genres": genres})
        titles = items["title"].astype("string").str.strip()
    year = titles.str.extract(r"\((\d{4})\)\s*$")[0]
    items["year"] = pd.to_numeric(year, errors="coerce").astype("Int64")
    items["title"] = titles
    return items[["item", "title", "year", "genres"]]


def load_movielens_users(name: str = "100k", data_home=None) -> pd.DataFrame:
    """User metadata of MovieLens 100K: ``user, age, gender, occupation, zip``."""
    if name != "100k":
        raise ValueError(f"user metadata exists only for '100k', not {name!r}")
    folder = _locate(name, data_home)
    users = _read(folder, "u.user", sep="|", header=None,
                  names=["user", "age", "gender", "occupation", "zip"],
                  dtype={"zip": "string"})
    return users.astype({"gender": "category", "occupation": "category"})


# ---------------------------------------------------------------- synthetic

def make_synthetic(
    n_rows: int = 10_000,
    *,
    cardinalities=(10, 50, 200),
    n_continuous: int = 3,
    task: str = "regression",
    n_classes: int = 2,
    missing_fraction: float = 0.02,
    noise: float = 0.1,
    effect_scale: float = 1.0,
    random_state: int | None = 0,
    return_truth: bool = False,
):
    """A table whose target comes from known per-category effects and linear continuous terms.

    ``signal = sum_j effect_j[category_j] + continuous @ weights``. Missing
    categories contribute 0 and missing continuous values contribute their
    mean (0). Regression: ``y = signal + noise * N(0, 1)``. Classification:
    the class is the argmax of per-class signals plus Gumbel noise scaled by
    ``noise`` (so ``noise=0`` is deterministic). Vectorised: 10M rows take seconds.

    Returns ``(X, y)``, and a ``truth`` dict (``effects``, ``weights``,
    ``signal``) when ``return_truth`` is true.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task=}")
    if n_rows < 1:
        raise ValueError(f"n_rows must be positive, got {n_rows=}")
    if task == "classification" and n_classes < 2:
        raise ValueError(f"classification needs n_classes >= 2, got {n_classes=}")
    rng = np.random.default_rng(random_state)
    n_outputs = 1 if task == "regression" or n_classes == 2 else n_classes
    columns, effects = {}, {}
    signal = np.zeros((n_rows, n_outputs))
    for j, cardinality in enumerate(cardinalities):
        name = f"cat_{j}"
        codes = rng.integers(0, cardinality, size=n_rows)
        effect = rng.normal(0.0, effect_scale, size=(cardinality, n_outputs))
        signal += effect[codes]
        missing = rng.random(n_rows) < missing_fraction
        signal[missing] -= effect[codes[missing]]
        codes[missing] = -1
        categories = pd.Index([f"{name}_{k}" for k in range(cardinality)], dtype="string")
        columns[name] = pd.Categorical.from_codes(codes, categories=categories)
        effects[name] = pd.DataFrame(effect, index=categories)
    weights = rng.normal(0.0, effect_scale, size=(n_continuous, n_outputs))
    for k in range(n_continuous):
        values = rng.normal(0.0, 1.0, size=n_rows)
        values[rng.random(n_rows) < missing_fraction] = np.nan
        # A missing value contributes the column mean (0) to the signal.
        signal += np.nan_to_num(values)[:, None] * weights[k]
        columns[f"num_{k}"] = values
    X = pd.DataFrame(columns)
    if task == "regression":
        y = pd.Series(signal[:, 0] + noise * rng.normal(size=n_rows), name="target")
    else:
        logits = np.c_[np.zeros(n_rows), signal] if n_outputs == 1 else signal
        gumbel = rng.gumbel(size=logits.shape) if noise > 0 else 0.0
        y = pd.Series((logits + noise * gumbel).argmax(axis=1), name="target")
    if not return_truth:
        return X, y
    return X, y, {"effects": effects, "weights": weights, "signal": signal}
