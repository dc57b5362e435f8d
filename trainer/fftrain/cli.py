"""fftrain: learn what good parts look like, from normal images only.

    fftrain --data DIR --out model.pt                 (MVTec-AD style folder)
    fftrain --data elpv:mono --out model.pt           (the ELPV demo data, pip install 'ffrt[demo]')
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .config import FastFlowConfig

    d = FastFlowConfig()
    p = argparse.ArgumentParser(
        prog="fftrain",
        description="Train a FastFlow anomaly detector on normal images. Writes a checkpoint (model.pt) that "
        "ffexport turns into an ONNX model; default thresholds come from held-out normal images.",
    )
    p.add_argument("--data", required=True,
                   help="MVTec-AD style folder (train/good, optional test/<type>, ground_truth/<type>) "
                   "or elpv:mono / elpv:poly")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (written atomically)")
    p.add_argument("--backbone", default=d.backbone,
                   help="efficientnet_lite0 (default; weights ship with pip), resnet18, wide_resnet50_2")
    p.add_argument("--backbone-weights", help="ImageNet weights file for resnet18 / wide_resnet50_2 "
                   "(default: the torch hub cache; never downloaded)")
    p.add_argument("--random-backbone", action="store_true",
                   help="random backbone weights: for tests and benchmarks only (recorded in the model)")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"square model input, multiple of 16 (default {d.image_size})")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs; the best validation epoch is kept (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per optimizer step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-decayed (default 1e-3)")
    p.add_argument("--flow-steps", type=int, default=d.flow_steps, help=f"coupling steps per scale (default {d.flow_steps})")
    p.add_argument("--hidden-ratio", type=float, default=d.hidden_ratio,
                   help=f"subnet hidden channels / feature channels (default {d.hidden_ratio})")
    p.add_argument("--conv3x3-only", action=argparse.BooleanOptionalAction, default=d.conv3x3_only,
                   help="3x3 kernels in every subnet (default); --no-conv3x3-only alternates 3x3 and 1x1")
    p.add_argument("--score", choices=["topk_mean", "max"], default=d.score_reduction,
                   help="image score from the map: mean of the top-k pixels (default) or the max")
    p.add_argument("--topk-fraction", type=float, default=d.topk_fraction,
                   help=f"share of pixels averaged by topk_mean (default {d.topk_fraction})")
    p.add_argument("--target-frr", type=float, default=0.02,
                   help="false-reject rate on validation normals that sets the default thresholds (default 0.02)")
    p.add_argument("--val-every", type=int, default=10,
                   help="every N-th normal training image is held out for validation (default 10)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed for flow permutations, shuffling and synthetic defects")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from .backbones import BackboneWeightsError
    from .config import FastFlowConfig
    from .data import DataError, resolve
    from .train import TrainSettings, train_and_save

    try:
        config = FastFlowConfig(
            backbone=args.backbone,
            random_backbone=args.random_backbone,
            image_size=args.image_size,
            flow_steps=args.flow_steps,
            hidden_ratio=args.hidden_ratio,
            conv3x3_only=args.conv3x3_only,
            score_reduction=args.score,
            topk_fraction=args.topk_fraction,
            seed=args.seed,
        )
        settings = TrainSettings(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            target_frr=args.target_frr,
            threads=args.threads,
            progress=not args.quiet,
        )
        split = resolve(args.data, args.val_every)
        counts = split.counts()
        print(f"data {split.name}: {counts['train']} train, {counts['val']} validation normals")
        for note in split.notes:
            print(f"  note: {note}")
        train_and_save(config, split, settings, args.out, args.backbone_weights)
    except ValidationError as e:
        first = e.errors()[0]
        print(f"fftrain: error: --{first['loc'][0]}: {first['msg']}".replace("_", "-"), file=sys.stderr)
        return 2
    except (DataError, BackboneWeightsError, ValueError, OSError) as e:
        print(f"fftrain: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
