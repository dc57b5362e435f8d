"""Detector speed of two revisions of this repository, interleaved (not part of CI).

    python benchmarks/detector_ab.py --model runs/demo/model.onnx --a 297d218 --b HEAD [--rounds 8]

Each revision is checked out with ``git archive`` into a temporary folder and imported from
there (PYTHONPATH before the installed editable copy) in a child process of its own: two
versions of ffrt cannot share one interpreter. The children run in turn, A B A B ..., so a
load change on a shared machine hits both alike; each child loads the model once, warms up,
then times ``det(frame)`` (batch 1) and ``det.predict_batch(8 frames)`` (batch 8) on real
ELPV test cells (300 x 300, resized by the Detector as on a line). Printed and saved: the
median per call of every sample per revision, the ratio B / A, the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("core", "runtime", "trainer", "export", "calibration", "evaluation")

CHILD = r"""
import json, sys, time
import numpy as np
from ffrt import Detector
from ffrt.preprocess import read_image_file
from ffcore.data import elpv

model, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
frames = [read_image_file(s.path) for s in elpv("mono").test[:8]]
det = Detector(model, backend="onnxruntime-cpu", threads=threads)
for _ in range(3):
    det(frames[0]); det.predict_batch(frames, batch_size=8)
out = {"1": [], "8": []}
for i in range(reps):
    t = time.perf_counter(); det(frames[i % 8]); out["1"].append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter(); det.predict_batch(frames, batch_size=8); out["8"].append((time.perf_counter() - t) * 1e3)
det.close()
print(json.dumps(out))
"""


def cpu_line() -> str:
    name, flags = "unknown", ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f" {f}" in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(isa)}"


def checkout(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _commit(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def run_child(tree: Path, model: str, threads: int, reps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(tree / d) for d in PACKAGE_DIRS))
    proc = subprocess.run([sys.executable, "-c", CHILD, model, str(threads), str(reps)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an .onnx both revisions read (exported before either changed the schema)")
    p.add_argument("--a", required=True, help="git revision A (the reference)")
    p.add_argument("--b", default="HEAD", help="git revision B (default HEAD)")
    p.add_argument("--rounds", type=int, default=8, help="child processes per revision, alternated (default 8)")
    p.add_argument("--reps", type=int, default=40, help="timed calls per batch size in each child (default 40)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detector-ab.json")
    args = p.parse_args(argv)
    samples = {"A": {"1": [], "8": []}, "B": {"1": [], "8": []}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"A": checkout(args.a, Path(tmp) / "a"), "B": checkout(args.b, Path(tmp) / "b")}
        for r in range(args.rounds):
            for which in ("A", "B") if r % 2 == 0 else ("B", "A"):
                got = run_child(trees[which], str(Path(args.model).resolve()), args.threads, args.reps)
                for batch in ("1", "8"):
                    samples[which][batch].extend(got[batch])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = {}
    for batch in ("1", "8"):
        a, b = statistics.median(samples["A"][batch]), statistics.median(samples["B"][batch])
        rows[batch] = {"a_median_ms": a, "b_median_ms": b, "ratio_b_over_a": b / a, "n": len(samples["A"][batch])}
    report = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cpu_line(), "model": str(args.model), "a": _commit(args.a), "b": _commit(args.b),
        "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
        "what": "Detector(model, backend='onnxruntime-cpu'): det(frame) at batch 1, predict_batch(8 frames) at batch 8; "
                "ELPV mono test cells 300x300; median ms per call over all samples of each revision",
        "batches": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {report['machine']}")
    for batch, row in rows.items():
        print(f"batch {batch}: A {row['a_median_ms']:.2f} ms, B {row['b_median_ms']:.2f} ms, B/A {row['ratio_b_over_a']:.3f} "
              f"({row['n']} calls each)")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
