"""The GPU checks' step runner: each step PASS, FAIL or SKIP with its reason, one line each on the
terminal, and a report (JSON + text) at the end; a failing step never stops the next ones.

Torch-free and ffrt-free on purpose (ffcore's stdlib-only nvidia-smi query aside): check_cuda.py
runs on a bare CUDA machine where ffrt's own dependencies (pydantic) may be missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The repository's package folders (pyproject's package-dir), for running from a checkout.
PACKAGE_DIRS = ("core", "runtime", "trainer", "export", "calibration", "evaluation")


class Skip(Exception):
    """A step that cannot run here: the reason is the message."""


def use_checkout() -> None:
    """Import ffrt, fftrain, ... from this checkout (a GPU host may have no install of them)."""
    for name in reversed(PACKAGE_DIRS):
        path = str(ROOT / name)
        if path not in sys.path:
            sys.path.insert(0, path)


def machine() -> dict:
    """What this host is: CPU, Python, and the GPUs nvidia-smi lists (empty without a driver)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    use_checkout()
    from ffcore.nvidia_smi import NvidiaSmiError, query_gpus  # stdlib only: fine on a bare CUDA host

    try:
        listed = query_gpus(("index", "name", "compute_cap", "driver_version", "memory.total"), timeout_s=30) or []
    except NvidiaSmiError:
        listed = []
    gpus = [", ".join(g.values()) for g in listed]
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "gpus": gpus}


def require_gpu() -> None:
    """Skip unless nvidia-smi lists a GPU."""
    if not shutil.which("nvidia-smi"):
        raise Skip("no NVIDIA driver here (nvidia-smi not found)")
    if not machine()["gpus"]:
        raise Skip("nvidia-smi lists no GPU")


def parse_args(doc: str, report: str, seconds: float, argv: list[str] | None) -> argparse.Namespace:
    """The two checks' command line: BUNDLE, --out (default BUNDLE/<report>), --seconds-per-timing."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="folder written by scripts/gpu/bundle.py")
    p.add_argument("--out", type=Path, help=f"report folder (default BUNDLE/{report})")
    p.add_argument("--seconds-per-timing", type=float, default=seconds,
                   help=f"timing per configuration and batch (default {seconds:g})")
    args = p.parse_args(argv)
    args.out = args.out or args.bundle / report
    return args


def time_calls(call, seconds: float, most: int = 1000, warmup: int = 3) -> dict:
    """Median latency of ``call()`` (it must wait for its own result) over ``seconds``."""
    for _ in range(warmup):
        call()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end and len(times) < most:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    times.sort()
    median_ms = times[len(times) // 2] * 1e3
    return {"median_ms": median_ms, "runs": len(times)}


#: Device memory that 100 create/close cycles may leave unreturned, in MiB.
LEAK_MIB = 16.0


def leak_verdict(figures: dict, key: str, before_mib: float, after_mib: float, cycles: int, what: str) -> str:
    """Record the driver's free memory before and after ``cycles`` and fail beyond LEAK_MIB."""
    figures[key] = {"free_mib_before": before_mib, "free_mib_after": after_mib}
    lost = before_mib - after_mib
    assert lost < LEAK_MIB, f"{lost:.1f} MiB not returned after {cycles} cycles"
    return f"{cycles} {what}: {lost:.1f} MiB of device memory not returned (tol {LEAK_MIB:g})"


class Steps:
    """Run steps in order; ``run(name, fn)`` returns fn's value, or None when it skipped or failed."""

    def __init__(self, title: str, out: Path | None):
        self.title, self.out = title, out
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.host = machine()
        print(f"{title}")
        print(f"machine: {self.host['cpu']} ({self.host['cores']} CPUs), Python {self.host['python']}, "
              f"GPUs: {'; '.join(self.host['gpus']) or 'none'}", flush=True)

    def run(self, name: str, fn, *args):
        t = time.perf_counter()
        try:
            value = fn(*args)
            status, detail = "PASS", value if isinstance(value, str) else ""
        except Skip as e:
            value, status, detail = None, "SKIP", str(e)
        except AssertionError as e:
            value, status, detail = None, "FAIL", str(e) or "assertion failed"
        except Exception as e:  # noqa: BLE001 - a step's failure is a result, and the next step runs
            value, status, detail = None, "FAIL", f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
            if os.environ.get("GPU_CHECK_TRACEBACK"):
                traceback.print_exc()
        self.rows.append({"step": name, "status": status, "detail": detail, "seconds": round(time.perf_counter() - t, 2)})
        print(f"{status:4}  {name}: {detail}" if detail else f"{status:4}  {name}", flush=True)
        return value

    def finish(self, figures: dict | None = None) -> int:
        """Write the report; exit code 0 unless a step failed."""
        statuses = {r["status"] for r in self.rows}
        verdict = "FAIL" if "FAIL" in statuses else "PASS" if statuses == {"PASS"} else "INCOMPLETE"
        report = {"title": self.title, "verdict": verdict, "machine": self.host, "steps": self.rows,
                  "figures": figures or {}, "seconds": round(time.perf_counter() - self.t0, 1)}
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "report.json").write_text(json.dumps(report, indent=2))
            lines = [f"{self.title}: {verdict} in {report['seconds']} s", f"machine: {json.dumps(self.host)}", ""]
            lines += [f"{r['status']:4}  {r['step']}: {r['detail']}" for r in self.rows]
            if figures:
                lines += ["", json.dumps(figures, indent=2)]
            (self.out / "report.txt").write_text("\n".join(lines) + "\n")
        print(f"{verdict} ({sum(r['status'] == 'PASS' for r in self.rows)} PASS, "
              f"{sum(r['status'] == 'FAIL' for r in self.rows)} FAIL, "
              f"{sum(r['status'] == 'SKIP' for r in self.rows)} SKIP) in {report['seconds']} s"
              + (f"; report in {self.out}" if self.out else ""))
        return 1 if verdict == "FAIL" else 0
