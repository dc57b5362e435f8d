"""Files: sha256 of a file, atomic writes, and the file suffixes every tool recognizes.

Atomic writes (:func:`atomic_write`, :func:`atomic_write_bytes`, :func:`write_all_or_none`)
are the only way the SDK writes a result file: a temp file in the target's folder, written,
flushed and fsync'd, then renamed over the target (and the folder fsync'd where the OS
allows), so a crash leaves the old file or the new one, never half of one.

Permissions: the temp file is created with ``os.open(..., 0o666)``, so the kernel applies
the process umask itself (no ``os.umask`` flip, which is process-wide and races with other
threads); when the target already exists its mode is kept (``fchmod`` on the open
descriptor). Every descriptor is closed on every path.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


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
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
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
