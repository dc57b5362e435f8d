"""Load on a real Triton server (``ffrt serve``): throughput, p50/p99 and errors at several
client concurrencies, with Triton's dynamic batching and without (batch 1).

    python benchmarks/triton_load.py --model runs/demo/model.onnx [--concurrency 1,4,16]
        [--seconds 8] [--rounds 2] [--max-batch 8] [--max-delay-ms 2] [--protocol grpc]
        [--json benchmarks/results/triton-load.json]

NVIDIA's perf_analyzer is the tool for this, but it cannot run here: ``pip install
perf-analyzer`` installs a 2 KB placeholder (version 0.1.0, no binary); the binary ships in
the Triton SDK container. This script is the bounded tritonclient loop the issue allows:
two servers are started once (``--max-batch 1`` and ``--max-batch N``, in the serve
environment of tests/support/serveenv.py), each client thread has its own gRPC client and
sends real ELPV cells (300x300 frames, raw uint8 BGR: what a line camera hands over) back to
back for ``--seconds``; the two servers are measured in interleaved rounds, so that the
machine's other load hits both alike. Afterwards Triton's own statistics give the mean batch
``ffrt_model`` ran. The client threads share the machine with the server: on a small
machine they take CPU from it (the table says how many cores there were).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from closedloop import closed_loop, elpv_cells  # noqa: E402  (benchmarks/, next to this script)


def measure(port: int, images: list[np.ndarray], concurrency: int, seconds: float) -> dict:
    import tritonclient.grpc as grpcclient

    def open_client(k: int):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        outputs = [grpcclient.InferRequestedOutput(n) for n in ("score", "is_anomalous", "anomaly_map", "mask")]

        def prepare(img):
            t = grpcclient.InferInput("image", [1, *img.shape], "UINT8")
            t.set_data_from_numpy(img[None])
            return t

        return prepare, lambda t: client.infer("ffrt_detector", [t], outputs=outputs, client_timeout=60), client.close

    return closed_loop(concurrency, seconds, images, open_client)


def batch_stats(server) -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}")
    out = {}
    for model in ("ffrt_detector", "ffrt_model"):
        s = client.get_inference_statistics(model, headers={"triton-access-token": server.token})["model_stats"][0]
        out[model] = {"inferences": int(s["inference_count"]), "executions": int(s["execution_count"])}
    client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="an exported .onnx (e.g. runs/demo/model.onnx from make demo)")
    p.add_argument("--concurrency", default="1,4,16", help="client threads per measurement (default 1,4,16)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of one measurement (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--max-batch", type=int, default=8, help="the dynamic-batching server's largest batch (default 8)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="its queue delay (default 2 ms)")
    p.add_argument("--images", type=int, default=32, help="ELPV test cells cycled through (default 32)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "triton-load.json")
    args = p.parse_args(argv)
    import serveenv

    levels = [int(c) for c in args.concurrency.split(",")]
    images = elpv_cells(args.images)
    logs = Path(tempfile.mkdtemp(prefix="ffrt-load."))
    configs = {
        "batch 1": serveenv.Server(args.model, logs / "b1.log", "--max-batch", "1", "--max-delay-ms", "0"),
        f"dynamic batching <= {args.max_batch}": serveenv.Server(
            args.model, logs / "dyn.log", "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms)),
    }
    runs: dict = {name: {c: [] for c in levels} for name in configs}
    try:
        for server in configs.values():
            server.wait_ready()
            measure(server.grpc, images, 4, 2.0)  # warm-up: sessions, arenas, connections
        for _ in range(args.rounds):
            for c in levels:
                for name, server in configs.items():
                    runs[name][c].append(measure(server.grpc, images, c, args.seconds))
        batches = {name: batch_stats(server) for name, server in configs.items()}
    finally:
        for server in configs.values():
            server.stop()

    rows = []
    for name in configs:
        for c in levels:
            parts = runs[name][c]
            lat = np.concatenate([np.asarray(r["latencies_s"]) for r in parts]) * 1000.0
            requests = sum(r["requests"] for r in parts)
            rows.append({
                "server": name, "concurrency": c, "requests": requests, "errors": sum(r["errors"] for r in parts),
                "throughput_per_s": requests / sum(r["wall_s"] for r in parts),
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            })
    base = {r["concurrency"]: r["throughput_per_s"] for r in rows if r["server"] == "batch 1"}
    for r in rows:
        r["gain_vs_batch1"] = r["throughput_per_s"] / base[r["concurrency"]]
    from ffeval.machine import describe, one_line

    report = {
        "machine": describe(), "load_average_1min": os.getloadavg()[0], "model": str(args.model), "frames": f"{len(images)} ELPV mono test cells, "
        f"{images[0].shape[1]}x{images[0].shape[0]}, raw uint8 BGR over gRPC", "seconds": args.seconds,
        "rounds": args.rounds, "max_delay_ms": args.max_delay_ms, "rows": rows, "triton_statistics": batches,
        "command": "python benchmarks/triton_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"machine: {one_line(report['machine'])}; 1-min load average {report['load_average_1min']:.2f}")
    print("| server | concurrency | requests | errors | throughput (img/s) | p50 ms | p99 ms | vs batch 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['throughput_per_s']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['gain_vs_batch1']:.2f}x |")
    for name, stats in batches.items():
        s = stats["ffrt_model"]
        print(f"{name}: ffrt_model ran {s['inferences']} images in {s['executions']} executions "
              f"(mean batch {s['inferences'] / max(1, s['executions']):.2f})")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
