"""Files: sha256 of a file, atomic writes, and the file suffixes every tool recognizes.

Atomic writes (:func:`atomic_write`, :func:`atomic_write_bytes`, :func:`write_all_or_none`)
are the only way the SDK writes a result file: a temp file in the target's folder, written,
flushed and fsync'd, then renamed over the target (and the folder fsync'd where the OS
allows), so a crash leaves the old file or the new one, never half of one.

Temp files are named ``.<name>.<pid>.<random>.tmp``: a writer killed outright (kill -9,
power cut) leaves one behind, and the next atomic write to the same name removes those
whose process is gone (:func:`remove_stale_temps`), so they do not pile up beside a model
that is recalibrated every day.

Permissions: the temp file is created with ``os.open(..., 0o666)``, so the kernel applies
the process umask itself (no ``os.umask`` flip, which is process-wide and races with other
threads); when the target already exists its mode is kept (``fchmod`` on the open
descriptor). Every descriptor is closed on every path.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Where a process id cannot be probed safely (Windows: os.kill would terminate it), or a
#: name carries none, a leftover is stale when it has not changed for this long.
STALE_AGE_S = 24 * 3600


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (POSIX: signal 0 probes it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(path: Path, pid: int | None) -> bool:
    """Whether ``path``, left by process ``pid`` (None: unknown), belongs to no live writer."""
    if pid is not None and os.name == "posix":
        return not pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime > STALE_AGE_S
    except OSError:
        return False


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Remove the temp files of earlier atomic writes to ``path`` whose writer is gone
    (``.<name>.<pid>.<random>.tmp``; older names without a pid once a day old); returns how many."""
    path = Path(path)
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        middle = tmp.name[len(path.name) + 2 : -len(".tmp")].split(".")
        pid = int(middle[0]) if len(middle) == 2 and middle[0].isdigit() else None
        if len(middle) <= 2 and tmp.is_file() and is_stale(tmp, pid):
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass  # another run removed it, or no permission: not this write's concern
    return removed


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-sized blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stage(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a temp file next to ``path`` with ``write(file)``, fsync it, return its name.

    The temp file is removed again if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    remove_stale_temps(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random collisions
        raise FileExistsError(f"{path.parent}: no free temp file name")
    try:
        try:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write(2) (disk full, size limit) names no file: name the target
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder so a rename in it survives a power cut (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` atomically with what ``write(file)`` writes into a binary file."""
    path = Path(path)
    tmp = _stage(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``."""
    atomic_write(path, lambda f: f.write(data))


def write_all_or_none(files: dict[Path, bytes]) -> None:
    """Write every file to a temp name next to it (fsync'd), then rename them all.

    A failure while writing (disk full, Ctrl-C) leaves every old file in place; the renames
    come only after all bytes are on disk.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            staged.append((_stage(path, lambda f, d=data: f.write(d)), path))
        for tmp, path in staged:
            os.replace(tmp, path)
        for folder in {path.parent for _, path in staged}:
            fsync_dir(folder)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
