"""examples/train_from_parquet.py runs unchanged in one process and under torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "train_from_parquet.py"
FAST = ["--rows", "20000", "--files", "3", "--row-group-rows", "3000", "--epochs", "2"]


def _run(launcher, tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, str(SCRIPT), *FAST], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _accuracy(output: str) -> float:
    line = next(line for line in output.splitlines() if line.startswith("validation"))
    return float(line.split("accuracy ")[1].split()[0])


@pytest.mark.slow
def test_example_streams_trains_and_predicts_in_one_and_two_processes(tmp_path):
    single = _run([sys.executable], tmp_path)
    for text in ("writing 20,000 rows", "1 process(es)", "train rows/s:", "peak RSS per process"):
        assert text in single, single
    written = pd.read_parquet(tmp_path / "example_output" / "predictions.parquet")
    assert len(written) == 20_000 and written["probability_yes"].between(0, 1).all()
    assert (written["prediction"] == written["target"]).mean() > 0.75

    double = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"],
                  tmp_path)
    assert "writing" not in double                       # the data written above is reused
    assert "2 process(es)" in double and double.count("peak RSS per process") == 1
    assert len(double.split("peak RSS per process:")[1].split(",")) == 2
    parts = sorted((tmp_path / "example_output" / "predictions").glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000-of-00002.parquet",
                                       "part-00001-of-00002.parquet"]
    together = pd.read_parquet(tmp_path / "example_output" / "predictions")
    assert len(together) == 20_000
    # The synthetic task is learnable well above the majority class; two processes with
    # the same global batch reach the same quality within noise (1,000 validation rows).
    assert _accuracy(single) > 0.75
    assert abs(_accuracy(single) - _accuracy(double)) < 0.05, (single, double)
