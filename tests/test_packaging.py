"""What the built package carries. Building and installing it is `make wheel-check`
(.ci/wheel_check.sh), run by CI after the tests; these check the pieces it relies on."""

import ast
import subprocess
from pathlib import Path

import pytest

import tabembed
from tabembed import datasets

ROOT = Path(__file__).resolve().parent.parent


def _setup_constant(name: str):
    """A literal assigned at the top of setup.py, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no {name}")


def test_the_wheel_ships_exactly_the_tracked_datasets():
    """Every tracked file of datasets/ (licences included) goes into the wheel, and nothing
    else: an untracked ml-100k/ dropped there must never be packaged."""
    try:
        tracked = subprocess.run(["git", "ls-files", "datasets"], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    shipped = _setup_constant("SHIPPED")
    assert sorted(f"datasets/{name}" for name in shipped) == sorted(tracked)
    assert not any("100k" in name or name.startswith("u.") for name in shipped)
    assert {"README.md", "adult/adult.names", "ml-latest-small/README.txt"} <= set(shipped)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")     # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_comes_from_the_package():
    config = _pyproject()
    assert config["project"]["dynamic"] == ["version"]
    assert "version" not in config["project"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tabembed._version.__version__"}
    from tabembed._version import __version__

    assert tabembed.__version__ == __version__
    assert f"{__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_py_typed_and_c_source_are_package_data():
    config = _pyproject()
    package_data = config["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["tabembed"]
    assert (ROOT / "tabembed" / "py.typed").is_file()
    assert "*.c" in package_data["tabembed.native"]
    assert list((ROOT / "tabembed" / "native").glob("*.c"))


def test_shipped_data_prefers_the_wheels_copy(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "tabembed"
    (package / "_data" / "adult").mkdir(parents=True)
    monkeypatch.setattr(datasets, "_PACKAGE", package)
    assert datasets.shipped_data() == package / "_data"


def test_shipped_data_falls_back_to_the_checkout(tmp_path, monkeypatch):
    package = tmp_path / "checkout" / "tabembed"
    package.mkdir(parents=True)
    (tmp_path / "checkout" / "datasets" / "adult").mkdir(parents=True)
    monkeypatch.setattr(datasets, "_PACKAGE", package)
    assert datasets.shipped_data() == tmp_path / "checkout" / "datasets"


def test_shipped_data_missing_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_PACKAGE", tmp_path / "tabembed")
    with pytest.raises(FileNotFoundError, match=r"_data.*installed wheel.*datasets.*checkout"):
        datasets.shipped_data()
    with pytest.raises(FileNotFoundError, match="data_home"):
        datasets.load_adult()


def test_the_editable_checkout_reads_the_repository_datasets():
    # An editable install has no _data folder: the loaders read datasets/ in place.
    assert datasets.shipped_data() == ROOT / "datasets"


def test_command_line_prints_the_version(capsys):
    from tabembed.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"tabembed {tabembed.__version__}"
