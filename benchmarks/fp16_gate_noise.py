"""The FP16 gate's noise reference on real models: correct FP16 files against deliberately wrong ones.

For each model folder (an ffexport output with model.onnx and model.fp16.onnx, and the data the
checkpoint was trained on): the gate's validation images (held-out training normals + synthetic
defects drawn on them; never the test split), the model's FP16 noise (ffexport.fp16_gate.
ideal_fp16_storage, from the FP32 file alone), and the largest score error in units of that noise
for the genuine FP16 file and for copies with the first FP16 backbone convolution's weights scaled
by 1.005, 1.01, 1.02, 1.05 and 1.1 (a conversion bug), each with the score and map errors in units of
the model's FP16 noise, the gate's verdict and the verdicts
changed at the stored threshold (all, and outside the noise band).

    python benchmarks/fp16_gate_noise.py DIR [DIR ...] [--data SPEC ...]

DIR/model.pt must exist (its training data are read from it unless --data gives one per DIR).
Prints the table with the machine and writes benchmarks/results/fp16-gate-noise.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FACTORS = (1.005, 1.01, 1.02, 1.05, 1.1)


def wrong_copy(fp16: Path, factor: float, out: Path) -> Path:
    """model.fp16.onnx with the first FP16 backbone convolution's weights scaled by ``factor``."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(fp16))
    weights = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and weights.get(n.input[1]) is not None
                and weights[n.input[1]].data_type == TensorProto.FLOAT16)
    w = weights[conv.input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float16(factor), w.name))
    onnx.save(model, str(out))
    return out


def measure(folder: Path, data: str | None, count: int) -> dict:
    from ffcalib.images import gate_set
    from ffexport.fp16_gate import compare
    from ffrt.metafile import read_onnx_meta
    from fftrain import checkpoint

    fp32, fp16 = folder / "model.onnx", folder / "model.fp16.onnx"
    data = data or checkpoint.load_payload(folder / "model.pt").get("train_info", {}).get("data")
    meta = read_onnx_meta(fp32)
    _, images, labels, what = gate_set(str(data), meta.input, val_count=count, progress=False)
    images, labels = np.asarray(images), np.asarray(labels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (None, *FACTORS):
            path = fp16 if factor is None else wrong_copy(fp16, factor, Path(tmp) / f"x{factor}.onnx")
            r = compare(fp32, path, images, labels, Path(tmp), data=what)
            rows.append({"file": "genuine FP16" if factor is None else f"backbone weight x{factor}",
                         "noise": r.noise, "score_max_abs": r.score_max_abs, "noise_ratio": r.noise_ratio,
                         "map_rel": r.map_max_rel, "map_noise_ratio": (r.map_max_abs / r.map_noise if r.map_noise else None),
                         "departure": r.departure, "map_departure": r.map_departure, "spearman": r.spearman, "auroc_diff": r.auroc_diff,
                         "verdicts_changed": r.verdict_flips, "counted": r.counted_flips, "gate": "OK" if r.ok else "FAILED"})
    name = folder.parent.name if folder.name == "out" else folder.name
    return {"model": name, "data": what, "input": [meta.input.height, meta.input.width],
            "backbone": meta.backbone.name, "images": int(len(images)), "rows": rows}


def table(results: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "", "| model (validation data) | FP16 file | score noise | score error / noise | map "
             "error (rel. peak) | map error / map noise | departure from exact FP16 (score, map) / noise | verdicts "
             "changed (counted) | gate |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"| {res['model']} {res['input'][0]}x{res['input'][1]} ({res['images']} images) | "
                         f"{r['file']} | {r['noise']:.3g} | {r['noise_ratio']:.2f}x | {r['map_rel']:.2%} | "
                         f"{r['map_noise_ratio']:.2f}x | {r['departure']:.2f}x, {r['map_departure']:.2f}x | "
                         f"{r['verdicts_changed']} ({r['counted']}) | {r['gate']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--data", nargs="*", help="the training data of each folder (default: read from its model.pt)")
    p.add_argument("--images", type=int, default=32, help="held-out normals per model, each also with a defect (default 32)")
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line

    machine = describe()
    summary = one_line(machine)
    datas = args.data or [None] * len(args.folders)
    results = [measure(f, d, args.images) for f, d in zip(args.folders, datas)]
    text = table(results, summary)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fp16-gate-noise.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    (RESULTS / "fp16-gate-noise.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
