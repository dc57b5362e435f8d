"""ffeval: accuracy of an exported model on a test set, through ffrt (not torch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .evaluate import EvalError, evaluate


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ffeval",
        description=(
            "Evaluate an exported model (model.onnx) through ffrt.Detector on the test split of DATA: image "
            "AUROC, F1/precision/recall and confusion matrix at the model's stored threshold, per defect type; "
            "pixel AUROC and AUPRO where ground-truth masks exist. Writes metrics.json, roc.png, pro.png (with "
            "masks) and overlays.png (image | heat map | predicted mask | ground truth for the highest- and "
            "lowest-scoring defects and the highest-scoring normals)."
        ),
    )
    ap.add_argument("model", help="model.onnx exported by ffexport")
    ap.add_argument("--data", required=True,
                    help="MVTec-AD style folder (test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png) "
                         "or elpv:mono / elpv:poly (the demo split; image labels only)")
    ap.add_argument("--out", type=Path, default=None, help="folder for metrics.json and the PNGs (default: print only)")
    ap.add_argument("--html", type=Path, default=None,
                    help="also write the threshold review page here (one self-contained HTML file, e.g. OUT/review.html)")
    ap.add_argument("--pictures", type=int, default=None,
                    help="parts pictured on the review page, nearest the stored threshold first (default 240)")
    ap.add_argument("--backend", default="auto", help="ffrt backend (default auto)")
    ap.add_argument("--batch", type=int, default=8, help="images per inference call (default 8)")
    ap.add_argument("--examples", type=int, default=4, help="overlay rows per group (default 4)")
    ap.add_argument("--synthetic", action="store_true",
                    help="label every figure 'synthetic' (automatic when DATA has a SYNTHETIC.txt marker)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def format_report(r: dict) -> str:
    d, im, px = r["data"], r["image"], r["pixel"]
    c = d["counts"]
    syn = "  [SYNTHETIC defects on real normal images]" if d["synthetic"] else ""
    lines = [
        f"model {r['model']['path']} ({r['model']['backbone']}, {r['model']['input']}, {r['model']['precision']}) "
        f"via {r['model']['backend']}",
        f"data  {d['spec']}: test {c['test_normal']} normal + {c['test_defective']} defective{syn}",
        *[f"      note: {n}" for n in d["notes"]],
        f"image AUROC {im['auroc']:.4f}",
        f"at the stored threshold {im['threshold']:.4g} ({im['threshold_source'] or 'source not recorded'}): "
        f"F1 {im['f1_at_threshold']:.4f}, precision {im['precision_at_threshold']:.4f}, recall {im['recall_at_threshold']:.4f}",
        "confusion " + ", ".join(f"{k} {v}" for k, v in im["confusion_at_threshold"].items()),
        f"F1-max {im['f1_max_oracle']:.4f} at {im['f1_max_threshold_oracle']:.4g} (oracle: threshold chosen on the test set)",
    ]
    for t, v in r["per_defect_type"].items():
        lines.append(f"  {t:<14} n={v['count']:<4} AUROC vs normals {v['auroc_vs_all_normals']:.4f}  "
                     f"recall@thr {v['recall_at_threshold']:.3f}{'  (synthetic)' if d['synthetic'] else ''}")
    if px["available"]:
        lines.append(f"pixel AUROC {px['auroc']:.4f}, AUPRO@{px['aupro_fpr_limit']:g} {px['aupro']:.4f} "
                     f"({px['images']} images at {px['resolution']}){' (synthetic)' if d['synthetic'] else ''}")
    else:
        lines.append(f"pixel AUROC / AUPRO: not available ({px['reason']})")
    for k, v in r["files"].items():
        lines.append(f"wrote {k}: {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda s: None) if args.quiet else (lambda s: print(f"ffeval: {s}", file=sys.stderr, flush=True))
    try:
        if args.batch < 1 or args.examples < 0 or (args.pictures is not None and args.pictures < 0):
            raise EvalError(f"--batch must be >= 1, --examples and --pictures >= 0 (got {args.batch}, {args.examples}, "
                            f"{args.pictures})")
        report = evaluate(args.model, args.data, args.out, backend=args.backend, batch_size=args.batch,
                          per_group=args.examples, synthetic=True if args.synthetic else None, progress=say,
                          command=["ffeval"] + (list(argv) if argv is not None else sys.argv[1:]), html=args.html,
                          pictures=args.pictures)
        print(format_report(report))
    except EvalError as e:
        print(f"ffeval: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ffeval: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        print(f"ffeval: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
