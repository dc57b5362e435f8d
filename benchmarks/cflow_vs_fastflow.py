"""FastFlow vs CFLOW-AD side by side (issue 24): same backbone, input size, recipe and machine.

Per data set (default: elpv:mono, elpv:poly and DeepPCB) both kinds are trained with the demo
recipe (fftrain.train: 12 epochs, each kind's own step settings from fftrain.kinds; the frozen
backbone's features are computed once and given to both, they are the same), exported with
ffexport (parity and TensorRT checks) and measured as exported, through ffrt:

* accuracy, TEST split (ffeval.evaluate, ONNX Runtime CPU): image AUROC, pixel AUROC and AUPRO
  where masks exist, recall and false-reject rate at the stored threshold (set by fftrain on
  validation normals). Test figures are for reporting only: nothing is chosen on them;
* the kept epoch's VALIDATION figures as training logged them (held-out normals and synthetic
  defects drawn on them: what the epoch was chosen on);
* parameters (backbone, per-scale norms and decoders), file size, GMAC per image;
* model-only latency at batch 1 and 8 on ONNX Runtime and OpenVINO (FP32), the four
  (model, backend) configurations of a data set timed in interleaved rounds (ffcore.timing,
  ffbench's harness) so they see the same machine state.

    python benchmarks/cflow_vs_fastflow.py [--data SPEC ...] [--epochs 12] [--work runs/cflow_vs_fastflow]

Writes benchmarks/results/cflow-vs-fastflow.json and .md (``--results``). A run that stopped
early is resumed: checkpoints, models and test figures already under ``--work`` are reused.

``--unconditioned SPEC ...`` instead answers whether the position condition helps: CFLOW trained
as above and CFLOW trained with every position given the same (zero) condition, the paper's
UFLOW ablation (a constant condition is a constant bias: the flow no longer knows where a vector
sits), both scored in PyTorch on the TEST split (image AUROC; the exported graph computes the
same scores within 1e-5, tests/export/test_cflow_export.py). Writes cflow-condition-ablation.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

KINDS = ("fastflow", "cflow")
DEEPPCB = "/work/shared/datasets/deeppcb"


class SharedFeatures:
    """A FeatureExtractor for fftrain.train that computes each image batch's backbone features
    once: both kinds use the same frozen backbone on the same images (same augmentation and
    synthetic-defect seeds), so the second training reuses the first one's features."""

    def __init__(self) -> None:
        self.model = None  # the model being trained: train() has resolved its input colour before extracting
        self.cache: dict[str, list] = {}

    def __call__(self, images: np.ndarray, desc: str):
        from fftrain.train import extract_features

        key = hashlib.sha256(images.tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = extract_features(self.model, images, desc=desc, progress=False)
        return self.cache[key]


def train_kind(kind: str, split, epochs: int, shared: SharedFeatures, unconditioned: bool = False):
    """fftrain.train of one kind with the demo recipe; returns its TrainResult. ``unconditioned``:
    every position gets the same (zero) condition, the paper's UFLOW ablation."""
    from fftrain.config import ModelConfig
    from fftrain.data import auto_image_size
    from fftrain.model import AnomalyModel
    from fftrain.train import TrainSettings, train

    default = ModelConfig()
    config = ModelConfig(model=kind, image_size=auto_image_size(split.train, default.height * default.width))
    model = AnomalyModel(config)
    if unconditioned:
        for decoder in model.flows:
            decoder.condition.zero_()
    shared.model = model
    return train(config, split, TrainSettings(epochs=epochs, progress=False), model=model, extract=shared,
                 log=lambda m: print(f"  [{kind}{' unconditioned' if unconditioned else ''}] {m}", flush=True))


def trained(kind: str, split, epochs: int, folder: Path, shared: SharedFeatures) -> dict:
    """Train into ``folder``/model.pt unless a run that stopped early left it there; what training
    did, read from the checkpoint."""
    import torch

    from fftrain import checkpoint
    from fftrain.train import train_info

    path = folder / "model.pt"
    if not path.is_file():
        result = train_kind(kind, split, epochs, shared)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.save(path, result.model, result.calibration, train_info(result, split))
    model, payload = checkpoint.load(path)
    info = payload["train_info"]
    best = next(r for r in info["history"] if r["epoch"] == info["best_epoch"])

    def count(module) -> int:
        return int(sum(p.numel() for p in module.parameters()))

    return {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.model_dump().items()},
        "settings": info["settings"],
        "timings": info["timings"],  # feature_cache_s is near 0 for the kind that reused the other's features
        "best_epoch": info["best_epoch"],
        "validation": {"split": "validation (held-out normals + synthetic defects drawn on them)",
                       "nll_per_dim": best["val_nll"], "synthetic_auroc": best["val_synthetic_auroc"]},
        "parameters": {"backbone": count(model.backbone), "norms": count(model.norms),
                       "decoders": count(model.flows), "torch_threads": torch.get_num_threads()},
    }


def export(folder: Path) -> None:
    from ffexport.cli import main as ffexport_main

    if (folder / "model.onnx").is_file() and (folder / "model.onnx").stat().st_mtime > (folder / "model.pt").stat().st_mtime:
        return
    if ffexport_main(["--no-bf16", "--ckpt", str(folder / "model.pt"), "--out", str(folder), "--batch-max", "8"]) != 0:
        raise SystemExit(f"ffexport failed for {folder}")


def accuracy(onnx_path: Path, data: str) -> dict:
    from ffeval.evaluate import evaluate

    saved = onnx_path.with_name("test_accuracy.json")
    if saved.is_file() and saved.stat().st_mtime > onnx_path.stat().st_mtime:
        return json.loads(saved.read_text())
    r = evaluate(onnx_path, data, backend="onnxruntime-cpu", command=["ffeval", str(onnx_path), "--data", data])
    c = r["image"]["confusion_at_threshold"]
    pixel = r["pixel"]
    out = {
        "split": "test",
        "counts": r["data"]["counts"],
        "image_auroc": r["image"]["auroc"],
        "recall_at_threshold": r["image"]["recall_at_threshold"],
        "false_reject_rate_at_threshold": c["false_reject"] / max(1, c["false_reject"] + c["true_accept"]),
        "confusion_at_threshold": c,
        "threshold": r["image"]["threshold"],
        "pixel_auroc": pixel.get("auroc"),
        "aupro": pixel.get("aupro"),
        "pixel_note": None if pixel["available"] else pixel["reason"],
    }
    saved.write_text(json.dumps(out, indent=2))
    return out


def latency(paths: dict[str, Path], batches=(1, 8), rounds: int = 20) -> dict:
    """Model-only ``backend.run`` of every (kind, backend), interleaved per batch size."""
    from ffcore.timing import interleaved
    from ffeval.bench import summarize
    from ffeval.macs import count_macs
    from ffrt.backends import create_backend
    from ffrt.metafile import read_onnx_meta

    backends, macs = {}, {}
    for kind, path in paths.items():
        meta = read_onnx_meta(path)
        macs[kind] = count_macs(path).total / 1e9
        for name in ("onnxruntime-cpu", "openvino"):
            be, _ = create_backend(name, path, meta, None, precision="fp32")
            backends[f"{kind} {name}"] = (be, meta)
    out = {"gmac_per_image": macs, "rows": []}
    rng = np.random.default_rng(0)
    for n in batches:
        h, w = next(iter(backends.values()))[1].input.height, next(iter(backends.values()))[1].input.width
        x = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
        timed = interleaved({label: (lambda b=be: b.run(x)) for label, (be, _) in backends.items()},
                            rounds=rounds, warmup=2, settle_s=0.05)
        out["rows"].append({"batch": n, **{label: summarize(ms, n) for label, ms in timed.items()}})
    out["backends"] = {label: be.description for label, (be, _) in backends.items()}
    return out


def run_dataset(data: str, epochs: int, work: Path) -> dict:
    from fftrain.data import resolve

    split = resolve(data)
    shared = SharedFeatures()
    name = Path(data).name if not data.startswith("elpv:") else data.replace(":", "-")
    row: dict = {"data": data, "counts": split.counts(), "notes": list(split.notes), "models": {}}
    paths = {}
    for kind in KINDS:
        folder = work / name / kind
        print(f"== {data}: train {kind}", flush=True)
        row["models"][kind] = trained(kind, split, epochs, folder, shared)
        print(f"== {data}: export {kind}", flush=True)
        export(folder)
        paths[kind] = folder / "model.onnx"
        row["models"][kind]["onnx_mb"] = paths[kind].stat().st_size / 1e6
        print(f"== {data}: evaluate {kind} on the test split", flush=True)
        row["models"][kind]["test"] = accuracy(paths[kind], data)
    shared.cache.clear()
    print(f"== {data}: latency", flush=True)
    row["latency"] = latency(paths)
    return row


def condition_ablation(data: str, epochs: int, work: Path) -> dict:
    """Image AUROC on the test split of CFLOW with and without the position condition (PyTorch)."""
    import torch

    from ffcore.metrics import roc_auc
    from fftrain.data import load_batch, resolve, to_tensor_batch

    split = resolve(data)
    shared = SharedFeatures()
    labels = np.array([s.label for s in split.test])
    out = {"data": data, "split": "test", "counts": split.counts(), "epochs": epochs}
    for name, unconditioned in (("cflow", False), ("cflow_unconditioned", True)):
        print(f"== {data}: train {name}", flush=True)
        result = train_kind("cflow", split, epochs, shared, unconditioned)
        model = result.model.eval()
        scores = []
        with torch.no_grad():
            for start in range(0, len(split.test), 16):
                images = load_batch(split.test[start:start + 16], model.config.image_size, model.config.resize_mode)
                scores.append(model(to_tensor_batch(images))[1].numpy())
        best = next(r for r in result.history if r.epoch == result.best_epoch)
        out[name] = {"image_auroc": float(roc_auc(labels, np.concatenate(scores))), "best_epoch": result.best_epoch,
                     "validation_synthetic_auroc": best.val_synthetic_auroc}
        print(f"   {name}: test image AUROC {out[name]['image_auroc']:.4f}", flush=True)
    return out


def _f(v, digits=4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        "# FastFlow vs CFLOW-AD, side by side",
        "",
        f"Machine: {report['machine_line']}; load average (1 min) before/after: {report['load_average']}.",
        f"Command: `{report['command']}` ({report['minutes']:.0f} min).",
        "Accuracy columns: TEST split, each file at its stored threshold (set by fftrain on validation normals); "
        "'val synth' = the kept epoch's image AUROC on the VALIDATION split (held-out normals with synthetic "
        "defects), what training selected on. Latency: model-only p50 ms, FP32, interleaved rounds.",
        "",
        "| data | model | image AUROC | pixel AUROC | AUPRO | recall @ thr | false rejects @ thr | val synth AUROC "
        "| decoder params | total params | GMAC | ORT b1 | ORT b8 | OpenVINO b1 | OpenVINO b8 | epochs s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["datasets"]:
        lat = {r["batch"]: r for r in row["latency"]["rows"]}
        for kind, m in row["models"].items():
            t, p = m["test"], m["parameters"]

            def ms(backend, batch):
                return _f(lat[batch][f"{kind} {backend}"]["p50_ms"], 1)

            lines.append(
                f"| {row['data']} | {kind} | {_f(t['image_auroc'])} | {_f(t['pixel_auroc'])} | {_f(t['aupro'])} "
                f"| {_f(t['recall_at_threshold'], 3)} | {_f(t['false_reject_rate_at_threshold'], 3)} "
                f"| {_f(m['validation']['synthetic_auroc'])} | {p['decoders'] + p['norms']:,} "
                f"| {p['decoders'] + p['norms'] + p['backbone']:,} | {row['latency']['gmac_per_image'][kind]:.3f} "
                f"| {ms('onnxruntime-cpu', 1)} | {ms('onnxruntime-cpu', 8)} | {ms('openvino', 1)} "
                f"| {ms('openvino', 8)} | {m['timings']['train_s']:.0f} |")
    lines += ["", "Test split sizes: " + "; ".join(
        f"{r['data']}: {r['counts']['test_normal']} normal + {r['counts']['test_defective']} defective"
        for r in report["datasets"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["elpv:mono", "elpv:poly", DEEPPCB])
    ap.add_argument("--epochs", type=int, default=12, help="training epochs of both kinds (default 12, the demo's)")
    ap.add_argument("--work", type=Path, default=Path("runs/cflow_vs_fastflow"), help="checkpoints and models")
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results" / "cflow-vs-fastflow")
    ap.add_argument("--unconditioned", nargs="+", metavar="SPEC",
                    help="instead: CFLOW with and without the position condition on these data sets")
    args = ap.parse_args(argv)
    if args.unconditioned:
        from ffeval.machine import describe, one_line

        rows = [condition_ablation(d, args.epochs, args.work) for d in args.unconditioned]
        path = args.results.with_name("cflow-condition-ablation.json")
        path.write_text(json.dumps({"machine_line": one_line(describe()), "rows": rows}, indent=2))
        print(f"wrote {path}")
        return 0

    from ffeval.machine import describe, one_line

    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    machine = describe()
    report = {
        "command": "python benchmarks/cflow_vs_fastflow.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "machine": machine,
        "machine_line": one_line(machine),
        "epochs": args.epochs,
        "datasets": [],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for data in args.data:
        report["datasets"].append(run_dataset(data, args.epochs, args.work))
        report["minutes"] = (time.perf_counter() - t0) / 60
        report["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        # after every data set: a long run that stops later keeps what it measured
        args.results.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    args.results.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
