"""ffcore.files: the one atomic write keeps an existing file's mode, gives a new one the umask's,
leaves no temp file or open descriptor on failure, and never touches the process umask."""

from __future__ import annotations

import os
import stat

import pytest

from ffcore.files import atomic_write, atomic_write_bytes, sha256_file


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_new_file_gets_the_umask_mode_and_existing_mode_is_kept(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640
        target = tmp_path / "kept.bin"
        target.write_bytes(b"old")
        os.chmod(target, 0o604)
        atomic_write_bytes(target, b"new")
        assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o604
        assert os.umask(0o027) == 0o027  # unchanged by the writes
    finally:
        os.umask(old)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_failing_writer_leaves_the_old_file_no_temp_and_no_descriptor(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    before = _fds()

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert _fds() == before


def test_sha256_file(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert sha256_file(tmp_path / "a") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
