"""The bare CUDA check: ffrt's CUDA memory layer on real device memory, and the fused model's PyTorch
eager time on the GPU, the reference the engines must beat. For a machine with PyTorch and
cuda-bindings only (no TensorRT, no ffrt install, no network), in a few minutes.

    python scripts/gpu/check_cuda.py BUNDLE [--out DIR] [--seconds-per-timing 3]

BUNDLE is written by ``scripts/gpu/bundle.py`` (this script reads model.pt, images.npy and site/,
under 60 MB for the default model). Steps, each PASS / FAIL / SKIP with its reason: the CUDA
driver through ffrt.tensorrt.cudahost (cuda-python), loaded from this checkout on its own (it imports
nothing else of ffrt); 100 cycles of the backend's allocation pattern on real device memory (per
slot: device buffers, pinned host buffers, a stream, copies in and out checked byte for byte,
then freed in the backend's order and the context released), with the driver's free-memory figure
before and after; pinned copy bandwidth; the fused model (the graph ffexport exports) in PyTorch
eager on the GPU, FP32 and the FP16 file's precision (backbone and flows FP16, head FP32), at batch
1/8/32, its outputs checked against the FP32 CPU run. Report: DIR/report.json and report.txt
(default BUNDLE/report-cuda). Exit code 0 unless a step failed; without a GPU every GPU step skips.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steps import ROOT, Skip, Steps, leak_verdict, parse_args, require_gpu, time_calls, use_checkout  # noqa: E402

CYCLES = 100
#: FP32 on the GPU against FP32 on the CPU (cuDNN's own convolution algorithms, TF32 off),
#: and the FP16 stages against FP32 (the FP16 gate's map bound), relative to the map's peak.
FP32_RTOL, FP16_MAP_REL = 1e-3, 0.02


def load_cudahost():
    """ffrt/tensorrt/cudahost.py as a module of its own: it needs numpy and cuda-python, nothing of ffrt."""
    path = ROOT / "runtime" / "ffrt" / "tensorrt" / "cudahost.py"
    spec = importlib.util.spec_from_file_location("ffrt_cudahost_standalone", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Check:
    def __init__(self, bundle: Path, seconds: float):
        self.bundle, self.seconds = bundle, seconds
        self.images = np.load(bundle / "images.npy")
        self.figures: dict = {}
        self.cudahost = load_cudahost()

    def _api(self):
        require_gpu()
        try:
            return self.cudahost.host_api("cuda-python")
        except self.cudahost.CudaError as e:
            raise Skip(f"cuda-python cannot reach the driver: {e}") from e

    def driver(self) -> str:
        api = self._api()
        d = api.device(0)
        return f"CUDA {api.driver_version()} via cuda-python {api.version}; GPU 0: {d.name} (sm{d.compute_capability})"

    def memory_cycles(self) -> str:
        api = self._api()
        ctx = api.open(0)
        sizes = {"image": 8 * 256 * 256 * 3, "anomaly_map": 8 * 256 * 256 * 4, "score": 8 * 4}

        def cycle(seed: int) -> None:
            device = {k: ctx.alloc(n) for k, n in sizes.items()}
            host = {k: ctx.alloc_pinned(n, np.uint8) for k, n in sizes.items()}
            stream = ctx.create_stream()
            data = np.random.default_rng(seed).integers(0, 256, sizes["anomaly_map"], dtype=np.uint8)
            host["anomaly_map"][:] = data
            ctx.htod_async(device["anomaly_map"], host["anomaly_map"], stream)
            host["anomaly_map"][:] = 0
            ctx.dtoh_async(host["anomaly_map"], device["anomaly_map"], stream)
            ctx.synchronize(stream)
            assert np.array_equal(host["anomaly_map"], data), "device round trip changed the bytes"
            for ptr in device.values():  # the backend's order: device buffers, pinned, stream
                ctx.free(ptr)
            for array in host.values():
                ctx.free_pinned(array)
            ctx.destroy_stream(stream)

        try:
            with ctx.active():
                cycle(0)
                before = ctx.mem_info()[0] / 2**20
                for i in range(CYCLES):
                    cycle(i + 1)
                after = ctx.mem_info()[0] / 2**20
        finally:
            ctx.release()
        return leak_verdict(self.figures, "memory cycles", before, after, CYCLES, "cycles with copies checked")

    def bandwidth(self) -> str:
        api = self._api()
        ctx = api.open(0)
        n = 64 << 20
        try:
            with ctx.active():
                host = ctx.alloc_pinned(n, np.uint8)
                dev, stream = ctx.alloc(n), ctx.create_stream()
                rates = {}
                for name, copy in (("host to device", lambda: ctx.htod_async(dev, host, stream)),
                                   ("device to host", lambda: ctx.dtoh_async(host, dev, stream))):
                    copy()
                    ctx.synchronize(stream)
                    t = time.perf_counter()
                    for _ in range(10):
                        copy()
                    ctx.synchronize(stream)
                    rates[name] = 10 * n / (time.perf_counter() - t) / 1e9
                ctx.free(dev)
                ctx.free_pinned(host)
                ctx.destroy_stream(stream)
        finally:
            ctx.release()
        self.figures["pinned copy GB/s"] = rates
        return ", ".join(f"{k} {v:.1f} GB/s" for k, v in rates.items())

    def _models(self):
        try:
            import torch
        except ImportError as e:
            raise Skip(f"PyTorch is not installed ({e})") from e
        if not torch.cuda.is_available():
            raise Skip("PyTorch sees no CUDA device")
        site = self.bundle / "site"
        try:
            import pydantic  # noqa: F401
        except ImportError:
            if not site.is_dir():
                raise Skip("pydantic is missing here and the bundle has no site/ folder (bundle.py --site-python)")
            sys.path.append(str(site))
        use_checkout()
        from ffexport.graph import FusedGraph
        from ffexport.precision import half_model
        from fftrain import checkpoint

        model, _ = checkpoint.load(self.bundle / "model.pt")
        return torch, FusedGraph(model).eval(), FusedGraph(half_model(model)).eval()

    def torch_eager(self) -> str:
        torch, fp32, fp16 = self._models()
        x_cpu = torch.from_numpy(self.images[:8])
        with torch.no_grad():
            ref_map, _ = fp32(x_cpu)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        rows, checks = {}, []
        for label, graph, tol in (("fp32", fp32, FP32_RTOL), ("fp16", fp16, FP16_MAP_REL)):
            graph = graph.to("cuda")
            with torch.no_grad():
                got, _ = graph(x_cpu.to("cuda"))
                rel = float((got.float().cpu() - ref_map).abs().max() / ref_map.abs().max())
                checks.append(f"{label} map error {rel:.2e} of the CPU FP32 peak (tol {tol})")
                assert rel <= tol, checks[-1]
                for batch in (1, 8, 32):
                    x = torch.from_numpy(np.resize(self.images, (batch, *self.images.shape[1:]))).to("cuda")

                    def call():
                        graph(x)
                        torch.cuda.synchronize()

                    row = time_calls(call, self.seconds, most=500)
                    rows[f"{label} batch {batch}"] = {**row, "img_per_s": batch / row["median_ms"] * 1e3}
            graph.to("cpu")
        self.figures["pytorch eager on the GPU (device tensors in, device out)"] = rows
        return "; ".join(checks + [f"{k} {v['median_ms']:.2f} ms ({v['img_per_s']:.0f} img/s)" for k, v in rows.items()])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "report-cuda", 3.0, argv)
    steps = Steps("ffrt GPU check: CUDA memory layer and PyTorch eager reference", args.out)
    check = Check(args.bundle, args.seconds_per_timing)
    for name, step in (("cuda driver", check.driver), ("memory cycles", check.memory_cycles),
                       ("pinned copy bandwidth", check.bandwidth), ("pytorch eager fused model", check.torch_eager)):
        steps.run(name, step)
    return steps.finish(check.figures)


if __name__ == "__main__":
    sys.exit(main())
