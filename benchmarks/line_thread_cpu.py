"""Where ``ffrt run``'s CPU goes, per thread: CPU seconds of each thread of an in-process run.

    python benchmarks/line_thread_cpu.py -- run MODEL SOURCE... --max-batch 8 --out DIR

Runs ``ffrt run`` (the arguments after ``--``, as the command line takes them) in this process
while a sampler thread reads every thread's CPU time from ``/proc/self/task`` every 50 ms and
maps it to the Python thread's name (``ffrt-decode``, ``ffrt-preprocess``, ``ffrt-batcher``,
which calls the backend and takes part in its work, ...); threads Python does not know are the
runtime's own workers (OpenVINO's or ONNX Runtime's pool). Linux only.

The totals include the start (model load, ``auto``'s choice, the warm-up at every batch size):
run it twice with different numbers of frames and take the difference per extra frame, which
is what the line costs once it runs (benchmarks/README.md, "Line throughput", third round).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(tid: str) -> float | None:
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # ended between listing and reading
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Sampler:
    """The last CPU time seen of every thread, and the Python name of each thread seen."""

    def __init__(self, period_s: float = 0.05) -> None:
        self.cpu: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period_s,), name="sampler", daemon=True)

    def _loop(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id})
            for tid in os.listdir("/proc/self/task"):
                if (c := thread_cpu_s(tid)) is not None:
                    self.cpu[int(tid)] = c
            time.sleep(period_s)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, float]:
        """CPU seconds per thread role (numbered pool threads and the sources folded together)."""
        out: dict[str, float] = defaultdict(float)
        for tid, seconds in self.cpu.items():
            name = self.names.get(tid, "runtime workers (not Python threads)")
            out[re.sub(r"[-_]\d+$", "", re.sub(r"^ffrt-source-.*", "ffrt-source", name))] += seconds
        return dict(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if "--out" not in argv:
        raise SystemExit("give ffrt run's arguments after --, with --out DIR")
    from ffeval.machine import describe, one_line
    from ffrt.cli import main as ffrt_main

    print(f"machine: {one_line(describe())}", flush=True)
    t0 = time.perf_counter()
    with Sampler() as sampler:
        rc = ffrt_main(argv)
    wall = time.perf_counter() - t0
    summary = json.loads((Path(argv[argv.index("--out") + 1]) / "summary.json").read_text())
    frames = summary["totals"]["scored"]
    roles = sampler.by_role()
    total = sum(roles.values())
    print(f"exit {rc}: {frames} frames, {wall:.1f} s wall in all, {total:.2f} CPU s in all")
    for role, seconds in sorted(roles.items(), key=lambda kv: -kv[1]):
        print(f"  {role:40s} {seconds:7.2f} CPU s")
    print(json.dumps({"frames": frames, "wall_s": wall, "cpu_s_by_role": roles}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
