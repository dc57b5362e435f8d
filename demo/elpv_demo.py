"""The main job (`make demo`): train on real solar cells, export, detect with ffrt, report.

Data: ELPV monocrystalline cells (pip package elpv-dataset, CC BY-NC-SA 4.0, non-commercial).
The split is fixed so figures compare across tools: mono cells with defect probability 0
in dataset order, every 4th a test normal (147), the rest train/validation; all mono cells
with probability >= 0.67 are test defects (313).

Steps: fftrain (cached backbone features, best epoch on held-out data) -> ffexport (one
fused ONNX, parity-checked) -> ffrt.Detector over the test cells -> image AUROC and F1 at
the calibrated threshold -> latency/FPS of the runtime at batch 1 and 8, next to PyTorch
eager on the same model (each runtime alone in its own process, and a check that says when
sharing one process would change the ONNX Runtime figure) -> overlay PNGs -> the threshold review page (review.html, ffeval --html).
Everything is written under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

BATCHES = (1, 8)
#: The model-only figures are taken in this many alternating blocks (ONNX Runtime alone, PyTorch
#: alone, the two interleaved in one process), with this untimed pause after each block.
BLOCKS = 5
BLOCK_SETTLE_S = 0.3


def model_only(model, ckpt: Path, onnx_path: Path, images: np.ndarray, repeats: int,
               torch_threads: int) -> tuple[list[dict], dict]:
    """Model-only latency (uint8 batch at the model size in, map and score out) of ONNX Runtime
    CPU on the fused graph and of PyTorch eager on the same checkpoint, each alone in a process
    of its own (``python -m ffeval.modelonly``, ``python -m fftrain.eager``), and the isolation
    check: ONNX Runtime again, interleaved with PyTorch eager in this one process (ffcore.timing,
    50 ms settle pause). The three run in alternating blocks, so that a shared machine's drift
    reaches them alike. Returns (one row per batch, the check per batch)."""
    import torch

    from ffcore.ort import make_session
    from ffcore.timing import interleaved, isolation_check
    from ffeval.modelonly import ModelOnlyChild
    from ffeval.vs_torch import EagerChild
    from fftrain.data import to_tensor_batch

    def eager(x):
        with torch.inference_mode():
            model(to_tensor_batch(x))

    session = make_session(onnx_path)
    ort, torch_child = ModelOnlyChild(onnx_path), EagerChild(ckpt, torch_threads)
    rows, checks = [], {}
    per_block = max(1, repeats // BLOCKS)
    try:
        for batch in BATCHES:
            x = images[:batch]
            ort.load(x)
            torch_child.load(x)
            mixed = {"onnxruntime": lambda: session.run(None, {"image": x}), "torch": lambda: eager(x)}
            for _ in range(2):  # warm-up: arenas, kernel choice
                ort.run()
                torch_child.run()
            ort_ms, torch_ms, mixed_ms = [], [], []
            for _ in range(BLOCKS):
                for times, run in ((ort_ms, ort.run), (torch_ms, torch_child.run)):
                    times += [run() for _ in range(per_block)]
                    time.sleep(BLOCK_SETTLE_S)  # the runtime's threads go idle before the next one runs
                mixed_ms += list(interleaved(mixed, rounds=per_block, warmup=1, settle_s=0.05)["onnxruntime"])
                time.sleep(BLOCK_SETTLE_S)
            ort_p50, torch_p50 = float(np.median(ort_ms)), float(np.median(torch_ms))
            rows.append({
                "batch": batch,
                "onnxruntime_p50_ms": ort_p50,
                "onnxruntime_img_per_s": batch * 1000 / ort_p50,
                "torch_eager_p50_ms": torch_p50,
                "torch_eager_img_per_s": batch * 1000 / torch_p50,
                "speedup": torch_p50 / ort_p50,
                "how": f"each runtime alone in its own process; {BLOCKS} blocks of {per_block} calls",
            })
            checks[batch] = isolation_check(ort_p50, float(np.median(mixed_ms)))
    finally:
        ort.close()
        torch_child.close()
    return rows, checks


def write_overlays(detector, samples, results, folder: Path, per_group: int = 4) -> list[Path]:
    from ffrt.overlay import render_overlay

    folder.mkdir(parents=True, exist_ok=True)
    order = np.argsort([r.score for r in results])
    defects = [i for i in order if samples[i].label == 1]
    normals = [i for i in order if samples[i].label == 0]
    groups = {
        "defect_highest": defects[::-1][:per_group],
        "defect_lowest": defects[:per_group],
        "normal_highest": normals[::-1][:per_group],
    }
    written = []
    t = detector.thresholds
    for group, indices in groups.items():
        for rank, i in enumerate(indices):
            image = cv2.imread(str(samples[i].path), cv2.IMREAD_COLOR)
            r = results[i]
            picture = render_overlay(image, r.anomaly_map, r.mask, vmin=0.0, vmax=max(t.pixel * 2, 1e-6),
                                     score=r.score, is_anomalous=r.is_anomalous)
            path = folder / f"{group}_{rank}_{samples[i].path.stem}.png"
            cv2.imwrite(str(path), picture)
            written.append(path)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="where model, report and PNGs go")
    ap.add_argument("--cells", choices=["mono", "poly"], default="mono", help="ELPV cell type (default mono)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: fftrain's)")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per latency figure (default 30)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()

    import torch

    from ffeval.machine import describe as describe_machine
    from ffexport.cli import main as ffexport_main
    from ffrt import Detector
    from fftrain import checkpoint
    from fftrain.config import ModelConfig
    from fftrain.data import elpv, load_batch
    from ffcore.metrics import f1_at_threshold, f1_max, precision_recall_at_threshold, roc_auc
    from fftrain.train import TrainSettings, train_and_save

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt, onnx_dir = args.out / "model.pt", args.out
    split = elpv(args.cells)
    counts = split.counts()
    print(f"== ELPV {args.cells}: {counts['train']} train, {counts['val']} validation, "
          f"{counts['test_normal']} normal + {counts['test_defective']} defective test cells")
    for note in split.notes:
        print(f"   note: {note}")

    print("== 1/4 train (fftrain)")
    t = time.perf_counter()
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    train_and_save(ModelConfig(), split, TrainSettings(**epochs, progress=not args.quiet), ckpt)
    train_s = time.perf_counter() - t

    print("== 2/4 export (ffexport)")
    t = time.perf_counter()
    if ffexport_main(["--ckpt", str(ckpt), "--out", str(onnx_dir)]) != 0:
        return 1
    export_s = time.perf_counter() - t
    onnx_path = onnx_dir / "model.onnx"

    print("== 3/4 detect the held-out test cells (ffrt.Detector, backend=\"auto\": the fastest this machine runs)")
    detector = Detector(onnx_path)
    print(f"   backend: {detector.backend_description}, running {detector.running_path.name}")
    samples = split.test
    t = time.perf_counter()
    results = detector.predict_batch([str(s.path) for s in samples], batch_size=8)
    detect_s = time.perf_counter() - t
    labels = np.array([s.label for s in samples])
    scores = np.array([r.score for r in results])
    # Where auto runs a gated variant (model.bf16.onnx), the FP32 file beside it on the same cells:
    # what the faster precision costs in accuracy, measured here rather than taken from its gate.
    fp32, fp32_auroc = None, None
    if detector.running_path != onnx_path:
        fp32 = Detector(onnx_path, precision="fp32")
        fp32_scores = np.array([r.score for r in fp32.predict_batch([str(s.path) for s in samples], batch_size=8)])
        fp32_auroc = roc_auc(labels, fp32_scores)
        print(f"   the FP32 file on the same cells ({fp32.backend_description}): image AUROC "
              f"{fp32_auroc:.4f}, against {roc_auc(labels, scores):.4f} with {detector.running_path.name}")
    threshold = detector.thresholds.image
    auroc = roc_auc(labels, scores)
    f1 = f1_at_threshold(labels, scores, threshold)
    precision, recall = precision_recall_at_threshold(labels, scores, threshold)
    best_f1, best_t = f1_max(labels, scores)
    predicted = scores > threshold
    confusion = {
        "true_reject": int((predicted & (labels == 1)).sum()),
        "false_reject": int((predicted & (labels == 0)).sum()),
        "false_accept": int((~predicted & (labels == 1)).sum()),
        "true_accept": int((~predicted & (labels == 0)).sum()),
    }
    print(f"   image AUROC {auroc:.4f}")
    if detector.health().state == "drift":
        print(f"   (the drift warning above is expected here: {labels.mean():.0%} of the test cells are defective, "
              "far more than a line produces; the monitor reports that the recent scores left the normal range)")
    print(f"   at the calibrated threshold {threshold:.4f} ({detector.thresholds.source}):")
    print(f"   F1 {f1:.4f}  precision {precision:.4f}  recall {recall:.4f}  {confusion}")
    print(f"   (F1-max over all thresholds, chosen on the test set itself: {best_f1:.4f} at {best_t:.4f})")

    print("== 4/4 speed")
    model, _ = checkpoint.load(ckpt)
    torch_threads = os.cpu_count() or 1
    torch.set_num_threads(torch_threads)
    model_images = load_batch(samples[:8], model.config.image_size, model.config.resize_mode)
    rows, checks = model_only(model, ckpt, onnx_path, model_images, args.repeats, torch_threads)
    print("   model only (uint8 batch at model size -> map + score), p50, each runtime alone in its own process "
          "(per-stage figures: ffbench):")
    for r in rows:
        print(f"   batch {r['batch']}: ONNX Runtime {r['onnxruntime_p50_ms']:7.1f} ms ({r['onnxruntime_img_per_s']:5.1f} img/s)"
              f" | PyTorch eager {r['torch_eager_p50_ms']:7.1f} ms ({r['torch_eager_img_per_s']:5.1f} img/s)"
              f" | {r['speedup']:.2f}x")
    for batch, check in checks.items():
        print("   isolation check, " + check.line(f"ONNX Runtime batch {batch}", "PyTorch eager"))
    isolation = {str(batch): check.to_dict() for batch, check in checks.items()}
    frames = [cv2.imread(str(s.path), cv2.IMREAD_UNCHANGED) for s in samples[:64]]
    end_to_end = {}
    for name, det in (("default", detector), ("fp32", fp32)):
        if det is None:
            continue
        for batch in (1, 8):
            det.reset_stats()
            det.warmup(batch_size=batch)
            for start in range(0, len(frames), batch):
                det.predict_batch(frames[start : start + batch], batch_size=batch)
            end_to_end[batch if name == "default" else f"{batch}-fp32"] = det.stats
            print(f"   Detector end to end ({det.running_path.name}: 300x300 gray frames, resize + inference + map back), "
                  f"batch {batch}: {det.stats}")

    overlays = write_overlays(detector, samples, results, args.out / "overlays")
    print("== the threshold review page (ffeval --html): scores, a threshold slider, the parts that flip")
    from ffeval.evaluate import evaluate

    review = evaluate(onnx_path, f"elpv:{args.cells}", args.out / "eval", html=args.out / "review.html",
                      command=["ffeval", str(onnx_path), "--data", f"elpv:{args.cells}", "--out", str(args.out / "eval"),
                               "--html", str(args.out / "review.html")])["files"]["review"]
    print(f"   {review} (open it in a browser; docs/review-page.md explains it)")
    total_s = time.perf_counter() - t_start
    summary = {
        "data": split.name,
        "counts": counts,
        "data_notes": split.notes,
        "image_auroc": auroc,
        "running": detector.running_path.name,
        "backend": detector.backend_description,
        "fp32_file_image_auroc": fp32_auroc,
        "calibrated_threshold": threshold,
        "threshold_source": detector.thresholds.source,
        "f1_at_threshold": f1,
        "precision_at_threshold": precision,
        "recall_at_threshold": recall,
        "confusion_at_threshold": confusion,
        "f1_max_oracle": best_f1,
        "onnx_bytes": onnx_path.stat().st_size,
        "latency_model_only": rows,
        "isolation_check": isolation,
        "latency_end_to_end": {str(b): s.model_dump() for b, s in end_to_end.items()},
        "seconds": {"train": train_s, "export": export_s, "detect_test_set": detect_s, "total": total_s},
        "machine": describe_machine(),
        "overlays": [str(p) for p in overlays],
        "review_page": review,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"== done in {total_s / 60:.1f} min: ONNX {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), "
          f"{len(overlays)} overlays in {args.out / 'overlays'}, summary in {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
