"""The test cache's keyed entries (a venv per requirements digest) do not pile up on disk."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
import trtenv  # noqa: E402


def test_building_an_entry_removes_stale_siblings_and_keeps_recent_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("FFRT_TEST_CACHE", str(tmp_path))
    old = time.time() - trtenv.STALE_AFTER_S - 60
    stale = tmp_path / "cpu-image-venv-aaaaaaaaaaaa"
    recent = tmp_path / "cpu-image-venv-bbbbbbbbbbbb"
    other_kind = tmp_path / "serve-venv-cccccccccccc"
    for d in (stale, recent, other_kind):
        (d / "bin").mkdir(parents=True)
        (d / ".ffrt-ok").write_text("ok")
    for path in (stale / ".ffrt-ok", stale, other_kind / ".ffrt-ok", other_kind):
        os.utime(path, (old, old))

    entry = trtenv.keyed_cache_entry("cpu-image-venv", "dddddddddddd")

    assert entry == tmp_path / "cpu-image-venv-dddddddddddd" and entry.is_dir()
    assert not stale.exists()
    assert (recent / ".ffrt-ok").is_file()  # another checkout may be using it now
    assert (other_kind / ".ffrt-ok").is_file()  # a different prefix is not a sibling


def test_using_an_entry_keeps_it_from_being_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("FFRT_TEST_CACHE", str(tmp_path))
    old = time.time() - trtenv.STALE_AFTER_S - 60
    first = trtenv.keyed_cache_entry("serve-venv", "111111111111")
    (first / ".ffrt-ok").write_text("ok")
    for path in (first / ".ffrt-ok", first / ".ffrt-last-used", first):
        os.utime(path, (old, old))
    trtenv.keyed_cache_entry("serve-venv", "111111111111")  # used again: marked now
    trtenv.keyed_cache_entry("serve-venv", "222222222222")
    assert (first / ".ffrt-ok").is_file()
