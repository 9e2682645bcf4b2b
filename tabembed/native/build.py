"""Compile a C source of this folder with the system's C compiler, cache and load it.

Nothing here is needed: where there is no compiler (or ``TABEMBED_NATIVE=0``), the
callers keep their PyTorch path. The library is built once per source, compiler and
CPU into ``~/.cache/tabembed/native`` (about 0.2 s), written under a temporary name
and renamed, so concurrent processes never load a half-written file. Only a folder
and files owned by the current user are loaded: a shared library runs code.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SOURCE_FOLDER = Path(__file__).parent
# -fopenmp-simd: the '#pragma omp simd' reductions vectorise without -ffast-math's
# other liberties (no OpenMP runtime is linked).
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp-simd")

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
                _loaded[name] = ctypes.CDLL(str(build(name, cache_folder())))
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
    the folder lacks it. Raises :class:`NativeBuildError`."""
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NativeBuildError(f"cannot create the cache folder {folder}: {error}") from error
    _check_owned(folder)
    if target.exists():
        _check_owned(target)
        return target
    handle, scratch = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=suffix)
    os.close(handle)
    try:
        command = [compiler_path, *flags, "-o", scratch, str(source)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NativeBuildError(f"{' '.join(command)} failed: {error}") from error
        if done.returncode != 0:
            raise NativeBuildError(f"{' '.join(command)} failed with exit status "
                                   f"{done.returncode}: {done.stderr.strip()[:2000]}")
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target


def _cpu_identity() -> str:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return ""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))]
    except OSError:
        return ""
    return "".join(sorted(set(lines)))


def _check_owned(path: Path) -> None:
    if not hasattr(os, "getuid"):
        return
    status = path.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o002:
        raise NativeBuildError(f"{path} is not owned by this user or is writable by anyone; "
                               "not loading code from it")
