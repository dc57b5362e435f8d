"""The memory this machine can give a job now, and one clear refusal before a job that needs more starts.

Why before, not on failure: a trainer that caches features of hundreds of large images runs
for minutes before the allocation that does not fit, and on Linux the kernel's out-of-memory
killer then ends the process with no message of ours ("Killed"), a Windows machine pages to a
crawl instead. An estimate taken first refuses at once and says which setting shrinks the job.
"""

from __future__ import annotations

import os
from pathlib import Path

GIB = 1024**3


class NotEnoughMemoryError(MemoryError):
    """A job's estimated peak memory exceeds what the machine (or the given budget) has."""


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory a new allocation can get without swapping: Linux's MemAvailable (free memory plus
    the page cache the kernel can drop), else free physical pages where the OS reports them
    (macOS, BSD); None where neither is known (the caller then does not refuse)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def require(needed: int, what: str, advice: str, budget: int | None = None) -> None:
    """Raise NotEnoughMemoryError when ``needed`` bytes exceed ``budget`` (default: what the
    machine has available now). ``what`` names the job, ``advice`` says how to shrink it."""
    have = budget if budget is not None else available_bytes()
    if have is None or needed <= have:
        return
    source = "the memory budget given" if budget is not None else "the memory available on this machine now"
    raise NotEnoughMemoryError(f"{what} needs about {needed / GIB:.1f} GiB, more than {source} ({have / GIB:.1f} GiB); "
                               f"nothing was written. {advice}")
