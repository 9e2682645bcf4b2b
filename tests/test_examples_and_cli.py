"""The examples and the demo run end to end (examples in their fast mode), so they cannot rot."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tabembed.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script, expected", [
    ("adult_classification.py", ["defaults", "SGDR + SWA", "snapshots"]),
    ("movielens_recommender.py", ["test RMSE", "recommend for user 1", "similar to"]),
    ("implicit_recommender.py", ["test ranking: recall@10", "top 10 for user 1", "similar to",
                                 "a new Animation", "a new user who watched"]),
    ("embeddings_for_gbdt.py", ["booster on raw columns", "booster on embeddings"]),
    ("leave_last_out.py", ["validation NDCG@10 with", "test, seen movies excluded",
                           "slots hold a movie the user had rated",
                           "as recommend's own exclusion", "most popular unseen movies"]),
    pytest.param("tune_adult.py", ["defaults : test accuracy", "search   : 3 trials",
                                   "best parameters:", "tuned    : test accuracy"],
                 marks=pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                          reason="the tuning extra (optuna) is not installed")),
])
def test_example_runs(script, expected, tmp_path):
    environment = {**os.environ, "TABEMBED_FAST": "1", "TABEMBED_OUTPUT": str(tmp_path)}
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], env=environment,
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout, result.stdout
    if script == "adult_classification.py":
        assert {p.name for p in tmp_path.glob("*.png")} == {
            "adult_lr_finder.png", "adult_sgdr_history.png", "adult_sgdr_schedule.png"}


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--output-dir" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_demo_prints_scores_and_writes_plots(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), "--epochs", "2", "--verbose", "0"]) == 0
    output = capsys.readouterr().out
    for text in ("test accuracy:", "test AUC:", "training time:"):
        assert text in output
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "lr_finder.png", "training_curves.png", "education_embeddings.png"}
