"""Run every benchmark in one go on this machine and update bench/RESULTS.md.

Run through ``make bench`` (which builds ``.venv-bench`` with the peers and sets
thread variables). Each script prints markdown. RESULTS.md also holds text
written by hand (readings, earlier rounds kept for the record, one-off runs),
so a script's output replaces only its own block, between the markers
``<!-- bench/run_all.py: begin KEY -->`` and ``<!-- bench/run_all.py: end KEY -->``
(KEY: the script and its arguments); everything outside the blocks is kept. A
script without a block gets a new section at the end. A script that fails
leaves its block as it was and makes the run exit with an error.
Run: ``python bench/run_all.py DATA_HOME [--quick]``.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECTIONS = [
    ("Peers: accuracy and speed (issue 8)", ["peers.py", "{data}"], ["--quick"]),
    ("Speed against peers and targets (issue 17)", ["speed.py", "{data}"], None),
    ("Weight averaging and ensembles (issue 6)", ["averaging.py", "{data}"], None),
    ("Defaults: validation evidence, Adult (issues 4, 8); base: no piecewise-linear "
     "inputs, batch 256, LR valley", ["tune_defaults.py", "adult", "-"], None),
    ("Defaults: validation evidence, Adult, second round",
     ["tune_defaults.py", "adult", "-", "round2"], None),
    ("Defaults: validation evidence, Adult, third round (piecewise-linear encoding)",
     ["tune_defaults.py", "adult", "-", "round3"], None),
    ("Defaults: validation evidence, Adult, fourth round (at the final defaults)",
     ["tune_defaults.py", "adult", "-", "round4"], None),
    ("Defaults: validation evidence, Adult, fifth round (hidden widths, issue 17)",
     ["tune_defaults.py", "adult", "-", "round5"], None),
    ("Hidden widths on the other datasets (issue 17)", ["tune_defaults.py", "widths"], None),
    ("Hidden widths and prediction speed (issue 17)", ["hidden_width.py"], None),
    ("Defaults: validation evidence, MovieLens 100K (issues 4, 8); base: decay 0.1, "
     "batch 256, no embedding L2",
     ["tune_defaults.py", "movielens", "{data}"], None),
    ("Defaults: validation evidence, MovieLens 100K, second round",
     ["tune_defaults.py", "movielens", "{data}", "round2"], None),
    ("Defaults: validation evidence, MovieLens 100K, third round",
     ["tune_defaults.py", "movielens", "{data}", "round3"], None),
    ("Defaults: validation evidence, MovieLens 100K, fourth round (batch-only L2)",
     ["tune_defaults.py", "movielens", "{data}", "round4"], None),
    ("Defaults: validation evidence, MovieLens 100K, ninth round (batch size again, "
     "issue 17)", ["tune_defaults.py", "movielens", "{data}", "round9"], None),
    ("Ninth round's candidates on the test folds u1..u5 (issue 17)",
     ["tune_defaults.py", "movielens-folds", "{data}"], None),
    ("Preprocessing (issue 3)", ["preprocess.py"], None),
    ("Training loop overhead (issue 5)", ["loop_overhead.py", "--threads", "1"], None),
    ("Threads (issue 5)", ["threads.py"], None),
    ("Scale: streaming Parquet and several processes (issue 13)", ["scale.py"], None),
    ("Ranking: top-10 lists against peers (issue 14)", ["ranking.py", "{data}"], None),
    ("Ranking defaults: validation evidence (issue 14)", ["tune_ranking.py", "{data}"], None),
    ("Ranking defaults against EASE: validation evidence (issue 32)",
     ["tune_hybrid.py", "{data}"], None),
    ("The 20-table suite: defaults against LightGBM, XGBoost, CatBoost and RealMLP-TD "
     "(issue 30)", ["suite.py"], ["--quick"]),
    ("Defaults on the suite (issue 30): round 1, one knob at a time",
     ["tune_suite.py", "round1", "--seeds", "1"], None),
    ("Defaults on the suite (issue 30): round 2, the winners combined",
     ["tune_suite.py", "round2", "--seeds", "1"], None),
    ("Defaults on the suite (issue 30): the finalists on two seeds",
     ["tune_suite.py", "finalists", "--seeds", "2"], None),
    ("Defaults on the suite (issue 30): round 3, on top of the best set",
     ["tune_suite.py", "round3", "--seeds", "1"], None),
    ("Defaults on the suite (issue 30): round 4, on top of the size rule",
     ["tune_suite.py", "round4", "--seeds", "2"], None),
    ("Defaults on the suite (issue 30): Adult guard", ["tune_suite.py", "adult", "--seeds", "5"],
     None),
    ("Defaults on the suite (issue 30): the recommended set on the test parts",
     ["suite.py", "--models", "tabembed,lightgbm", "--seeds", "2", "--tabembed-params",
      "recommended"], None),
    ("Defaults on the suite (issue 30): the shipped defaults on the test parts, two seeds",
     ["suite.py", "--models", "tabembed,lightgbm", "--seeds", "2"], None),
    ("Small data on the suite (issue 30): the recommended set against each encoding",
     ["small_data.py", "encodings"], None),
    ("Small data on the suite (issue 30): 500 to 2,000 rows", ["small_data.py", "subsamples"],
     None),
    # Prints "Not measured" where there is no CUDA device.
    ("GPU: Learner epoch against a bare loop on the device (issue 17)",
     ["gpu.py", "{data}"], None),
]

# One-thread comparisons run without OMP_WAIT_POLICY=PASSIVE (the Makefile sets it for
# the thread experiments): on an idle machine it made LightGBM's one-thread Adult fit
# 6x slower (1.2 s against 0.21 s; 0.40 s with the other core busy) and changed
# tabembed's and fastai's fits by under 3%.
ACTIVE_WAIT = {"peers.py", "speed.py", "suite.py"}


BEGIN = "<!-- bench/run_all.py: begin {key} -->"
END = "<!-- bench/run_all.py: end {key} -->"
HEADER = "header"


def section_key(arguments: list[str]) -> str:
    """The block's key: the script and its arguments, the data folder as DATA_HOME."""
    return " ".join(arguments).replace("{data}", "DATA_HOME")


def merge(existing: str, blocks: dict[str, tuple[str, str]]) -> str:
    """``existing`` RESULTS.md text with each block's contents replaced.

    ``blocks`` maps a key to ``(section title, new contents)``. A key whose
    markers are in ``existing`` has the text between them replaced; the header
    block without markers goes after the first line; any other goes at the end,
    under ``## title``. Text outside the markers is never changed.
    """
    text = existing if existing.strip() else "# Benchmark results\n"
    for key, (title, contents) in blocks.items():
        begin, end = BEGIN.format(key=key), END.format(key=key)
        block = f"{begin}\n{contents.strip()}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if len(pattern.findall(text)) > 1:
            raise ValueError(f"the block {key!r} appears more than once in RESULTS.md")
        found = pattern.search(text)
        if found:
            text = text[:found.start()] + block + text[found.end():]
        elif key == HEADER:
            first, _, rest = text.partition("\n")
            text = f"{first}\n\n{block}\n{rest}"
        else:
            text = f"{text.rstrip()}\n\n## {title}\n\n{block}\n"
    return text


def main() -> int:
    data = sys.argv[1]
    quick = "--quick" in sys.argv
    command = f"make bench DATA_HOME={data}" + (" QUICK=1" if quick else "")
    today = datetime.date.today()
    blocks, failed = {}, []
    for title, arguments, quick_flags in SECTIONS:
        if quick and quick_flags is None:
            continue     # --quick: the peer comparison only, one seed, fold u1
        script = [sys.executable, str(HERE / arguments[0])]
        script += [a.format(data=data) for a in arguments[1:]]
        if quick and quick_flags:
            script += quick_flags
        print(f"running {' '.join(script[1:])}", flush=True)
        environment = dict(os.environ)
        if arguments[0] in ACTIVE_WAIT:
            environment.pop("OMP_WAIT_POLICY", None)
        result = subprocess.run(script, capture_output=True, text=True, env=environment)
        key = section_key(arguments + ((quick_flags or []) if quick else []))
        if result.returncode != 0:
            # The last good results stay; the error goes to the terminal, not the file.
            print(f"**failed** (exit {result.returncode}): {key}\n{result.stderr[-3000:]}",
                  flush=True)
            failed.append(key)
            continue
        ran = f"`python bench/{key}`"
        heading = f"{title} (QUICK=1)" if quick else title
        blocks[key] = (heading, f"Regenerated by `{command}` on {today}: {ran}.\n\n"
                              f"{result.stdout.strip()}")
    blocks = {HEADER: ("", (
        f"Last `{command}`: {today} (OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}), {len(blocks)} of the benchmark "
        "blocks regenerated" + (f"; failed, kept as before: {', '.join(failed)}" if failed
                                else "") + ". "
        "`make bench` rewrites only the blocks between `bench/run_all.py` markers (each says "
        "when it was regenerated); the rest of this file is written by hand and kept. Every "
        "table names its own machine and library versions. Ratios are measured within one "
        "run; absolute times drift with the machine's load. Test splits are used for "
        "reporting only: every default was chosen on validation splits (the 'Defaults' "
        "sections)."))} | blocks
    target = HERE / "RESULTS.md"
    existing = target.read_text() if target.exists() else ""
    handle, temporary = tempfile.mkstemp(dir=HERE, suffix=".md")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(merge(existing, blocks))
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    print(f"updated {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
