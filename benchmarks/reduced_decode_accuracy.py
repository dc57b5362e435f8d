"""What ``ffrt run``'s decoding of JPEG frames (at a reduced resolution, the Y plane for a luma
model) does to the scores: the whole colour decode + resize against it, on development images.

    python benchmarks/reduced_decode_accuracy.py --model runs/demo/model.onnx [--sizes 1,2,5]
        [--deeppcb-model runs/deeppcb/model.onnx] [--json benchmarks/results/reduced-decode-accuracy.json]

Development images (never the test defects):

- ELPV mono: the 44 validation normals, the 147 test normals, and those test normals with the
  hard synthetic defects of the recipe ablation's development set (``ffcore.synthetic.
  hard_defect_batch``, seed 777, 3 strengths: 441 images), drawn at the cells' own 300x300;
- DeepPCB (with ``--deeppcb-model``, a model trained on its train/good): its test split, which
  its README names a development set (good boards and the same boards with real defects).

Each image is upscaled (bicubic) to a camera frame of 1, 2 or 5 megapixels, JPEG-encoded at
quality 90, then scored twice by ffrt: decoded whole in colour, as ``Detector(path)`` reads a
file (``ffrt.preprocess.read_image_file``), and as ``ffrt run`` reads it by default
(``FrameDecoder(reduced=True)``: at 1/2, 1/4 or 1/8, the factor ``ffrt.line.decode.reduction``
picks; a luma model's JPEG as its Y plane). Reported per set and size: the largest score difference (absolute and as a
share of the image threshold), the 99th percentile, and every verdict that flips at the stored
threshold; beside it, for scale, the same figures between the frame at JPEG quality 90 and at
95, both decoded whole (the codec's own noise).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import line_streams  # noqa: E402

ROOT = HERE.parent
#: The JPEG quality whose whole decode is the codec-noise reference beside every row.
CODEC_REFERENCE = 95


def elpv_dev() -> tuple[list[np.ndarray], list[str]]:
    """ELPV mono development images (BGR, 300x300) and what each is."""
    from ffcore import synthetic
    from ffcore.data import elpv

    split = elpv("mono")
    val = [cv2.imread(str(s.path), cv2.IMREAD_COLOR) for s in split.val]
    normals = [cv2.imread(str(s.path), cv2.IMREAD_COLOR) for s in split.test if s.label == 0]
    defects, _, strengths = synthetic.hard_defect_batch(np.stack(normals), seed=777)
    names = ([f"val normal {i}" for i in range(len(val))] + [f"test normal {i}" for i in range(len(normals))]
             + [f"test normal {i % len(normals)} + synthetic defect (strength {s})" for i, s in enumerate(strengths)])
    return val + normals + list(defects), names


def deeppcb_dev(limit: int | None) -> tuple[list[np.ndarray], list[str]]:
    root = line_streams.DEEPPCB / "test"
    paths = []
    for kind in ("good", "defect"):
        paths += sorted((root / kind).glob("*.png"))[:limit]
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths], [f"{p.parent.name}/{p.name}" for p in paths]


def compare(model: Path, images: list[np.ndarray], names: list[str], megapixels: int, threads: int | None) -> dict:
    """Scores of every image as a JPEG frame of ``megapixels``, decoded whole and reduced."""
    from ffrt import Detector
    from ffrt.line.decode import FrameDecoder, reduction
    from ffrt.preprocess import read_image_file

    size = line_streams.SIZES[megapixels]
    full_scores, reduced_scores, codec_scores = [], [], []
    with Detector(model, threads=threads) as det, tempfile.TemporaryDirectory(prefix="reduced-decode-") as tmp:
        def whole(path):
            return read_image_file(path, det.limits, det.meta.input)

        reduced = FrameDecoder(det.limits, det.meta.input, True)
        factor = reduction((size[1], size[0]), (det.meta.input.height, det.meta.input.width))
        for start in range(0, len(images), 8):
            paths, other = [], []
            for i, image in enumerate(images[start : start + 8]):
                path = Path(tmp) / f"{start + i}.jpg"
                frame = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
                cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, line_streams.JPEG_QUALITY])
                paths.append(path)
                other.append(cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, CODEC_REFERENCE])[1],
                                          cv2.IMREAD_COLOR))
            full_scores += [r.score for r in det.predict_batch([whole(p) for p in paths])]
            reduced_scores += [r.score for r in det.predict_batch([reduced(p) for p in paths])]
            codec_scores += [r.score for r in det.predict_batch(other)]
        threshold = det.thresholds.image
    a, b, c = np.asarray(full_scores), np.asarray(reduced_scores), np.asarray(codec_scores)
    diff = np.abs(a - b)
    flips = [{"image": names[i], "full": float(a[i]), "reduced": float(b[i])}
             for i in np.flatnonzero((a > threshold) != (b > threshold))]
    near = np.abs(a - threshold)
    codec = np.abs(a - c)
    return {"megapixels": megapixels, "frame": list(size), "factor": factor, "images": len(a),
            "threshold": threshold, "max_abs_diff": float(diff.max()), "p99_abs_diff": float(np.percentile(diff, 99)),
            "max_diff_over_threshold": float(diff.max() / threshold), "flips": flips,
            "rejected_full": int((a > threshold).sum()), "rejected_reduced": int((b > threshold).sum()),
            "closest_to_threshold": float(near.min()),
            # The codec's own noise on the same frames, for scale: quality 90 against CODEC_REFERENCE,
            # both decoded whole.
            "codec": {"quality": [line_streams.JPEG_QUALITY, CODEC_REFERENCE], "max_abs_diff": float(codec.max()),
                      "p99_abs_diff": float(np.percentile(codec, 99)),
                      "flips": int(((a > threshold) != (c > threshold)).sum())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "demo" / "model.onnx", help="the ELPV mono model")
    ap.add_argument("--deeppcb-model", type=Path, default=None, help="a model trained on DeepPCB train/good")
    ap.add_argument("--deeppcb-limit", type=int, default=None, help="at most this many good and defect boards")
    ap.add_argument("--sizes", default="1,2,5")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "reduced-decode-accuracy.json")
    args = ap.parse_args(argv)
    from ffeval.machine import describe

    sizes = [int(v) for v in args.sizes.split(",")]
    sets = [("ELPV mono development images", args.model, *elpv_dev())]
    if args.deeppcb_model is not None:
        sets.append(("DeepPCB test split (development)", args.deeppcb_model, *deeppcb_dev(args.deeppcb_limit)))
    report = {"schema": "ffrt.reduced-decode-accuracy", "schema_version": 1,
              "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/reduced_decode_accuracy.py " + " ".join(sys.argv[1:]),
              "machine": describe(), "jpeg_quality": line_streams.JPEG_QUALITY, "sets": []}
    for what, model, images, names in sets:
        for mp in sizes:
            row = {"set": what, "model": str(model), **compare(model, images, names, mp, args.threads)}
            report["sets"].append(row)
            print(f"{what}, {mp} MP (1/{row['factor']}): {row['images']} images, max |diff| {row['max_abs_diff']:.4f} "
                  f"({100 * row['max_diff_over_threshold']:.2f}% of the threshold {row['threshold']:.4f}), p99 "
                  f"{row['p99_abs_diff']:.4f}, {len(row['flips'])} verdict flip(s); rejected {row['rejected_full']} "
                  f"whole / {row['rejected_reduced']} reduced; codec q90 vs q{CODEC_REFERENCE}: max |diff| "
                  f"{row['codec']['max_abs_diff']:.4f}, p99 {row['codec']['p99_abs_diff']:.4f}, "
                  f"{row['codec']['flips']} flip(s)", flush=True)
    report["flips_total"] = sum(len(r["flips"]) for r in report["sets"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"verdict flips in all: {report['flips_total']}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
