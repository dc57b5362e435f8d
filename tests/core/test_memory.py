"""ffcore.memory: what the machine has, and the one refusal before a job that needs more."""

from __future__ import annotations

import pytest

from ffcore.memory import GIB, NotEnoughMemoryError, available_bytes, require


def test_available_memory_is_linuxs_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:         1000000 kB\nMemAvailable:   12582912 kB\n")
    assert available_bytes(meminfo) == 12 * GIB  # kB, not bytes; MemAvailable, not MemFree
    # Without the line (an old kernel, another OS): the free physical pages the OS reports.
    meminfo.write_text("MemTotal:       25165824 kB\n")
    fallback = available_bytes(meminfo)
    assert fallback is None or fallback > 0


def test_this_machines_figure_is_within_its_total():
    total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    have = available_bytes()
    assert have is not None and 0 < have <= total


def test_require_refuses_only_what_does_not_fit():
    require(GIB, "a job", "shrink it", budget=GIB)  # exactly fits
    with pytest.raises(NotEnoughMemoryError) as refused:
        require(3 * GIB, "training on 700 images", "Use fewer views.", budget=2 * GIB)
    message = str(refused.value)
    assert "training on 700 images needs about 3.0 GiB" in message and "the memory budget given (2.0 GiB)" in message
    assert "nothing was written" in message and message.endswith("Use fewer views.")
    # Without a budget: this machine's available memory decides.
    require(1, "a small job", "")
    with pytest.raises(NotEnoughMemoryError, match="the memory available on this machine now"):
        require(10**15, "a petabyte job", "")
