"""Build hooks only; the project's metadata and settings are in pyproject.toml.

The shipped datasets live at the top of the repository (``datasets/``, with their
licences). A built wheel carries a copy of them as ``tabembed/_data/``, so that
``tabembed.datasets.load_adult()`` works from an installed wheel; the sdist carries
them as ``datasets/`` so that a wheel built from it does too. Only the files named
here are copied: whatever else lies in ``datasets/`` (MovieLens 100K may not be
redistributed) never reaches a package.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
SHIPPED = (
    "README.md",
    "adult/adult.data.gz",
    "adult/adult.test.gz",
    "adult/adult.names",
    "ml-latest-small/README.txt",
    "ml-latest-small/movies.csv.gz",
    "ml-latest-small/ratings.csv.gz",
)


class BuildWithData(build_py):
    """build_py, then the shipped datasets into the package's ``_data`` folder."""

    def run(self):
        super().run()
        # An editable install reads the checkout's datasets/ in place.
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            source = ROOT / "datasets" / name
            if not source.is_file():
                raise FileNotFoundError(f"shipped dataset file {source} is missing")
            target = Path(self.build_lib) / "tabembed" / "_data" / name
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))


class SdistWithData(sdist):
    """sdist, with the shipped datasets and the changelog."""

    def make_distribution(self):
        self.filelist.extend(["CHANGELOG.md", *(f"datasets/{name}" for name in SHIPPED)])
        super().make_distribution()


setup(cmdclass={"build_py": BuildWithData, "sdist": SdistWithData})
