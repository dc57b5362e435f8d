"""Lossy frames against lossless training images: what codec augmentation buys and costs.

Trains the demo model (elpv:mono, fftrain defaults) once per variant (what the model reads,
``--input-color``, and the ``--augment-jpeg`` share), exports each, and grades the shipped files
on onnxruntime-cpu:

- false rejects of the VALIDATION normals (n=44, the images the thresholds were set on) as
  PNG, as JPEG at quality 90 / 75 / 50 (``cv2.imencode``) and as frames of an MJPEG video
  written and read back with OpenCV (FFmpeg's encoder at its default settings);
- AUROC and catches at the image threshold of the trainer's hard synthetic defects drawn
  onto the same validation normals (its own seed), per kind: what the augmentation costs;
- image AUROC on the TEST split as PNG, JPEG q75 and MJPEG, for information only (nothing
  here is chosen on it).

    python benchmarks/codec_robustness.py                 # luma:0 luma:0.5 rgb:0, ~12 min on 2 cores
    python benchmarks/codec_robustness.py --variants luma:0 luma:0.25 luma:0.5

Prints the table with the machine and writes benchmarks/results/codec-robustness.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("png", "jpeg q90", "jpeg q75", "jpeg q50", "mjpeg video")
TEST_VARIANTS = ("png", "jpeg q75", "mjpeg video")


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def mjpeg_video(images: list[np.ndarray]) -> list[np.ndarray]:
    """The frames as an MJPEG .avi written and decoded by OpenCV (all the same size)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "frames.avi")
        h, w = images[0].shape[:2]
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
        for image in images:
            writer.write(image)
        writer.release()
        cap = cv2.VideoCapture(path)
        frames = []
        while (got := cap.read())[0]:
            frames.append(got[1])
        cap.release()
    if len(frames) != len(images):
        raise SystemExit(f"the MJPEG round trip returned {len(frames)} of {len(images)} frames")
    return frames


def as_variant(name: str, images: list[np.ndarray]) -> list[np.ndarray]:
    if name == "png":
        return images
    if name.startswith("jpeg q"):
        return [jpeg(i, int(name[6:])) for i in images]
    return mjpeg_video(images)


def train_and_export(color: str, share: float, out: Path, epochs: int) -> Path:
    from ffexport.cli import main as ffexport
    from fftrain.config import ModelConfig
    from fftrain.data import elpv
    from fftrain.train import TrainSettings, train_and_save

    out.mkdir(parents=True, exist_ok=True)
    train_and_save(ModelConfig(input_color=color), elpv("mono"),
                   TrainSettings(epochs=epochs, progress=False, augment_jpeg=share),
                   out / "model.pt", log=lambda m: print(f"   [{color}:{share:g}] {m}", flush=True))
    if ffexport(["--no-bf16", "--ckpt", str(out / "model.pt"), "--out", str(out)]) != 0:
        raise SystemExit("ffexport failed")
    return out / "model.onnx"


def grade(model: Path) -> dict:
    from ffcore import synthetic
    from ffcore.data import load_batch, resolve
    from ffcore.metrics import roc_auc
    from ffrt import Detector

    split = resolve("elpv:mono")
    read = lambda samples: [cv2.imread(str(s.path), cv2.IMREAD_COLOR) for s in samples]  # noqa: E731
    val, test = read(split.val), read(split.test)
    labels = np.array([s.label for s in split.test])
    row: dict = {}
    with Detector(model, backend="onnxruntime-cpu") as det:
        thr = det.thresholds.image
        row["image_threshold"] = thr
        scores = lambda images: np.array([r.score for r in det.predict_batch(images)])  # noqa: E731
        row["validation_normals_rejected"] = {}
        for name in VARIANTS:
            s = scores(as_variant(name, val))
            row["validation_normals_rejected"][name] = [int((s > thr).sum()), len(s)]
        row["test_auroc"] = {name: roc_auc(labels, scores(as_variant(name, test))) for name in TEST_VARIANTS}
    # The trainer's model-selection defects: drawn at model size onto the validation normals.
    size = (det.meta.input.height, det.meta.input.width)
    normals = load_batch(split.val, size)
    defects, _, levels = synthetic.hard_defect_batch(normals, seed=1000)
    kinds = [synthetic.HARD_KINDS[(i + j) % len(synthetic.HARD_KINDS)]
             for j in range(len(synthetic.HARD_STRENGTHS)) for i in range(len(normals))]
    with Detector(model, backend="onnxruntime-cpu", color_order="RGB") as det:
        n = np.array([r.score for r in det.predict_batch(list(normals))])
        d = np.array([r.score for r in det.predict_batch(list(defects))])
    kinds_arr = np.array(kinds)
    auc = lambda sel: roc_auc(np.r_[np.zeros(len(n)), np.ones(int(sel.sum()))], np.r_[n, d[sel]])  # noqa: E731
    row["synthetic_auroc"] = auc(np.ones(len(d), bool))
    row["synthetic_by_kind"] = {
        k: {"auroc": auc(kinds_arr == k), "caught": [int((d[kinds_arr == k] > thr).sum()), int((kinds_arr == k).sum())]}
        for k in synthetic.HARD_KINDS
    }
    return row


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| --input-color | --augment-jpeg | " + " | ".join(f"val normals rejected: {v}" for v in VARIANTS)
             + " | synthetic AUROC (val) | " + " | ".join(f"caught: {k}" for k in rows[0]["synthetic_by_kind"])
             + " | " + " | ".join(f"test AUROC {v} (info)" for v in TEST_VARIANTS) + " |"]
    lines.append("|" + "---|" * (3 + len(VARIANTS) + len(rows[0]["synthetic_by_kind"]) + len(TEST_VARIANTS)))
    for r in rows:
        lines.append(
            f"| {r['input_color']} | {r['augment_jpeg']:g} | "
            + " | ".join(f"{a}/{b}" for a, b in r["validation_normals_rejected"].values())
            + f" | {r['synthetic_auroc']:.4f} | "
            + " | ".join(f"{v['caught'][0]}/{v['caught'][1]}" for v in r["synthetic_by_kind"].values())
            + " | " + " | ".join(f"{r['test_auroc'][v]:.4f}" for v in TEST_VARIANTS) + " |"
        )
    return "\n".join(lines) + "\n"


def variant(text: str) -> tuple[str, float]:
    color, _, share = text.partition(":")
    if color not in ("rgb", "luma") or not share:
        raise argparse.ArgumentTypeError(f"{text!r}: write COLOR:SHARE, e.g. luma:0.5")
    return color, float(share)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=[variant(v) for v in ("luma:0", "luma:0.5", "rgb:0")], type=variant,
                    help="COLOR:SHARE pairs to train: --input-color (rgb or luma) and --augment-jpeg")
    ap.add_argument("--epochs", type=int, default=12, help="training epochs (the demo's 12)")
    ap.add_argument("--work", type=Path, default=None, help="where the models go (default: a temporary folder)")
    args = ap.parse_args(argv)
    logging.getLogger("ffrt").setLevel(logging.ERROR)  # the drift monitor trips on defect batches by design
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for color, share in args.variants:
            print(f"== --input-color {color} --augment-jpeg {share:g}: train + export", flush=True)
            row = grade(train_and_export(color, share, work / f"{color}-jpeg{share:g}", args.epochs))
            row["input_color"], row["augment_jpeg"] = color, share
            rows.append(row)
    from ffeval.machine import describe, one_line

    machine = describe()
    header = (f"Codec robustness, elpv:mono, efficientnet_lite0 256x256, {args.epochs} epochs, onnxruntime-cpu; "
              f"machine: {one_line(machine)}; {time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s")
    md = markdown(rows, header)
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "codec-robustness.json").write_text(json.dumps({"header": header, "machine": machine, "rows": rows}, indent=1) + "\n")
    (RESULTS / "codec-robustness.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
