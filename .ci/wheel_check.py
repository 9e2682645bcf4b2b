"""What a user of the built wheel gets, checked in a fresh virtual environment.

Run by .ci/wheel_check.sh from a folder outside the checkout, with an empty home folder,
as ``python wheel_check.py WHEEL CHECKOUT``: the package imports from the environment,
not the checkout; its version, ``py.typed``, shipped data (and nothing else: MovieLens
100K may not be redistributed) and C source are in the wheel; the C kernel compiles
from the installed source; the README's five lines and one example run.
"""

import importlib.metadata
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

SHIPPED = [
    "tabembed/_data/README.md",
    "tabembed/_data/adult/adult.data.gz",
    "tabembed/_data/adult/adult.names",
    "tabembed/_data/adult/adult.test.gz",
    "tabembed/_data/ml-latest-small/README.txt",
    "tabembed/_data/ml-latest-small/movies.csv.gz",
    "tabembed/_data/ml-latest-small/ratings.csv.gz",
]


def check(condition, message: str) -> None:
    if not condition:
        sys.exit(f"wheel-check FAILED: {message}")


def main(wheel: Path, checkout: Path) -> None:
    import tabembed

    package = Path(tabembed.__file__).resolve().parent
    check(checkout not in package.parents, f"tabembed was imported from the checkout: {package}")
    check(Path(sys.prefix).resolve() in package.parents,
          f"tabembed was not imported from the fresh environment {sys.prefix}: {package}")
    version = importlib.metadata.version("tabembed")
    check(tabembed.__version__ == version,
          f"tabembed.__version__ {tabembed.__version__} != installed metadata {version}")
    check(f"-{version}-" in wheel.name, f"wheel {wheel.name} does not carry version {version}")
    check((package / "py.typed").is_file(), "py.typed is missing from the installed package")

    names = zipfile.ZipFile(wheel).namelist()
    data = sorted(n for n in names if n.startswith("tabembed/_data/"))
    check(data == SHIPPED, f"the wheel's data files are {data}, expected {SHIPPED}")
    check(not any("ml-100k" in n or n.endswith(("u.data", "u.item")) for n in names),
          "the wheel carries MovieLens 100K, which may not be redistributed")
    check("tabembed/native/dot_bias.c" in names, "the wheel lacks the C source dot_bias.c")

    # The kernel compiles from the installed source into the empty home's cache.
    from tabembed import native
    from tabembed.native import build

    check(build.SOURCE_FOLDER.resolve() == package / "native",
          f"the C source is read from {build.SOURCE_FOLDER}, not the installed package")
    cache = build.cache_folder()
    check(not cache.exists() or not any(cache.iterdir()), f"the build cache {cache} is not empty")
    started = time.perf_counter()
    reason = native.reason("dot_bias")
    check(reason == "loaded", f"the C kernel did not build from the wheel's source: {reason}")
    print(f"wheel-check: C kernel built from {build.SOURCE_FOLDER} in "
          f"{time.perf_counter() - started:.1f} s")

    from tabembed import datasets

    check(datasets.shipped_data() == package / "_data",
          f"shipped data read from {datasets.shipped_data()}, not the package")
    ratings = datasets.load_movielens("latest-small")
    check(len(ratings) == 100836, f"latest-small has {len(ratings)} ratings, expected 100836")

    readme = Path("README.md").read_text(encoding="utf-8")
    found = re.search(r"## Five lines\s+```python\n(.*?)```", readme, re.S)
    check(found is not None, "README.md has no python block under '## Five lines'")
    started = time.perf_counter()
    namespace: dict = {}
    exec(compile(found.group(1), "README.md (five lines)", "exec"), namespace)
    score = namespace["clf"].score(namespace["test"].drop(columns="income"),
                                   namespace["test"]["income"])
    check(score > 0.8, f"the README's five lines scored {score:.4f} on Adult's test set")
    print(f"wheel-check: README five lines: accuracy {score:.4f} in "
          f"{time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "example.py"], env={**os.environ,
                            "TABEMBED_FAST": "1"}, capture_output=True, text=True)
    print(result.stdout, end="")
    check(result.returncode == 0, f"examples/movielens_recommender.py failed:\n{result.stderr}")
    print(f"wheel-check: examples/movielens_recommender.py (TABEMBED_FAST=1) in "
          f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
