"""fftrain: learn what good parts look like, from normal images only.

    fftrain --data DIR --out model.pt                 (MVTec-AD style folder)
    fftrain --data elpv:mono --out model.pt           (the ELPV demo data, pip install 'ffrt[demo]')
    fftrain --data DIR --out model.pt --model cflow   (CFLOW-AD instead of FastFlow: docs/cflow.md)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
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
    from ffcore.modelkinds import MODEL_KINDS

    from .config import FLOW_STEPS, ModelConfig
    from .kinds import KINDS
    from .train import TrainSettings

    d = ModelConfig()
    p = argparse.ArgumentParser(
        prog="fftrain",
        description="Train an anomaly detector (FastFlow or CFLOW-AD) on normal images. Writes a checkpoint (model.pt) "
        "that ffexport turns into an ONNX model; default thresholds come from held-out normal images.",
    )
    p.add_argument("--data", required=True,
                   help="MVTec-AD style folder (train/good, optional test/<type>, ground_truth/<type>) "
                   "or elpv:mono / elpv:poly")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (written atomically)")
    p.add_argument("--model", choices=MODEL_KINDS, default=d.model,
                   help="the density model on the backbone's features: fastflow (default; 2D flows of 3x3 couplings) "
                   "or cflow (CFLOW-AD: 1x1 couplings conditioned on the position; docs/cflow.md)")
    p.add_argument("--backbone", default=d.backbone,
                   help="efficientnet_lite0 (default), efficientnet_lite1, efficientnet_lite2 (Lite weights ship "
                   "with pip), resnet18, wide_resnet50_2")
    p.add_argument("--backbone-weights", help="ImageNet weights file for resnet18 / wide_resnet50_2 "
                   "(default: the torch hub cache; never downloaded)")
    p.add_argument("--random-backbone", action="store_true",
                   help="random backbone weights: for tests and benchmarks only (recorded in the model)")
    p.add_argument("--image-size", nargs="+", default=["auto"], metavar="SIZE",
                   help="model input: 'auto' (default: the training images' median aspect ratio at about "
                   f"{d.height}x{d.width} pixels, so non-square parts are not squashed), one side (square), "
                   "'H W' or 'HxW'; multiples of 16")
    p.add_argument("--resize-mode", choices=["stretch", "letterbox"], default=d.resize_mode,
                   help="how a frame becomes the model input: stretch it to the model size (default), or keep "
                   "its aspect ratio and pad (letterbox); the runtime does the same")
    p.add_argument("--epochs", type=positive_int, default=TrainSettings.epochs,
                   help=f"training epochs; the best validation epoch is kept (default {TrainSettings.epochs})")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="training maps per optimizer step (default: "
                   + ", ".join(f"{k} {v.maps_per_step}" for k, v in KINDS.items()) + ")")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate, cosine-decayed (default: the model's paper: "
                   + ", ".join(f"{k} {v.learning_rate:g}" for k, v in KINDS.items()) + ")")
    p.add_argument("--positions-per-step", type=positive_int, default=None,
                   help="cflow: feature vectors drawn per scale from each step's training maps (default "
                   f"{KINDS['cflow'].positions_per_step})")
    p.add_argument("--condition-channels", type=int, default=d.condition_channels,
                   help=f"cflow: channels of the positional encoding (a multiple of 4; default {d.condition_channels})")
    p.add_argument("--flow-steps", type=int, default=None,
                   help="coupling steps per scale (default: " + ", ".join(f"{k} {v}" for k, v in FLOW_STEPS.items()) + ")")
    p.add_argument("--hidden-ratio", type=float, default=d.hidden_ratio,
                   help="subnet hidden channels / subnet input channels (half the feature channels), the "
                   f"paper's ratio (default {d.hidden_ratio})")
    p.add_argument("--conv3x3-only", action=argparse.BooleanOptionalAction, default=None,
                   help="fastflow: 3x3 kernels in every subnet (default); --no-conv3x3-only alternates 3x3 and 1x1")
    p.add_argument("--feature-pooling", type=int, default=d.feature_pooling, metavar="K",
                   help="each feature scale averaged over K x K neighbouring cells before its flow (odd; 3 = PatchCore's "
                   "local aggregation): on the accuracy suite it raised large soft unevenness and ELPV mono and "
                   "lowered ELPV poly and DeepPCB (benchmarks/README.md); default "
                   f"{d.feature_pooling} = none")
    p.add_argument("--map-normalization", choices=["none", "scale", "position"], default=d.map_normalization,
                   help="standardize each feature scale's map by what normal training images show: not at all, "
                   f"per scale, or per position (default {d.map_normalization})")
    p.add_argument("--map-blur-sigma", type=float, default=d.map_blur_sigma,
                   help=f"Gaussian smoothing of the fused map, in input pixels; 0 = none (default {d.map_blur_sigma:g})")
    p.add_argument("--augment-views", type=int, default=TrainSettings.augment_views,
                   help="re-exposed views (gain, gamma, offset, noise, small shifts) of every training image, cached "
                   f"with the originals, so exposure changes read as normal; 0 = none (default {TrainSettings.augment_views})")
    p.add_argument("--input-color", choices=["auto", "rgb", "luma"], default="auto",
                   help="what the model reads: luma (BT.601 luminance only, so colour noise from a codec or camera "
                   "is ignored), rgb (all three channels), or auto: luma when every training image is grey (default)")
    p.add_argument("--augment-jpeg", type=float, default=TrainSettings.augment_jpeg,
                   help="share of the augmented views that also pass through JPEG at quality 50-95, so that the "
                   "artefacts of a camera's MJPEG stream or of frames saved as JPEG do not read as defects when the "
                   "training images were lossless (e.g. 0.5); it also makes blur-like defects harder to see, so "
                   "prefer training on frames recorded the way the line records them "
                   f"(default {TrainSettings.augment_jpeg:g}: none)")
    p.add_argument("--memory-bank", choices=["auto", "on", "off"], default=d.memory_bank,
                   help="a memory bank of the normal parts' stride-16 patches beside the flows, its nearest-patch "
                   "distance weighted into the image score, and each patch's into the anomaly map: auto (default) "
                   "each where it separates (score) or localizes (map) the validation normals' synthetic defects "
                   "better than the flows alone, on (both, in any case), or off")
    p.add_argument("--score", choices=["topk_mean", "max"], default=d.score_reduction,
                   help="image score from the map: mean of the top-k pixels (default) or the max")
    p.add_argument("--score-strides", type=int, nargs="+", default=None, metavar="STRIDE",
                   help="feature strides whose maps give the image score (the map always fuses 4, 8 and 16); "
                   "default: 8 16 for fastflow, 4 8 16 for cflow")
    p.add_argument("--topk-fraction", type=float, default=d.topk_fraction,
                   help=f"share of pixels averaged by topk_mean (default {d.topk_fraction})")
    p.add_argument("--target-frr", type=float, default=0.02,
                   help="false-reject rate on new normals the default thresholds aim at, in (0, 1), set on the validation "
                   "normals; the output prints its interval and how many more normals the target needs (default 0.02)")
    p.add_argument("--threshold-folds", type=int, default=0, metavar="K",
                   help="also calibrate the thresholds on every training image, each scored by one of K models "
                   "trained on the other folds (K >= 2; about K - 1 extra trainings of the flows): with few "
                   "validation normals the false-reject rate then holds far more often (default 0: validation "
                   "normals only)")
    p.add_argument("--val-every", type=int, default=10,
                   help="every N-th normal training image is held out for validation (default 10)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--memory-budget", dest="memory_budget_gib", type=float, default=None, metavar="GIB",
                   help="memory training may use, in GiB (default: what the machine has available when it starts); "
                   "training refuses at once, before reading images, when its feature cache needs more")
    p.add_argument("--seed", type=int, default=0, help="seed for flow permutations, shuffling and synthetic defects")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _same_named(fields, args, **special) -> dict:
    """The settings of a config whose command-line option has the field's name, plus
    ``special`` (options named or shaped otherwise); a None in ``special`` leaves the field's default."""
    chosen = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    chosen.update(special)
    return {k: v for k, v in chosen.items() if v is not None or k not in special}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from ffcore.memory import NotEnoughMemoryError

    from .backbones import BackboneWeightsError
    from .config import ModelConfig
    from .data import DataError, auto_image_size, downscale_note, resolve
    from .train import TrainSettings, train_and_save

    try:
        config = ModelConfig(**_same_named(
            ModelConfig.model_fields, args,
            image_size=ModelConfig().image_size if args.image_size == ["auto"] else "x".join(args.image_size),
            input_color=None if args.input_color == "auto" else args.input_color,
            score_reduction=args.score,
            # conv3x3_only only when given: its default depends on the model (config.py).
            conv3x3_only=args.conv3x3_only,
            score_strides=args.score_strides,  # only when given: its default depends on the model
            flow_steps=args.flow_steps,  # likewise
        ))
        settings = TrainSettings(**_same_named([f.name for f in fields(TrainSettings)], args, progress=not args.quiet))
        split = resolve(args.data, args.val_every)
        if args.image_size == ["auto"]:
            config = config.model_copy(update={"image_size": auto_image_size(split.train, config.height * config.width)})
            ModelConfig.model_validate(config.model_dump())
            print(f"model input {config.height}x{config.width} (auto: the training images' aspect ratio)")
        counts = split.counts()
        print(f"data {split.name}: {counts['train']} train, {counts['val']} validation normals")
        for note in split.notes + [n for n in [downscale_note(split.train, config.image_size)] if n]:
            print(f"  note: {note}")
        train_and_save(config, split, settings, args.out, args.backbone_weights)
    except ValidationError as e:
        first = e.errors()[0]
        if first["loc"]:
            print(f"fftrain: error: --{first['loc'][0]}: {first['msg']}".replace("_", "-"), file=sys.stderr)
        else:  # a rule between options (config.py's model validators) names them in its message
            print(f"fftrain: error: {first['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    except (DataError, BackboneWeightsError, NotEnoughMemoryError, ValueError, OSError) as e:
        print(f"fftrain: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
