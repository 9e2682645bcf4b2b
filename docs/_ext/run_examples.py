"""A Sphinx extension: run examples/*.py at build time and write each as a page with its output.

Each script is cut into cells at its ``# %%`` lines (the text after the marker
is the cell's caption) and run cell by cell in one namespace, in the fast mode
the tests use (``TABEMBED_FAST=1``), in a scratch folder. A page shows the
docstring, then per cell its caption, code, printed output and the pictures it
wrote to ``TABEMBED_OUTPUT``. An example that raises fails the build. The pages
go to ``docs/examples/`` (generated, not committed), with an index.

Configuration (conf.py): ``run_examples_dir`` (the scripts), ``run_examples_skip``
(names shown, not run, each with the reason).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)
PAGES = "examples"


def cells(source: str) -> tuple[str, list[tuple[str, str]]]:
    """The module docstring, and ``(caption, code)`` for each cell of ``source``."""
    docstring = ast.get_docstring(ast.parse(source)) or ""
    tree = ast.parse(source)
    first = tree.body[0]
    lines = source.splitlines()
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        lines = lines[first.end_lineno:]      # the docstring is shown as prose, not code
    found, caption, block = [], "", []
    for line in lines:
        if line.startswith("# %%"):
            if "".join(block).strip():
                found.append((caption, "\n".join(block).strip("\n")))
            caption, block = line[4:].strip(), []
        else:
            block.append(line)
    if "".join(block).strip():
        found.append((caption, "\n".join(block).strip("\n")))
    return docstring, found


def heading(docstring: str) -> tuple[str, str]:
    """A docstring's first line (the page's title) and the rest as Markdown: a line
    that starts with ``Run:`` becomes a paragraph of its own with the command as code."""
    title, _, rest = docstring.partition("\n")
    lines = []
    for line in rest.strip().splitlines():
        if line.startswith("Run:") and line[4:].strip():
            command, _, note = line[4:].strip().partition("  ")
            lines += ["", f"Run: `{command.strip()}` {note.strip()}".rstrip(), ""]
        elif line.startswith("Run:"):
            lines += ["", "Run:", ""]      # the commands follow, indented: a code block
        else:
            lines.append(line)
    return title, "\n".join(lines)


def _pictures(folder: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.suffix.lower() in (".png", ".svg", ".jpg")}


def run(script: Path, pages: Path) -> tuple[str, str, float]:
    """Run ``script`` cell by cell; write its page. Returns (name, title, seconds)."""
    docstring, parts = cells(script.read_text())
    title, intro = heading(docstring)
    name = script.stem
    images = pages / "images"
    images.mkdir(parents=True, exist_ok=True)
    body = [f"# {title.strip().rstrip('.')}", "", intro.strip(), "",
            f"Source: `examples/{script.name}`. Run here in its fast mode "
            "(`TABEMBED_FAST=1`): a sample of the data and fewer epochs, so the scores are "
            "lower than a full run's.", ""]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        output = scratch / "output"
        output.mkdir()
        saved = dict(os.environ), Path.cwd(), list(sys.argv)
        os.environ.update({"TABEMBED_FAST": "1", "TABEMBED_OUTPUT": str(output),
                           "MPLBACKEND": "Agg"})
        os.chdir(scratch)
        sys.argv = [str(script)]
        namespace = {"__name__": "__main__", "__file__": str(script)}
        try:
            for index, (caption, code) in enumerate(parts):
                before = _pictures(output)
                printed = io.StringIO()
                try:
                    with contextlib.redirect_stdout(printed), \
                            contextlib.redirect_stderr(io.StringIO()):
                        exec(compile(code, f"{script}:cell {index + 1}", "exec"), namespace)
                except Exception as error:
                    raise ExtensionError(f"{script.name}, cell {index + 1} ({caption!r}) "
                                         f"raised {type(error).__name__}: {error}") from error
                if caption:
                    body += [caption, ""]
                body += ["```python", code, "```", ""]
                if printed.getvalue().strip():
                    body += ["```text", printed.getvalue().rstrip(), "```", ""]
                for picture, stamp in sorted(_pictures(output).items()):
                    if before.get(picture) != stamp:
                        target = images / f"{name}_{picture.name}"
                        shutil.copy2(picture, target)
                        body += [f"![{picture.stem}](images/{target.name})", ""]
        finally:
            os.environ.clear()
            os.environ.update(saved[0])
            os.chdir(saved[1])
            sys.argv = saved[2]
    seconds = time.perf_counter() - started
    (pages / f"{name}.md").write_text("\n".join(body))
    return name, title, seconds


def shown(script: Path, pages: Path, reason: str) -> tuple[str, str, float]:
    """A page with the script's code only (not run: ``reason``)."""
    docstring, parts = cells(script.read_text())
    title, intro = heading(docstring)
    body = [f"# {title.strip().rstrip('.')}", "", intro.strip(), "",
            f"Source: `examples/{script.name}`. Not run when the site is built: {reason}.", ""]
    for caption, code in parts:
        if caption:
            body += [caption, ""]
        body += ["```python", code, "```", ""]
    (pages / f"{script.stem}.md").write_text("\n".join(body))
    return script.stem, title, 0.0


def generate(app) -> None:
    source = Path(app.confdir, app.config.run_examples_dir).resolve()
    pages = Path(app.srcdir) / PAGES
    shutil.rmtree(pages, ignore_errors=True)
    pages.mkdir()
    entries = []
    for script in sorted(source.glob("*.py")):
        reason = app.config.run_examples_skip.get(script.name)
        entry = shown(script, pages, reason) if reason else run(script, pages)
        logger.info(f"example {script.name}: {entry[2]:.1f} s")
        entries.append(entry)
    index = ["# Examples", "",
             "Each example is a script in `examples/`, cut into cells at its `# %%` lines. "
             "The pages below were produced by running them when this site was built, in "
             "their fast mode. The notebook form of the Adult example runs in a Jupyter "
             "kernel: [](../notebooks/adult_classification.ipynb).", "",
             "```{toctree}", ":maxdepth: 1", "", *[name for name, _, _ in entries],
             "../notebooks/adult_classification", "```", ""]
    (pages / "index.md").write_text("\n".join(index))


def setup(app):
    app.add_config_value("run_examples_dir", "../examples", "env")
    app.add_config_value("run_examples_skip", {}, "env")
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
