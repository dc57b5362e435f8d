"""Does ``backend="auto"`` pick the fastest CPU configuration? (issue 27's bar: within 3%.)

    python benchmarks/auto_choice.py --model runs/demo/model.onnx [--probes 5] [--rounds 20] [--json FILE]

1. **Probes**: ``--probes`` fresh processes, each with an empty engine cache (its own
   ``FFRT_ENGINE_CACHE``), open ``Detector(MODEL)`` with every default and report what auto ran
   and the figures it measured (a few seconds of measuring, as on a user's first call).
2. **Reference**: in this process, every candidate auto considers (each CPU backend on the file,
   and on each gated precision variant beside it, in each precision its gates allow; the same
   start functions auto uses) timed the way ffbench ``--backend all`` times (interleaved
   rounds, an untimed call at the start of each turn) with ``--rounds`` rounds, before the
   probes and again after them, at batch 1 and 8; the figure auto minimises is the mean over
   the two batches of the median milliseconds per image.

For each probe: its choice's reference time over the fastest candidate's (1.00 = the fastest).
The bar holds when every probe is within 1.03. Prints and saves everything with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (1, 8)
BAR = 1.03

PROBE = """
import json, sys
from ffrt import Detector
with Detector(sys.argv[1]) as det:
    # Backend.label's form: the name, plus "precision on file" for a variant file
    label = det.backend_name if det.running_path == det.model_path else \
        f"{det.backend_name} {det.precision} on {det.running_path.name}"
    print(json.dumps({"label": label, "precision": det.precision, "choice": det.backend_choice}))
"""


def probe(model: Path) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, str(model)], capture_output=True, text=True,
                             env={**os.environ, "FFRT_ENGINE_CACHE": cache}, check=True)
        seconds = time.perf_counter() - t0
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["seconds"] = round(seconds, 1)
    return row


def candidates(model: Path) -> list:
    """The backends auto would measure on ``model`` (ffrt.backends.base._auto's CPU group)."""
    from ffrt.backends import base
    from ffrt.metafile import read_onnx_meta

    meta = read_onnx_meta(model)
    group = [n for n in base.auto_order(meta) if n in base.CPU_BACKENDS]
    why_not: list[str] = []
    planned = base._cpu_candidates(group, model, meta, "auto", {}, why_not)
    started = [b for c in planned if (b := c.start(None, 0, {}, why_not)) is not None]
    for w in why_not:
        print(f"  not a candidate: {w}", flush=True)
    return started, meta


def reference(backends: list, meta, rounds: int) -> dict[str, dict[str, float]]:
    """{label: {"b1": ms/image, "b8": ms/image, "objective": mean of the two}}."""
    from ffcore.timing import interleaved

    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {b.label: {} for b in backends}
    for n in BATCHES:
        x = rng.integers(0, 256, size=(n, meta.input.height, meta.input.width, 3), dtype=np.uint8)
        times = interleaved({b.label: (lambda b=b: b.run(x)) for b in backends}, rounds=rounds, warmup=2,
                            settle_s=0.02, per_turn=2, rewarm=1)
        for label, t in times.items():
            out[label][f"b{n}"] = float(np.median(t)) / n
    for v in out.values():
        v["objective"] = float(np.mean([v[f"b{n}"] for n in BATCHES]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--probes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line

    machine = describe()
    print(f"machine: {one_line(machine)}", flush=True)
    backends, meta = candidates(args.model)
    print(f"candidates: {', '.join(b.label for b in backends)}", flush=True)
    before = reference(backends, meta, args.rounds)
    for b in backends:  # the probes run alone, as a user's first Detector does
        b.close()
    probes = []
    for i in range(args.probes):
        probes.append(probe(args.model))
        print(f"probe {i + 1}: auto ran {probes[-1]['label']} ({probes[-1]['seconds']} s)", flush=True)
    backends, meta = candidates(args.model)
    after = reference(backends, meta, args.rounds)
    for b in backends:
        b.close()
    objective = {k: (before[k]["objective"] + after[k]["objective"]) / 2 for k in before}
    fastest = min(objective, key=objective.get)
    for row in probes:
        row["ratio_to_fastest"] = objective[row["label"]] / objective[fastest]
    worst = max(r["ratio_to_fastest"] for r in probes)
    print(f"\nreference, ms per image (mean of batch {' and '.join(map(str, BATCHES))}), before / after the probes:")
    for k in sorted(objective, key=objective.get):
        print(f"  {k:55s} {before[k]['objective']:7.2f} / {after[k]['objective']:7.2f}   x{objective[k] / objective[fastest]:.3f}")
    print("auto's choices: " + ", ".join(f"{r['label']} (x{r['ratio_to_fastest']:.3f})" for r in probes))
    print(f"worst probe: x{worst:.3f} of the fastest; bar <= x{BAR}: {'met' if worst <= BAR else 'NOT met'}")
    out = {"schema": "ffrt.auto-choice", "machine": machine, "model": str(args.model),
           "command": ["python", "benchmarks/auto_choice.py", *(argv if argv is not None else sys.argv[1:])],
           "batches": list(BATCHES), "rounds": args.rounds, "reference_before": before, "reference_after": after,
           "fastest": fastest, "probes": probes, "worst_ratio": worst, "bar": BAR}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
