"""Sphinx configuration of tabembed's documentation site (``make docs`` builds it into site/).

Sphinx with numpydoc, because the docstrings are numpydoc written for Sphinx: their
``:class:``/``:func:`` roles become links, and autodoc reads the docstrings at run time,
after the estimators' shared parameter text has been put into them. The guide pages are
Markdown (MyST). The examples run at build time in their fast mode (_ext/run_examples.py);
the notebook runs in a Jupyter kernel (myst-nb).
"""

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
BUILD = ROOT / "site" / ".build"         # scratch space of the build, beside its output
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import tabembed  # noqa: E402

project = "tabembed"
author = "tabembed developers"
copyright = "tabembed developers"
version = release = tabembed.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
    "run_examples",
]

# The notebook's fast mode, and its pictures written outside the source tree.
os.environ["TABEMBED_FAST"] = "1"
os.environ["TABEMBED_OUTPUT"] = str(BUILD / "notebook_output")
Path(os.environ["TABEMBED_OUTPUT"]).mkdir(parents=True, exist_ok=True)

# The notebook lives with the examples; the site shows it executed.
(DOCS / "notebooks").mkdir(exist_ok=True)
shutil.copy2(ROOT / "examples" / "adult_classification.ipynb",
             DOCS / "notebooks" / "adult_classification.ipynb")

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_ext", "_templates"]
templates_path = ["_templates"]

# API reference: one page per public object, members in source order.
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False,
                           "member-order": "bysource"}
autodoc_typehints = "none"          # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
# Progress bars go to stderr, a frame at a time: a page shows the printed lines and tables.
nb_output_stderr = "remove"
nb_merge_streams = True

run_examples_dir = str(ROOT / "examples")
run_examples_skip = {"train_from_parquet.py": "it writes and streams a million rows (see "
                                              "its docstring to run it, also under torchrun)"}

# Command lines keep their "--flags" (no typographic dashes or quotes).
smartquotes = False

html_theme = "pydata_sphinx_theme"
html_title = f"tabembed {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False


def skip_member(app, what, name, obj, skip, options):
    """scikit-learn's metadata-routing setters (``set_fit_request`` ...) are generated
    for every estimator and documented by scikit-learn: left out here."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", skip_member)
