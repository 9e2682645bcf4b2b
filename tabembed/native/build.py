"""Compile a C source of this folder with the system's C compiler, cache and load it.

Nothing here is needed: where there is no compiler (or ``TABEMBED_NATIVE=0``), the
callers keep their PyTorch path. The library is built once per source, compiler and
CPU into ``~/.cache/tabembed/native`` (about 0.2 s), written under a temporary name
and renamed, so concurrent processes never load a half-written file.

A shared library runs code, so only a cache that this user alone can change is
trusted. The folder is created ``0700`` whatever the umask; a folder or library
that is not owned by this user, or is writable by its group or by anyone, is
refused. What is checked is what is loaded: the folder is opened (not followed
if it is a symlink) and checked through its descriptor, the library opened
inside it with ``O_NOFOLLOW`` and checked through its own descriptor (owner,
mode, a regular file), and loaded through ``/proc/self/fd/N``, so no rename or
symlink swapped in between the check and the load can change what runs. Where
``/proc/self/fd`` does not exist (macOS, Windows), the library is not loaded.
A freshly built library goes through the same checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SOURCE_FOLDER = Path(__file__).parent
# -fopenmp-simd: the '#pragma omp simd' reductions vectorise without -ffast-math's
# other liberties (no OpenMP runtime is linked).
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp-simd")

# Where a process sees its own descriptors as paths (Linux): the checked descriptor is loaded.
PROC_FDS = "/proc/self/fd"

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_reasons: dict[str, str] = {}


class NativeBuildError(RuntimeError):
    """The C compiler is missing or failed, or the cache cannot be trusted."""


def cache_folder() -> Path:
    try:
        home = Path.home()
    except RuntimeError as error:      # no HOME and no user database entry
        raise NativeBuildError(f"no home folder for the build cache: {error}") from error
    return home / ".cache" / "tabembed" / "native"


def load(name: str) -> ctypes.CDLL | None:
    """The library built from ``<name>.c``, or None where it cannot be had (``reason(name)``
    says why). Built on the first call of a process where the cache lacks it."""
    with _lock:
        if name not in _loaded:
            try:
                if os.environ.get("TABEMBED_NATIVE", "1") == "0":
                    raise NativeBuildError("turned off by TABEMBED_NATIVE=0")
                _check_descriptors_loadable()
                _loaded[name] = load_trusted(build(name, cache_folder()))
                _reasons[name] = "loaded"
            except (NativeBuildError, OSError) as error:
                _loaded[name], _reasons[name] = None, str(error)
        return _loaded[name]


def reason(name: str) -> str:
    """Why :func:`load` gave what it gave: ``"loaded"``, or the error."""
    load(name)
    return _reasons[name]


def build(name: str, folder: Path, compiler: str | None = None) -> Path:
    """Path of the shared library built from ``<name>.c`` in ``folder``, compiling it if
    the folder lacks it. Raises :class:`NativeBuildError`, also where the folder or the
    library could be changed by another user."""
    source = SOURCE_FOLDER / f"{name}.c"
    # CC may carry options ("gcc -m64"), as make and setuptools allow.
    named = compiler or os.environ.get("CC") or "cc"
    program, *options = shlex.split(named) or ["cc"]
    compiler_path = shutil.which(program)
    if compiler_path is None:
        raise NativeBuildError(f"no C compiler found ({named!r} on PATH); set CC to one")
    cpu = _cpu_identity()
    # -march=native only where the CPU's identity is known (it keys the cache), so a home
    # folder shared by different machines never loads another CPU's instructions.
    flags = (*options, *FLAGS, *(("-march=native",) if cpu else ()))
    key = hashlib.sha256(b"\0".join([
        source.read_bytes(), os.path.realpath(compiler_path).encode(),
        str(os.stat(compiler_path).st_mtime_ns).encode(), " ".join(flags).encode(),
        cpu.encode()])).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    target = folder / f"{name}-{key}{suffix}"
    make_private_folder(folder)
    directory = _open_folder(folder)
    try:
        try:
            os.close(_open_library(directory, target))    # cached, and trusted
            return target
        except FileNotFoundError:
            pass
        _compile(compiler_path, flags, source, folder, directory, target)
    finally:
        os.close(directory)
    return target


def _compile(compiler_path: str, flags, source: Path, folder: Path, directory: int,
             target: Path) -> None:
    """Compile ``source`` to a scratch file in ``folder``, check it through ``directory``
    as any cached library, and rename it to ``target``."""
    handle, scratch = tempfile.mkstemp(dir=folder, prefix=f".{target.stem.split('-')[0]}-",
                                       suffix=target.suffix)
    os.close(handle)
    scratch = Path(scratch)
    try:
        command = [compiler_path, *flags, "-o", str(scratch), str(source)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NativeBuildError(f"{' '.join(command)} failed: {error}") from error
        if done.returncode != 0:
            raise NativeBuildError(f"{' '.join(command)} failed with exit status "
                                   f"{done.returncode}: {done.stderr.strip()[:2000]}")
        # The linker gives its output the umask's mode (group-writable under umask 002).
        descriptor = _open_library(directory, scratch, mode=0o700)
        os.close(descriptor)
        os.replace(scratch.name, target.name, src_dir_fd=directory, dst_dir_fd=directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch.name, dir_fd=directory)


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents with mode ``0700``, whatever the umask
    (an existing folder is left as it is, and checked when it is opened)."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:      # another process made it meanwhile: checked on opening
            continue
        except OSError as error:
            raise NativeBuildError(f"cannot create the cache folder {path}: {error}") from error
        os.chmod(path, 0o700)        # a umask such as 0o277 takes bits the owner needs


def load_trusted(path: Path) -> ctypes.CDLL:
    """Load the library at ``path`` after checking its folder and itself through their
    descriptors; raises :class:`NativeBuildError` where either is not this user's alone."""
    _check_descriptors_loadable()
    directory = _open_folder(path.parent)
    try:
        descriptor = _open_library(directory, path)
    finally:
        os.close(directory)
    try:
        return ctypes.CDLL(f"{PROC_FDS}/{descriptor}")
    finally:
        os.close(descriptor)


def _check_descriptors_loadable() -> None:
    if not os.path.isdir(PROC_FDS):
        raise NativeBuildError(f"{PROC_FDS} is not available here, so a library cannot be "
                               "loaded through the descriptor that was checked; not loading "
                               "code from the cache")


def _open_folder(folder: Path) -> int:
    """A descriptor of ``folder`` (not followed if it is a symlink), checked."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        descriptor = os.open(folder, flags)
    except OSError as error:
        raise NativeBuildError(f"cannot open the cache folder {folder} (a symlink is not "
                               f"followed): {error}") from error
    try:
        _check(os.fstat(descriptor), folder, stat.S_ISDIR, "a folder")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _open_library(directory: int, path: Path, mode: int | None = None) -> int:
    """A descriptor of ``path``'s file in the checked folder ``directory`` (never through
    a symlink), checked; ``mode`` is set first (a freshly built file). Raises
    ``FileNotFoundError`` where the file does not exist."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path.name, flags, dir_fd=directory)
    except FileNotFoundError:
        raise
    except OSError as error:   # ELOOP: a symlink
        raise NativeBuildError(f"cannot open {path} without following a symlink: "
                               f"{error}") from error
    try:
        if mode is not None and os.fstat(descriptor).st_uid == _user():
            os.fchmod(descriptor, mode)
        _check(os.fstat(descriptor), path, stat.S_ISREG, "a regular file")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _user() -> int:
    if not hasattr(os, "getuid"):
        raise NativeBuildError("this system has no user ids to check the cache's owner by")
    return os.getuid()


def _check(status: os.stat_result, path: Path, kind, kind_name: str) -> None:
    """``status`` (from a descriptor) is ``kind``, owned by this user and writable by no
    one else."""
    if not kind(status.st_mode):
        raise NativeBuildError(f"{path} is not {kind_name}; not loading code from it")
    if status.st_uid != _user():
        raise NativeBuildError(f"{path} is owned by uid {status.st_uid}, not by this user "
                               f"(uid {_user()}); not loading code from it")
    if status.st_mode & 0o022:
        raise NativeBuildError(
            f"{path} is writable by its group or by anyone (mode "
            f"{stat.S_IMODE(status.st_mode):#o}); not loading code from it. Make it "
            f"private (chmod 700 {path}) or delete it, and the kernel is rebuilt")


def _cpu_identity() -> str:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return ""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))]
    except OSError:
        return ""
    return "".join(sorted(set(lines)))
