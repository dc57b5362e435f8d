"""What a killed ``ffrt serve`` or tritonserver leaves behind, and removing it.

ffrt serve works in a folder of its own (``TMP/ffrt-serve.*``: the model repository and
PyTriton's copy of Triton). When it or tritonserver is killed, these can stay:

- that folder;
- the folder tritonserver writes for a model loaded with a configuration (PyTriton loads
  ffrt_model so): ``/tmp/folderXXXXXX``, a name Triton chooses, whose config.pbtxt names the
  PyTriton workspace inside ffrt serve's folder;
- the Python backend's shared-memory segments, ``/dev/shm/pytrtion<PID>-*`` (PyTriton's
  prefix, spelt so, with the pid of the process that runs it: ffrt serve);
- Python-backend stub processes, which ignore SIGTERM; they run the stub copy inside ffrt
  serve's folder.

ffrt serve records its pid and process start time in its folder (:func:`claim`) and removes
everything above that names its folder when it exits (:func:`remove_own`); at start it does
the same for every folder whose recorded process is no longer running, and removes Triton's
folders that name an ffrt serve folder which no longer exists (left by a server that removed
its own folder but not Triton's: ffrt before this module) (:func:`remove_dead_owners`).
Nothing is removed that does not name such a folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

FOLDER_PREFIX = "ffrt-serve."
OWNER_FILE = "OWNER"
#: Where tritonserver writes a model loaded with a configuration (a fixed path in Triton).
TRITON_TMP = Path("/tmp")
SHM = Path("/dev/shm")
#: The PyTriton workspace a Triton model folder's config names: ``.../ffrt-serve.XXXX/pytriton``.
_WORKSPACE = re.compile(rb'string_value: "([^"]*/' + re.escape(FOLDER_PREFIX.encode()) + rb'[^/"]+)/pytriton"')


def shm_prefix(pid: int) -> str:
    """PyTriton's name prefix for the Python backend's segments of the process ``pid``."""
    return f"pytrtion{pid}-"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def claim(folder: Path) -> None:
    """Record this process as the folder's owner."""
    pid = os.getpid()
    (folder / OWNER_FILE).write_text(json.dumps({"pid": pid, "start": _start_time(pid)}))


def _owner_running(folder: Path) -> tuple[int | None, bool]:
    """(owner pid, whether it still runs); an unreadable record counts as running."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, start = int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, True
    return pid, start is None or _start_time(pid) == start


def _kill_processes_in(folder: Path) -> list[str]:
    """SIGKILL every process whose program lies inside ``folder`` (tritonserver, stubs)."""
    killed = []
    inside = str(folder.resolve()) + os.sep
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            program = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        if program.startswith(inside):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(f"process {entry.name} ({Path(program).name})")
            except OSError:
                pass
    return killed


def _triton_configs():
    """(folder, the start of its config.pbtxt) of tritonserver's /tmp/folderXXXXXX folders."""
    for candidate in TRITON_TMP.glob("folder??????"):
        try:
            with open(candidate / "config.pbtxt", "rb") as f:
                yield candidate, f.read(1 << 16)
        except OSError:
            continue


def _triton_model_folders(folder: Path) -> list[Path]:
    """tritonserver's folders whose configuration names ``folder``."""
    workspace = f'"{folder.resolve() / "pytriton"}"'.encode()
    return [candidate for candidate, text in _triton_configs() if workspace in text]


def _orphaned_triton_folders() -> list[Path]:
    """tritonserver's folders naming an ffrt serve folder that no longer exists."""
    found = []
    for candidate, text in _triton_configs():
        named = _WORKSPACE.search(text)
        if named and not Path(named.group(1).decode(errors="replace")).exists():
            found.append(candidate)
    return found


def _remove(folder: Path, pid: int | None) -> list[str]:
    removed = _kill_processes_in(folder)
    if pid is not None and (pid == os.getpid() or _start_time(pid) is None):
        # The prefix holds only the pid: another running process of that pid may own such names.
        for segment in SHM.glob(shm_prefix(pid) + "*"):
            try:
                segment.unlink()
                removed.append(str(segment))
            except OSError:
                pass
    for path in (*_triton_model_folders(folder), folder):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(str(path))
    return removed


def remove_own(folder: Path) -> list[str]:
    """At exit: this process's folder and everything naming it; returns what was removed."""
    return _remove(folder, os.getpid())


def remove_dead_owners(root: Path | None = None) -> dict[int | None, list[str]]:
    """At start: the leftovers of every ffrt serve that no longer runs, {its pid: what was
    removed}; None: Triton folders whose ffrt serve folder is gone (pid unknown)."""
    root = Path(root or tempfile.gettempdir())
    cleaned: dict[int | None, list[str]] = {}
    for folder in sorted(root.glob(FOLDER_PREFIX + "*")):
        pid, running = _owner_running(folder)
        if folder.is_dir() and not running and pid is not None:
            cleaned[pid] = _remove(folder, pid)
    orphans = _orphaned_triton_folders()
    for path in orphans:
        shutil.rmtree(path, ignore_errors=True)
    if removed := [str(p) for p in orphans if not p.exists()]:
        cleaned[None] = removed
    return cleaned
