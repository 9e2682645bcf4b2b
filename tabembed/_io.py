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
- If writing fails, the destination is untouched and the temporary file removed;
  an ``OSError`` raised while writing (a full disk) is what the caller gets,
  naming the file, even where the library writing the stream (torch, Arrow)
  turned it into its own error.
- Only a regular file is ever replaced. A directory, FIFO, socket or device at
  the path is refused before anything is written (as root, ``save("/dev/null")``
  would otherwise replace the device). A symlink is written through: the
  temporary file goes beside the symlink's final target and is renamed onto
  it, so the link stays and points at the new content, as ``open(path, "w")``
  would leave it; a symlink to anything but a regular file is refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "atomic_write", "atomic_write_bytes", "file_kind", "open_regular",
           "temporary_name", "writable_target"]

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


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symlink"}


def file_kind(mode: int) -> str:
    """``"a directory"``, ``"a FIFO (named pipe)"``, ... for a ``st_mode`` (see ``_KINDS``)."""
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def _refuse_special(path: Path, shown: Path) -> None:
    """Raise unless ``path`` is absent or a regular file (``lstat``: links not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    where = f"{shown}" if shown == path else f"{shown} (a symlink to {path})"
    if stat.S_ISLNK(mode):   # what realpath leaves of a loop
        raise FileExistsError(f"{where} is a symlink that never reaches a file (a loop); "
                              "tabembed writes regular files only: choose another path")
    error = IsADirectoryError if stat.S_ISDIR(mode) else FileExistsError
    raise error(f"{where} is {file_kind(mode)}, not a regular file; tabembed writes regular "
                "files only and never replaces a directory, FIFO, socket or device: choose "
                "another path")


def writable_target(path) -> Path:
    """The regular file that writing ``path`` replaces: ``path`` itself, or the final target
    of a symlink (written through). Raises ``IsADirectoryError`` or ``FileExistsError`` where
    that is anything but a regular file or nothing."""
    path = Path(path)
    target = path
    if os.path.islink(path):
        target = Path(os.path.realpath(path))   # a loop leaves a symlink here: refused below
    _refuse_special(target, path)
    return target


class _Stream(io.BufferedWriter):
    """A file stream that keeps the first ``OSError`` of its writes: torch and Arrow turn
    it into errors of their own ("enforce fail at inline_container.cc") that lose it."""

    failure: OSError | None = None

    def write(self, data):
        try:
            return super().write(data)
        except OSError as error:
            self.failure = self.failure or error
            raise

    def flush(self):
        try:
            return super().flush()
        except OSError as error:
            self.failure = self.failure or error
            raise


@contextlib.contextmanager
def atomic_file(path) -> Iterator[BinaryIO]:
    """Open a binary stream whose content replaces ``path`` atomically when the block ends.

    If the block raises, ``path`` is left as it was and nothing is left behind;
    if a write to the stream failed (a full disk), the caller gets that
    ``OSError``, naming ``path``, whatever the block made of it.
    """
    shown = Path(path)
    shown.parent.mkdir(parents=True, exist_ok=True)
    path = writable_target(shown)
    remove_stale_temporaries(path)
    temporary = temporary_name(path)
    # 0o666 minus the umask, as open() gives any new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
    stream = None
    try:
        with _Stream(io.FileIO(descriptor, "wb")) as stream:
            yield stream
            if stream.failure is not None:   # a write failed and the block went on
                raise stream.failure
            stream.flush()
            try:
                os.fsync(stream.fileno())
            except OSError as error:   # where the disk fills up only now (NFS)
                stream.failure = error
                raise
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)   # keep an existing file's mode
        _refuse_special(path, shown)   # again: something may have appeared while writing
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        failure = getattr(stream, "failure", None)
        if failure is not None:
            raise _write_error(failure, shown) from error
        raise
    _fsync_directory(path.parent)


def _write_error(failure: OSError, path: Path) -> OSError:
    """The write's own ``OSError`` (same class and errno), naming the file."""
    reason = failure.strerror or str(failure)
    message = (f"writing {path} failed: {reason}; nothing was written (a file already there is "
               "as it was)")
    return type(failure)(failure.errno, message) if failure.errno else OSError(message)


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(stream)``, atomically (see :func:`atomic_file`)."""
    path = Path(path)
    with atomic_file(path) as stream:
        write(stream)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(data))


def open_regular(path, what: str = "file") -> tuple[BinaryIO, int]:
    """``(stream, size)`` of ``path`` opened for reading, if it is a regular file.

    Anything else (``/dev/zero``, a FIFO, a directory, a socket) is a ``ValueError``
    naming ``path`` before a byte is read: reading one would never end, or block.
    The file is opened first and its descriptor checked, so what is checked is what
    is read. ``what`` names the file in the message ("model file").
    """
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))   # non-blocking: opening a FIFO waits for a writer
    descriptor = os.open(path, flags)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"{path} is {file_kind(status.st_mode)}, not a regular file; a "
                             f"{what} is a regular file: nothing was read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb"), status.st_size
    except BaseException:
        os.close(descriptor)
        raise
