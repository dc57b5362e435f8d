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


def test_the_next_write_removes_temp_files_of_dead_writers_only(tmp_path):
    # Issue 23 row 9: a writer killed outright leaves its temp file; the next atomic write to
    # the same name removes it when its process is gone, and never a live writer's.
    import subprocess
    import sys

    from ffcore.files import atomic_write_bytes

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    left = tmp_path / f".model.onnx.{dead_pid}.0badc0de.tmp"
    live = tmp_path / f".model.onnx.{os.getpid()}.feedf00d.tmp"  # this process: a write in progress
    other = tmp_path / f".other.onnx.{dead_pid}.0badc0de.tmp"  # another file's: not this write's business
    for p in (left, live, other):
        p.write_bytes(b"partial")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx", live.name, other.name])


def test_a_failed_write_names_the_file(tmp_path):
    # Issue 23 row 11: ENOSPC from write(2) carries no file name. A real failed write: the
    # child runs under a file-size limit (EFBIG, as a full disk gives ENOSPC).
    import subprocess
    import sys

    target = tmp_path / "report.json"
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "from ffcore.files import atomic_write_bytes\n"
        "try:\n"
        f"    atomic_write_bytes({str(target)!r}, b'x' * 100_000)\n"
        "except OSError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == f"[Errno 27] File too large: '{target}'", out.stderr
    assert list(tmp_path.iterdir()) == []  # no temp file left
