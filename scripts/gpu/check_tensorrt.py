"""The GPU host check: TensorRT engines from a prepared bundle, in a few minutes, no network.

    python scripts/gpu/check_tensorrt.py BUNDLE [--out DIR] [--seconds-per-timing 5]

On a GPU host with the gpu extra installed (``pip install "ffrt[gpu]"``, or Dockerfile.gpu), from
a bundle written by ``scripts/gpu/bundle.py`` on any CPU machine. Steps, each PASS / FAIL / SKIP
with its reason (a failure does not stop the next step): the bundle's hashes; the TensorRT 10 graph
check of every file; an engine per file (FP32, FP16, INT8), batch 1..32; each engine's maps and
scores against the bundle's ONNX Runtime CPU references; ONNX Runtime's TensorRT provider on the
FP32 file (TF32 stays on there, which native engines clear: its difference is measured); the
Detector on one engine from 4 threads; 100 create/run/close cycles against the driver's free
memory; batch 1/8/32 latency of each engine. Report: DIR/report.json and report.txt (default
BUNDLE/report-tensorrt). Exit code 0 unless a step failed; without a GPU every GPU step skips.

Tolerances, relative to the reference map's largest value (as ffexport's parity check):
FP32 engine 1e-3 (TF32 cleared); FP16 engine: the FP16 gate's map bound 0.02 and score Spearman
>= 0.99 against the FP16 file's own reference; INT8 engine: Spearman >= 0.9 and median relative
score error <= 0.05 against the Q/DQ file's reference (TensorRT requantizes in its own order);
ONNX Runtime's TensorRT provider (TF32): 1e-2.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steps import Skip, Steps, leak_verdict, parse_args, require_gpu, time_calls, use_checkout  # noqa: E402

FP32_RTOL, FP16_MAP_REL, FP16_MIN_SPEARMAN, TF32_RTOL = 1e-3, 0.02, 0.99, 1e-2
INT8_MIN_SPEARMAN, INT8_MEDIAN_REL = 0.9, 0.05
THREADS, CYCLES = 4, 100


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


class Check:
    def __init__(self, bundle: Path, out: Path, seconds: float):
        self.bundle, self.out, self.seconds = bundle, out, seconds
        self.manifest = json.loads((bundle / "manifest.json").read_text())
        self.images = np.load(bundle / "images.npy")
        self.engines: dict[str, Path] = {}
        self.figures: dict = {}

    def verify_bundle(self) -> str:
        for name, entry in self.manifest["files"].items():
            digest = hashlib.sha256((self.bundle / name).read_bytes()).hexdigest()
            assert digest == entry["sha256"], f"{name} changed since the bundle was written (sha256 differs)"
        return f"{len(self.manifest['files'])} files as written on {self.manifest['prepared_on']['cpu']}"

    def graph_check(self) -> str:
        from ffrt.tensorrt import compat

        found = {name: compat.problems(self.bundle / "models" / name) for name in self.manifest["models"]}
        bad = {k: v for k, v in found.items() if v}
        assert not bad, "; ".join(f"{k}: {v[0]}" for k, v in bad.items())
        return f"{', '.join(found)}: TensorRT 10 can build each (operators, types, uint8 into Cast, TopK K)"

    def tensorrt(self) -> str:
        require_gpu()
        from ffrt.tensorrt.build import import_tensorrt, missing_for_tensorrt

        missing = missing_for_tensorrt(0)
        if missing:
            raise Skip(f"TensorRT cannot run here: {missing}")
        return f"TensorRT {import_tensorrt().__version__}"

    def build(self, name: str) -> str:
        require_gpu()
        from ffexport.tensorrt import build_engine
        from ffrt.tensorrt.plan import BatchProfile
        from ffrt.metafile import read_onnx_meta

        src = self.bundle / "models" / name
        meta = read_onnx_meta(src)
        profile = BatchProfile.for_model(meta, 1, 8, self.manifest["batch_max"])
        t = time.perf_counter()
        path, info = build_engine(src, profile, 2048, self.out / "timing.cache", self.out / (src.stem + ".engine"), meta)
        self.engines[name] = path
        assert not info.tf32, "the sidecar says TF32 is on: FP32 tensors would not compute in FP32"
        return f"{path.name}: {info.precision}, {info.gpu_name}, built in {time.perf_counter() - t:.1f} s"

    def _engine_outputs(self, name: str):
        from ffrt.tensorrt.runner import TensorRTBackend
        from ffrt.tensorrt.plan import read_engine_info

        if name not in self.engines:
            raise Skip(f"no engine for {name} (its build step did not pass)")
        path = self.engines[name]
        with TensorRTBackend(path, read_engine_info(path).meta) as backend:
            parts = [backend.run(self.images[i : i + 8]) for i in range(0, len(self.images), 8)]
        ref = np.load(self.bundle / "reference" / f"{Path(name).stem}.npz")
        return np.concatenate([m for m, _ in parts]), np.concatenate([s for _, s in parts]), ref["maps"], ref["scores"]

    def parity(self, name: str) -> str:
        from ffcore.rankcorr import spearman

        maps, scores, ref_maps, ref_scores = self._engine_outputs(name)
        assert np.isfinite(maps).all() and np.isfinite(scores).all(), "non-finite outputs"
        precision = self.manifest["models"][name]["precision"]
        rel, rho = _rel(maps, ref_maps), spearman(ref_scores, scores)
        median = float(np.median(np.abs(scores - ref_scores) / np.maximum(np.abs(ref_scores), 1e-12)))
        self.figures[f"parity {name}"] = {"map_rel": rel, "spearman": rho, "score_median_rel": median}
        text = f"map error {rel:.2e} of the peak, score Spearman {rho:.5f}, median score error {median:.2e}"
        if precision == "fp32":
            assert rel <= FP32_RTOL and _rel(scores, ref_scores) <= FP32_RTOL, text + f" (tol {FP32_RTOL})"
        elif precision == "fp16":
            assert rel <= FP16_MAP_REL and rho >= FP16_MIN_SPEARMAN, text + f" (tol {FP16_MAP_REL}, >= {FP16_MIN_SPEARMAN})"
        else:
            assert rho >= INT8_MIN_SPEARMAN and median <= INT8_MEDIAN_REL, text
        return text

    def ort_tensorrt_provider(self) -> str:
        require_gpu()
        import onnxruntime as ort

        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            raise Skip("onnxruntime has no TensorRT provider here (onnxruntime-gpu of the gpu extra)")
        path = self.bundle / "models" / "model.onnx"
        cache = self.out / "ort-trt-cache"
        cache.mkdir(parents=True, exist_ok=True)
        provider = ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)})
        sess = ort.InferenceSession(str(path), providers=[provider])
        assert sess.get_providers()[0] == "TensorrtExecutionProvider", f"ran on {sess.get_providers()}"
        maps = np.concatenate([sess.run(None, {"image": self.images[i : i + 8]})[0] for i in range(0, len(self.images), 8)])
        ref = np.load(self.bundle / "reference" / "model.npz")["maps"]
        rel = _rel(maps, ref)
        self.figures["ort tensorrt provider fp32 (TF32 on)"] = {"map_rel": rel}
        assert rel <= TF32_RTOL, f"map error {rel:.2e} of the peak (tol {TF32_RTOL})"
        return f"map error {rel:.2e} of the peak with TF32 on (native FP32 engines clear it)"

    def threads(self) -> str:
        from ffrt import Detector

        if "model.onnx" not in self.engines:
            raise Skip("no FP32 engine (its build did not pass)")
        with Detector(self.engines["model.onnx"]) as det:
            expected = [r.score for r in det.predict_batch(list(self.images))]
            results, errors = {}, []

            def worker(k):
                try:
                    for _ in range(5):
                        results[k] = [det(img).score for img in self.images]
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

            pool = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        assert not errors, errors[:3]
        worst = max(float(np.max(np.abs(np.array(v) - expected))) for v in results.values())
        assert worst <= 1e-5 * max(1.0, float(np.max(np.abs(expected)))), f"scores differ across threads by {worst}"
        return f"{THREADS} threads x 5 rounds x {len(self.images)} images: scores as one thread's (max diff {worst:.1e})"

    def cycles(self) -> str:
        from ffrt.tensorrt.runner import TensorRTBackend
        from ffrt.tensorrt.cudahost import host_api
        from ffrt.tensorrt.plan import read_engine_info

        if "model.onnx" not in self.engines:
            raise Skip("no FP32 engine (its build did not pass)")
        path = self.engines["model.onnx"]
        meta = read_engine_info(path).meta
        ctx = host_api().open(0)

        def free_mib():
            with ctx.active():
                return ctx.mem_info()[0] / 2**20

        try:
            with TensorRTBackend(path, meta):
                pass
            before = free_mib()
            for _ in range(CYCLES):
                backend = TensorRTBackend(path, meta)
                backend.run(self.images[:2])
                backend.close()
            after = free_mib()
        finally:
            ctx.release()
        return leak_verdict(self.figures, "cycles", before, after, CYCLES, "create/run/close cycles")

    def timing(self) -> str:
        from ffrt.tensorrt.runner import TensorRTBackend
        from ffrt.tensorrt.plan import read_engine_info

        if not self.engines:
            raise Skip("no engine was built")
        rows = {}
        for name, path in self.engines.items():
            with TensorRTBackend(path, read_engine_info(path).meta) as backend:
                for batch in (1, 8, 32):
                    x = np.resize(self.images, (batch, *self.images.shape[1:]))
                    row = time_calls(lambda: backend.run(x), self.seconds)
                    rows[f"{name} batch {batch}"] = {**row, "img_per_s": batch / row["median_ms"] * 1e3}
        self.figures["latency (host in, host out)"] = rows
        return "; ".join(f"{k} {v['median_ms']:.2f} ms ({v['img_per_s']:.0f} img/s)" for k, v in rows.items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "report-tensorrt", 5.0, argv)
    use_checkout()
    steps = Steps("ffrt GPU check: TensorRT engines from a bundle", args.out)
    check = Check(args.bundle, args.out, args.seconds_per_timing)
    steps.run("bundle", check.verify_bundle)
    steps.run("graph check", check.graph_check)
    steps.run("tensorrt", check.tensorrt)
    for name in check.manifest["models"]:
        steps.run(f"build {name}", check.build, name)
    for name in check.manifest["models"]:
        steps.run(f"parity {name}", check.parity, name)
    steps.run("onnxruntime tensorrt provider", check.ort_tensorrt_provider)
    steps.run("threads", check.threads)
    steps.run("create/close cycles", check.cycles)
    steps.run("timing", check.timing)
    return steps.finish(check.figures)


if __name__ == "__main__":
    sys.exit(main())
