"""The one atomic file writer of the package (models, checkpoints, plots, Parquet predictions).

A file is written to a temporary file beside it, flushed and fsynced, then
renamed over the destination, and the directory is fsynced: a crash (even
SIGKILL) leaves either the old file or the new one, never half of one. The
rules, each for a failure seen before:

- The temporary file is created with mode ``0o666`` and the process umask
  applies, as for any file the user writes (``mkstemp`` gave ``0600``). An
  existing destination keeps its own permission bits.
- Temporary files are named ``.{name}.tabembed-{pid}-{token}.tmp``. One left
  behind by a killed process (its pid no longer alive on this machine) is
  removed by the next write of the same file, so repeated kills during
  checkpoint writes do not fill the disk. Only files matching that pattern,
  for that destination, of dead processes, are ever removed: never a user's file.
- If writing fails, the destination is untouched and the temporary file removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "atomic_write", "atomic_write_bytes", "temporary_name"]

_TAG = "tabembed"


def temporary_name(path: Path) -> Path:
    """The temporary file beside ``path`` that this process writes before the rename."""
    return path.with_name(f".{path.name}.{_TAG}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        # On Windows os.kill(pid, 0) would send CTRL_C_EVENT: never probe, keep the file.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):   # alive (another user's) or unknowable: keep its file
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by processes that are no longer alive."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TAG}-(\d+)-[0-9a-f]+\.tmp")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not possible on Windows.
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_file(path) -> Iterator[BinaryIO]:
    """Open a binary stream whose content replaces ``path`` atomically when the block ends.

    If the block raises, ``path`` is left as it was and nothing is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = temporary_name(path)
    # 0o666 minus the umask, as open() gives any new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)   # keep an existing file's mode
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(stream)``, atomically (see :func:`atomic_file`)."""
    path = Path(path)
    with atomic_file(path) as stream:
        write(stream)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(data))
