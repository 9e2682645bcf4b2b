"""bench/run_all.py updates bench/RESULTS.md in place: its own blocks only."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def block(run_all, key, contents):
    return f"{run_all.BEGIN.format(key=key)}\n{contents}\n{run_all.END.format(key=key)}"


def test_merge_replaces_blocks_and_keeps_hand_written_text(run_all):
    existing = "\n".join([
        "# Benchmark results", "", block(run_all, "header", "old header"), "",
        "## Speed", "", "Command and machine, by hand.", "",
        block(run_all, "speed.py DATA_HOME", "| old | table |"), "",
        "Reading: written by hand about the old table.", "",
        "### Seventh round (kept for the record)", "", "| older | table |", ""])
    merged = run_all.merge(existing, {
        "header": ("", "new header"),
        "speed.py DATA_HOME": ("Speed", "| new | table |"),
        "gpu.py DATA_HOME": ("GPU", "Not measured.")})
    assert "old header" not in merged and "new header" in merged
    assert "| old | table |" not in merged and "| new | table |" in merged
    for kept in ("Command and machine, by hand.", "Reading: written by hand about the old table.",
                 "### Seventh round (kept for the record)", "| older | table |"):
        assert kept in merged
    # The new table sits where the old one was, before the reading that follows it.
    assert merged.index("| new | table |") < merged.index("Reading: written by hand")
    # A script without a block gets a section at the end.
    assert merged.rstrip().endswith(block(run_all, "gpu.py DATA_HOME", "Not measured."))
    assert "## GPU" in merged
    # Nothing to update: the file is unchanged, byte for byte.
    assert run_all.merge(existing, {}) == existing
    # Updating again replaces, never duplicates.
    again = run_all.merge(merged, {"gpu.py DATA_HOME": ("GPU", "Measured.")})
    assert again.count("## GPU") == 1 and "Not measured." not in again


def test_merge_puts_a_new_header_after_the_title(run_all):
    merged = run_all.merge("# Benchmark results\n\nBy hand.\n", {"header": ("", "Last run.")})
    assert merged.startswith("# Benchmark results\n\n" + block(run_all, "header", "Last run."))
    assert merged.rstrip().endswith("By hand.")


def test_merge_refuses_a_block_written_twice(run_all):
    twice = "\n".join([block(run_all, "threads.py", "a"), block(run_all, "threads.py", "b")])
    with pytest.raises(ValueError, match=r"threads\.py"):
        run_all.merge(twice, {"threads.py": ("Threads", "c")})


def test_merge_keeps_backslashes_as_written(run_all):
    merged = run_all.merge(block(run_all, "k", "old"), {"k": ("", r"C:\\new \1 \g<0>")})
    assert r"C:\\new \1 \g<0>" in merged


def test_results_file_has_one_block_per_benchmark(run_all):
    """The shipped RESULTS.md: `make bench` finds every script's block exactly once, so it
    replaces them in place and appends nothing."""
    text = (BENCH / "RESULTS.md").read_text()
    keys = ["header"] + [run_all.section_key(arguments) for _, arguments, _ in run_all.SECTIONS]
    for key in keys:
        assert text.count(run_all.BEGIN.format(key=key)) == 1, key
        assert text.count(run_all.END.format(key=key)) == 1, key
        assert text.index(run_all.BEGIN.format(key=key)) < text.index(run_all.END.format(key=key))
    # Each block's contents change; the rest stays.
    blocks = {key: ("", f"contents of {key}") for key in keys}
    merged = run_all.merge(text, blocks)
    for key in keys:
        assert f"contents of {key}" in merged
    assert merged.count("<!-- bench/run_all.py: begin") == text.count(
        "<!-- bench/run_all.py: begin")


def test_a_failing_script_keeps_its_old_results(run_all, tmp_path, monkeypatch):
    """The whole run, on two stand-in scripts: one prints a table, one fails."""
    (tmp_path / "good.py").write_text("print('| fresh | table |')\n")
    (tmp_path / "bad.py").write_text("import sys\nsys.exit('broken')\n")
    results = tmp_path / "RESULTS.md"
    results.write_text("\n".join([
        "# Benchmark results", "", "By hand.", "", "## Good", "",
        block(run_all, "good.py DATA_HOME", "| stale | table |"), "", "## Bad", "",
        block(run_all, "bad.py", "| last good | table |"), ""]))
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(run_all, "SECTIONS", [("Good", ["good.py", "{data}"], None),
                                              ("Bad", ["bad.py"], None)])
    monkeypatch.setattr(sys, "argv", ["run_all.py", str(tmp_path)])
    assert run_all.main() == 1
    text = results.read_text()
    assert "| fresh | table |" in text and "| stale | table |" not in text
    assert "| last good | table |" in text
    assert "By hand." in text
    assert "failed, kept as before: bad.py" in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]   # no leftovers


def test_run_all_imports_nothing_beyond_the_standard_library():
    """It runs before anything is installed into the bench environment."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import run_all; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch', 'numpy', 'pandas', 'tabembed'}))")
    result = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
