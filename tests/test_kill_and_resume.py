"""Kill a training process with SIGKILL, resume it, and get exactly the uninterrupted result.

Each averaging method runs in tests/resume_worker.py: once without interruption
(the reference), then killed after a batch chosen at random, resumed and killed
again halfway through writing a checkpoint, and resumed to the end. The worker
announces each kill point on stdout and waits there, so where it dies does not
depend on timing.
"""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "resume_worker.py"
METHODS = ["none", "ema", "swa", "snapshot", "fge"]


def _run(*arguments, kill=False):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(WORKER), *map(str, arguments)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment)
    if kill:
        line = process.stdout.readline()
        assert line.strip() == "READY", (line, process.stderr.read()[-3000:])
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
        return
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_sigkill_then_resume_is_bit_exact(method, tmp_path):
    chooser = random.Random(f"kill points {method}")
    kill_epoch = chooser.randrange(1, 3)
    kill_batch = chooser.randrange(0, 6)
    write_epoch = chooser.randrange(kill_epoch, 3)

    _run(method, tmp_path / "reference.ckpt", tmp_path / "reference.pt")
    checkpoint = tmp_path / "run.ckpt"
    _run(method, checkpoint, tmp_path / "unused.pt", f"batch:{kill_epoch}:{kill_batch}",
         kill=True)
    assert checkpoint.exists()      # epochs before the kill were written
    before = checkpoint.read_bytes()
    _run(method, checkpoint, tmp_path / "unused.pt", f"write:{write_epoch}", kill=True)
    assert torch.load(checkpoint, weights_only=True)["resume_epoch"] == write_epoch
    if write_epoch == kill_epoch:     # the half-written file never replaced the last good one
        assert checkpoint.read_bytes() == before
    # The kill mid-write left its temporary file; the resumed run's next write removes it.
    assert len(list(tmp_path.glob(".run.ckpt.tabembed-*.tmp"))) == 1
    _run(method, checkpoint, tmp_path / "resumed.pt")
    assert not list(tmp_path.glob(".*.tmp"))

    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert reference["model"].keys() == resumed["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert torch.equal(reference["predictions"], resumed["predictions"])
    assert not (tmp_path / "unused.pt").exists()
