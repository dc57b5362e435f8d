"""Prepare, on any CPU machine, what the GPU checks need, so a borrowed GPU spends its minutes on GPU work.

    python scripts/gpu/bundle.py --ckpt runs/demo/model.pt --out gpu-bundle [--images N] [--no-int8]

Writes into OUT (each file's sha256 in OUT/manifest.json):

* models/model.onnx, model.fp16.onnx, model.int8-trt.onnx: ffexport's own files (FP16 and INT8
  through their gates), batch up to 32;
* images.npy: N real images at the model size (the checkpoint's validation images, never test data);
* reference/<file>.npz: ONNX Runtime CPU maps and scores of each file on those images, the
  parity references of check_tensorrt.py;
* model.pt: the checkpoint, for check_cuda.py's PyTorch eager reference;
* site/: pydantic for CPython 3.12 (``--site-python``), unpacked from PyPI wheels: a bare CUDA
  machine with PyTorch may lack it, and fftrain's configuration needs it.

Needs the train extra (PyTorch) and the checkpoint's training data on this machine (the FP16 and
INT8 gates run on its held-out normals). Exit code 0 when everything was written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steps import machine, use_checkout  # noqa: E402

#: Batch range of the bundle's models (the engines' profile: batch 1/8/32 are timed).
BATCH_MAX = 32
#: pydantic and what it needs, as this machine has them (the same versions travel).
SITE_DISTS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_models(ckpt: Path, models: Path, int8: bool) -> list[Path]:
    from ffexport.cli import main as ffexport

    base = ["--ckpt", str(ckpt), "--out", str(models), "--batch-max", str(BATCH_MAX)]
    if ffexport(base + ["--fp16"]) != 0:
        raise SystemExit("bundle: ffexport --fp16 failed (its message above); nothing more is written")
    files = [models / "model.onnx", models / "model.fp16.onnx"]
    if int8:
        if ffexport(base + ["--int8"]) != 0:
            raise SystemExit("bundle: ffexport --int8 failed (its message above); run with --no-int8 to skip INT8")
        files.append(models / "model.int8-trt.onnx")
        (models / "model.int8-cpu.onnx").unlink(missing_ok=True)  # not for TensorRT
    return files


def validation_images(ckpt: Path, count: int, size: tuple[int, int]):
    from fftrain import checkpoint
    from fftrain.data import Sample, load_batch

    payload = checkpoint.load_payload(ckpt)
    paths = [Path(p) for p in payload.get("train_info", {}).get("parity_images", [])]
    paths = [p for p in paths if p.is_file()][:count]
    if not paths:
        raise SystemExit(f"bundle: the validation images recorded in {ckpt} are not on this machine")
    return load_batch([Sample(p, 0) for p in paths], size)


def references(files: list[Path], images, out: Path) -> None:
    import numpy as np
    from ffexport.fp16_gate import run_cpu

    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        maps, scores = run_cpu(path, images)
        np.savez_compressed(out / f"{path.stem}.npz", maps=maps, scores=scores)


def python_site(target: Path, python: str) -> str:
    """Unpack this machine's pydantic versions as CPython ``python`` wheels into ``target``."""
    import importlib.metadata as md

    pins = [f"{d}=={md.version(d)}" for d in SITE_DISTS]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               "--python-version", python, "--implementation", "cp", "--platform",
                               "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any",
                               "-d", tmp, *pins], capture_output=True, text=True)
        if proc.returncode != 0:
            return f"not written (pip download failed: {' '.join(proc.stderr.split()[-20:])})"
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(target)
    return ", ".join(pins)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True, help="a checkpoint written by fftrain")
    p.add_argument("--out", type=Path, required=True, help="the bundle folder (replaced)")
    p.add_argument("--images", type=int, default=16, help="validation images for the parity references (default 16)")
    p.add_argument("--no-int8", action="store_true", help="no INT8 file (it needs the training data for its gate)")
    p.add_argument("--site-python", default="3.12", help="CPython version of the GPU host for site/ ('' = none)")
    args = p.parse_args(argv)
    use_checkout()
    from ffrt.metafile import read_onnx_meta

    if args.out.exists():
        shutil.rmtree(args.out)
    models = args.out / "models"
    files = export_models(args.ckpt, models, not args.no_int8)
    meta = read_onnx_meta(files[0])
    images = validation_images(args.ckpt, args.images, (meta.input.height, meta.input.width))
    import numpy as np

    np.save(args.out / "images.npy", images)
    references(files, images, args.out / "reference")
    shutil.copy2(args.ckpt, args.out / "model.pt")
    site = python_site(args.out / "site", args.site_python) if args.site_python else "not requested"
    import onnxruntime

    listed = sorted(f for f in args.out.rglob("*") if f.is_file() and "site" not in f.relative_to(args.out).parts)
    manifest = {
        "models": {f.name: {"precision": read_onnx_meta(f).precision} for f in files},
        "input": [meta.input.height, meta.input.width], "batch_max": BATCH_MAX, "images": int(len(images)),
        "references": f"onnxruntime {onnxruntime.__version__} CPU", "site": site, "prepared_on": machine(),
        "files": {str(f.relative_to(args.out)): {"sha256": _sha256(f), "bytes": f.stat().st_size} for f in listed},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    cuda_part = sum(f.stat().st_size for f in [args.out / "model.pt", args.out / "images.npy"])
    cuda_part += sum(f.stat().st_size for f in (args.out / "site").rglob("*") if f.is_file())
    print(f"bundle: {args.out} ({total / 1e6:.1f} MB; check_cuda.py reads {cuda_part / 1e6:.1f} MB of it): "
          f"{', '.join(f.name for f in files)}, {len(images)} images, references on {manifest['references']}; "
          f"site: {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
