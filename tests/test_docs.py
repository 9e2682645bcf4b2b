"""The documentation site's API reference names every public name (docs/api/*.rst).

Public: ``tabembed.__all__``, each package's ``__all__`` and each top-level module's
``__all__``. Every such name must be listed on its module's page (the page's
``autosummary``), and every page must list only names that exist. ``make docs`` then
builds a page for each from its docstring.
"""

import importlib
import pkgutil
import re
import warnings
from pathlib import Path

import pytest

import tabembed

API = Path(__file__).resolve().parent.parent / "docs" / "api"
# Public modules without a page, and why.
WITHOUT_PAGE = {"tabembed.recommender": "a deprecated alias of tabembed.recommenders"}


def _public_modules() -> list[str]:
    """tabembed's packages and top-level modules that declare ``__all__``."""
    names = []
    for info in pkgutil.iter_modules(tabembed.__path__, "tabembed."):
        if info.name.rpartition(".")[2].startswith("_") or info.name in WITHOUT_PAGE:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            names.append(info.name)
    return sorted(names)


def _listed(page: Path) -> set[str]:
    """The names in a page's autosummary blocks."""
    names, inside = set(), False
    for line in page.read_text().splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
        elif inside and re.fullmatch(r"   \w+", line):
            names.add(line.strip())
        elif inside and line and not line.startswith("   "):
            inside = False
    return names


def test_the_finder_sees_packages_and_modules():
    modules = _public_modules()
    assert {"tabembed.estimators", "tabembed.recommenders", "tabembed.datasets",
            "tabembed.tuning", "tabembed.mlflow"} <= set(modules)


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_name_is_on_its_modules_page(name):
    page = API / f"{name}.rst"
    assert page.is_file(), f"no API page for {name}: add docs/api/{name}.rst and list it in " \
                           "docs/api/index.md"
    module = importlib.import_module(name)
    listed = _listed(page)
    assert sorted(set(module.__all__) - listed) == [], f"missing from docs/api/{name}.rst"
    assert sorted(listed - set(module.__all__)) == [], f"not in {name}.__all__"
    assert name in (API / "index.md").read_text()


def test_every_api_page_lists_names_that_exist_and_is_in_the_index():
    index = (API / "index.md").read_text()
    for page in API.glob("*.rst"):
        module = importlib.import_module(page.stem)
        for name in _listed(page):
            assert hasattr(module, name), f"{page.name} lists {name}, which {page.stem} lacks"
        assert re.search(rf"^{re.escape(page.stem)}$", index, re.M), \
            f"{page.name} is not in docs/api/index.md"


def test_every_top_level_name_is_on_the_tabembed_page():
    text = (API / "tabembed.rst").read_text()
    for name in tabembed.__all__:
        assert f"tabembed.{name}" in text, f"tabembed.{name} missing from docs/api/tabembed.rst"
        if name not in ("__version__", "load"):
            # Documented where it comes from: that page lists it.
            home = next(page for page in API.glob("*.rst") if name in _listed(page))
            assert f"{home.stem}.{name}" in text
