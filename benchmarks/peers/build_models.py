"""Build and export the two ResNet-18 FastFlows the peers benchmark compares (runs in the peers venv).

One configuration for both, the FastFlow paper's / anomalib's reference: ResNet-18 features at
strides 4, 8 and 16, 8 coupling steps per scale, 3x3 subnets only, subnet hidden channels =
1.0 x the subnet's input channels, 256x256 input.

- anomalib: ``anomalib.models.Fastflow`` with the backbone's ImageNet weights OFF
  (``pre_trained=False``: timm then builds the network without touching the network), exported
  the way anomalib's users do: ``model.to_onnx`` (torch.onnx dynamo exporter, dynamic batch)
  and ``model.to_openvino`` (ONNX -> ``ov.convert_model`` -> ``ov.save_model``, no
  compression). Random weights change neither the arithmetic nor the time.
- ffrt: the same architecture built by ffrt's trainer (``fftrain``, ``random_backbone=True``,
  trained one epoch on 48 ELPV mono cells so the head has statistics to normalize with), and
  exported by ``ffexport`` (its parity check included).

Every file goes to ``--work`` (default ``runs/peers``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

#: The reference configuration (the issue's table): both builds use exactly these.
IMAGE_SIZE = (256, 256)
FLOW_STEPS = 8
HIDDEN_RATIO = 1.0
CONV3X3_ONLY = True
BACKBONE = "resnet18"
SEED = 0
#: The largest batch the timing uses (ffexport's --batch-max; anomalib's export is dynamic).
BATCH_MAX = 8


def anomalib_model():
    """anomalib's Fastflow in eval mode, deterministic random weights (seeded)."""
    import torch
    from anomalib.models import Fastflow

    torch.manual_seed(SEED)
    model = Fastflow(backbone=BACKBONE, pre_trained=False, flow_steps=FLOW_STEPS, conv3x3_only=CONV3X3_ONLY,
                     hidden_ratio=HIDDEN_RATIO, evaluator=False, visualizer=False)
    if tuple(model.input_size) != IMAGE_SIZE:
        raise SystemExit(f"anomalib's Fastflow input is {tuple(model.input_size)}, expected {IMAGE_SIZE}")
    return model.eval()


def anomalib_paths(work: Path) -> dict[str, Path]:
    root = work / "anomalib"
    return {"root": root, "state": root / "fastflow_state.pt", "onnx": root / "weights" / "onnx" / "model.onnx",
            "openvino": root / "weights" / "openvino" / "model.xml"}


def ffrt_paths(work: Path) -> dict[str, Path]:
    root = work / "ffrt_resnet18"
    return {"root": root, "ckpt": root / "model.pt", "onnx": root / "model.onnx",
            "int8": root / "int8" / "model.int8-cpu.onnx"}


def build_anomalib(work: Path, log=print) -> dict:
    import torch

    paths = anomalib_paths(work)
    model = anomalib_model()
    paths["root"].mkdir(parents=True, exist_ok=True)
    # The eager comparison rebuilds the model from this state (same weights as the exports).
    torch.save(model.state_dict(), paths["state"])
    t0 = time.perf_counter()
    onnx_path = model.to_onnx(paths["root"], input_size=IMAGE_SIZE)
    t1 = time.perf_counter()
    ov_path = model.to_openvino(paths["root"], input_size=IMAGE_SIZE)
    t2 = time.perf_counter()
    if Path(onnx_path) != paths["onnx"] or Path(ov_path) != paths["openvino"]:
        raise SystemExit(f"anomalib wrote {onnx_path} / {ov_path}, not where this script looks: {paths}")
    flow_params = sum(p.numel() for p in model.model.fast_flow_blocks.parameters())
    log(f"anomalib: {onnx_path} ({t1 - t0:.0f} s), {ov_path} ({t2 - t1:.0f} s); flow parameters {flow_params}")
    return {"onnx": str(onnx_path), "openvino": str(ov_path), "flow_parameters": flow_params}


def build_ffrt(work: Path, log=print) -> dict:
    from ffexport.cli import main as ffexport_main
    from fftrain.config import ModelConfig
    from fftrain.data import resolve
    from fftrain.train import TrainSettings, train_and_save

    paths = ffrt_paths(work)
    paths["root"].mkdir(parents=True, exist_ok=True)
    config = ModelConfig(backbone=BACKBONE, random_backbone=True, image_size=IMAGE_SIZE, flow_steps=FLOW_STEPS,
                         hidden_ratio=HIDDEN_RATIO, conv3x3_only=CONV3X3_ONLY, seed=SEED)
    split = resolve("elpv:mono")
    split.train, split.val = split.train[:48], split.val[:12]  # enough for one epoch and the head's statistics
    t0 = time.perf_counter()
    result = train_and_save(config, split, TrainSettings(epochs=1, batch_size=16, augment_views=0, threads=2,
                                                         progress=False),
                            paths["ckpt"], log=lambda _: None)
    t1 = time.perf_counter()
    rc = ffexport_main(["--ckpt", str(paths["ckpt"]), "--out", str(paths["root"]), "--batch-max", str(BATCH_MAX)])
    if rc != 0:
        raise SystemExit(f"ffexport failed (exit {rc}) on {paths['ckpt']}")
    # The INT8 file auto would run on a VNNI or AMX CPU (every convolution INT8, each head re-fit
    # on its INT8 backbone). The backbone's weights are random, so its accuracy gate means
    # nothing here (--force writes it); the arithmetic and the time are those of a real one.
    t2 = time.perf_counter()
    rc = ffexport_main(["--ckpt", str(paths["ckpt"]), "--out", str(paths["int8"].parent), "--batch-max",
                        str(BATCH_MAX), "--int8", "--int8-scope", "all", "--calib", "elpv:mono", "--calib-count", "32",
                        "--refit-epochs", "1", "--force"])
    if rc != 0:
        raise SystemExit(f"ffexport --int8 failed (exit {rc}) on {paths['ckpt']}")
    log(f"ffrt: {paths['int8']} ({time.perf_counter() - t2:.0f} s)")
    flow_params = sum(p.numel() for p in result.model.flows.parameters())
    log(f"ffrt: {paths['ckpt']} ({t1 - t0:.0f} s), {paths['onnx']} ({time.perf_counter() - t1:.0f} s); "
        f"flow parameters {flow_params}")
    return {"checkpoint": str(paths["ckpt"]), "onnx": str(paths["onnx"]), "flow_parameters": flow_params,
            "hidden_channels": list(result.model.config.flow_hidden_channels)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--only", choices=["anomalib", "ffrt"], help="build one side only")
    args = p.parse_args(argv)
    # Nothing may come from a model hub: an accidental pretrained=True fails at once instead
    # of waiting on a network this machine does not have.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    summary_path = args.work / "models.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if args.only in (None, "anomalib"):
        summary["anomalib"] = build_anomalib(args.work)
    if args.only in (None, "ffrt"):
        summary["ffrt_resnet18"] = build_ffrt(args.work)
    summary["configuration"] = {"backbone": BACKBONE, "image_size": list(IMAGE_SIZE), "flow_steps": FLOW_STEPS,
                                "hidden_ratio": HIDDEN_RATIO, "conv3x3_only": CONV3X3_ONLY, "seed": SEED,
                                "weights": "random (anomalib: pre_trained=False; ffrt: --random-backbone, "
                                           "flows trained 1 epoch on 48 ELPV mono cells)"}
    summary_path.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
