"""The one atomic writer: permissions follow the umask, stale temporaries are cleaned, and
no user's file is ever lost; every file the package writes goes through it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from tabembed._io import atomic_write, atomic_write_bytes, temporary_name

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and signals")


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = atomic_write_bytes(tmp_path / "file.bin", b"data")
    assert _mode(path) == 0o666 & ~mask
    assert path.read_bytes() == b"data"


def test_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"new")
    assert _mode(path) == 0o640 and path.read_bytes() == b"new"


def test_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"precious")

    def broken(stream):
        stream.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "model.ckpt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".model.ckpt.tabembed-{dead_pid}-0badc0de.tmp"
    alive = tmp_path / f".model.ckpt.tabembed-{os.getppid()}-0badc0de.tmp"
    other_file = tmp_path / f".other.ckpt.tabembed-{dead_pid}-0badc0de.tmp"
    users = [tmp_path / ".model.ckpt.backup", tmp_path / "model.ckpt.tmp",
             tmp_path / f".model.ckpt.{dead_pid}.tmp"]
    for p in [stale, alive, other_file, *users]:
        p.write_bytes(b"x")
    atomic_write_bytes(path, b"new")
    assert not stale.exists()
    assert alive.exists() and other_file.exists() and all(p.exists() for p in users)
    assert temporary_name(path).name.startswith(f".model.ckpt.tabembed-{os.getpid()}-")


def test_sigkill_during_a_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"old checkpoint")
    script = textwrap.dedent(f"""
        import sys, time
        from tabembed._io import atomic_write
        def slow(stream):
            stream.write(b"x" * 1_000_000)
            stream.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(path)!r}, slow)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    left = [p for p in os.listdir(tmp_path) if p != "model.ckpt"]
    assert len(left) == 1 and left[0].startswith(f".model.ckpt.tabembed-{child.pid}-")
    assert path.read_bytes() == b"old checkpoint"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:   # the killed child is reaped: its pid is free
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    atomic_write_bytes(path, b"new checkpoint")
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert path.read_bytes() == b"new checkpoint"


def test_every_writer_of_the_package_follows_the_umask(tmp_path, umask):
    """Saved models, checkpoints, snapshot files, plots and Parquet predictions."""
    pytest.importorskip("matplotlib")
    import torch

    from tabembed import EmbeddingMLPClassifier
    from tabembed.plotting import plot_history
    from tabembed.training.averaging import FastGeometricEnsemble
    from tabembed.training.callbacks import Checkpoint

    umask(0o027)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=64), "c": rng.choice(["x", "y"], 64)})
    y = (X["a"] > 0).astype(int)
    model = EmbeddingMLPClassifier(epochs=1, lr=1e-2, hidden=(8,), random_state=0).fit(X, y)
    written = [model.save(tmp_path / "model.tabembed")]
    plot_history(model.learner_.history, tmp_path / "history.png")
    written.append(tmp_path / "history.png")
    X.assign(y=y).to_parquet(tmp_path / "data.parquet")
    written.append(model.predict_to_parquet(tmp_path / "data.parquet",
                                            tmp_path / "predictions.parquet", progress=False))
    from tabembed.batches import TensorBatches
    from tabembed.models import loss_for_task
    from tabembed.training.learner import Learner

    codes, continuous = model.preprocessor_.to_tensors(X)
    data = TensorBatches((codes, continuous, torch.tensor(y.to_numpy(), dtype=torch.float32)),
                         batch_size=16, shuffle=True)
    learner = Learner(model.model_, loss_for_task("binary"), data, device="cpu")
    learner.fit(2, 1e-3, callbacks=[Checkpoint(tmp_path / "run.ckpt"),
                                     FastGeometricEnsemble(cycle_epochs=0.5, n_cycles=2,
                                                           directory=tmp_path / "snapshots")])
    written.append(tmp_path / "run.ckpt")
    written.extend((tmp_path / "snapshots").iterdir())
    assert len(written) >= 5
    for path in written:
        assert _mode(path) == 0o640, path
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    assert pd.read_parquet(tmp_path / "predictions.parquet").shape[0] == 64


# ------------------------------------------------------------------ what is at the path

def _model(tmp_path):
    from tabembed import EmbeddingMLPClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=64), "c": rng.choice(["x", "y"], 64)})
    return EmbeddingMLPClassifier(epochs=1, lr=1e-2, hidden=(8,), random_state=0).fit(
        X, (X["a"] > 0).astype(int))


def _character_device(tmp_path):
    """A character device node like /dev/null: made with mknod where allowed (root), else
    /dev/null itself reached through a symlink."""
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        os.symlink("/dev/null", node)
    return node


def test_special_files_at_the_path_are_refused_and_left_as_they_are(tmp_path):
    """A FIFO, a device, a directory, a socket: never replaced by a regular file (save()
    as root would otherwise replace /dev/null)."""
    import socket

    model = _model(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    device = _character_device(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    listening = socket.socket(socket.AF_UNIX)
    sock = tmp_path / "sock"
    try:
        listening.bind(str(sock))
        cases = {fifo: (FileExistsError, "FIFO"), device: (FileExistsError, "character device"),
                 folder: (IsADirectoryError, "directory"), sock: (FileExistsError, "socket")}
        for path, (kind, what) in cases.items():
            before = os.lstat(path)
            with pytest.raises(kind, match=f"{what}.*never replaces"):
                model.save(path)
            with pytest.raises(kind, match=what):
                atomic_write_bytes(path, b"data")
            after = os.lstat(path)
            assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), path
    finally:
        listening.close()
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    assert sorted(p.name for p in folder.iterdir()) == []


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    """The link stays a link and its target gets the new content, atomically (a temporary
    file beside the target); a link to a device or a dangling loop is refused."""
    import tabembed

    model = _model(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    target = models / "v1.tabembed"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "current.tabembed"
    os.symlink(os.path.relpath(target, tmp_path), link)
    model.save(link)
    assert os.path.islink(link) and os.readlink(link) == "models/v1.tabembed"
    assert _mode(target) == 0o640
    assert tabembed.load(target).get_params() == model.get_params()
    assert sorted(p.name for p in models.iterdir()) == ["v1.tabembed"]

    dangling = tmp_path / "dangling.tabembed"
    os.symlink("models/v2.tabembed", dangling)
    atomic_write_bytes(dangling, b"new")
    assert os.path.islink(dangling) and (models / "v2.tabembed").read_bytes() == b"new"

    to_device = tmp_path / "to_null"
    os.symlink(_character_device(tmp_path), to_device)
    with pytest.raises(FileExistsError, match=r"symlink to .*character device"):
        model.save(to_device)
    loop = tmp_path / "loop"
    os.symlink("loop", loop)
    with pytest.raises(FileExistsError, match="loop"):
        atomic_write_bytes(loop, b"x")
    assert os.path.islink(loop)


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import torch
    from tabembed._io import atomic_write_bytes
    from tabembed.batches import TensorBatches
    from tabembed.training.learner import Learner

    kind, path = sys.argv[1], sys.argv[2]
    model = torch.nn.Linear(512, 1024)          # 2 MB of weights: a checkpoint over 1 MB
    data = TensorBatches((torch.randn(64, 512), torch.randn(64, 1024)), batch_size=16)
    learner = Learner(model, torch.nn.functional.mse_loss, data, device="cpu")
    learner.fit(1, 1e-3)
    # Beyond 1 MB a write fails (EFBIG) as it does on a full disk (ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        if kind == "checkpoint":
            learner.save_checkpoint(path)
        else:
            atomic_write_bytes(path, bytes(4 << 20))
    except OSError as error:
        print(type(error).__name__, error)
""")


@pytest.mark.parametrize("kind", ["checkpoint", "bytes"])
def test_a_full_disk_is_an_os_error_naming_the_file_and_nothing_is_lost(tmp_path, kind):
    """torch.save on a full disk said "enforce fail at inline_container.cc": the caller gets
    the write's OSError naming the file; the previous file is intact, no temporary left."""
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"previous checkpoint")
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, kind, str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OSError [Errno 27]"), result.stdout + result.stderr[-2000:]
    assert f"writing {path} failed: File too large; nothing was written" in result.stdout
    assert "inline_container" not in result.stdout
    assert path.read_bytes() == b"previous checkpoint"
    assert os.listdir(tmp_path) == ["run.ckpt"]
