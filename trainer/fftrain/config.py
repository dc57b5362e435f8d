"""Model configuration: everything needed to rebuild a model (any kind: fftrain.kinds) from a checkpoint."""

from __future__ import annotations

import re
from typing import Literal

from ffcore.modelkinds import DEFAULT_MODEL_KIND, MODEL_KINDS
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .backbones import BACKBONES, FEATURE_STRIDES

MIN_SIDE, MAX_SIDE = 32, 1024
#: FastFlow's image score: strides 8 and 16 (stride 4 still in the returned map).
FASTFLOW_SCORE_STRIDES = (8, 16)
#: Coupling steps per scale of each kind when a config does not name them: FastFlow 4 (its
#: paper's 8 fitted DeepPCB's boards worse and the ELPV cells no better on the accuracy suite;
#: benchmarks/README.md), CFLOW-AD its paper's 8 (not measured otherwise).
FLOW_STEPS = {"fastflow": 4, "cflow": 8}


def parse_image_size(value: object) -> tuple[int, int]:
    """(height, width) from 256, "256", "256x320", (256, 320) or [256, 320].

    Old checkpoints stored one int for a square model; a line camera's parts are rarely
    square, so the size is a pair everywhere else.
    """
    if isinstance(value, bool):
        raise ValueError("image size must be a number of pixels, not a boolean")
    if isinstance(value, int):
        return value, value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?", value)
        if not m:
            raise ValueError(f"image size {value!r}: write SIDE or HEIGHTxWIDTH, e.g. 256 or 256x320")
        h = int(m.group(1))
        return h, int(m.group(2)) if m.group(2) else h
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"image size {value!r}: give one side or (height, width)")


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal[MODEL_KINDS] = Field(
        default=DEFAULT_MODEL_KIND,
        description="The density model on the backbone's features (fftrain.kinds): fastflow or cflow. Checkpoints "
        "written before there was a choice are fastflow.",
    )
    backbone: str = Field(default="efficientnet_lite0", description="Frozen ImageNet feature extractor.")
    random_backbone: bool = Field(default=False, description="Random backbone weights: tests and benchmarks only.")
    image_size: tuple[int, int] = Field(
        default=(256, 256), description="Model input (height, width); each a multiple of 16 in [32, 1024]."
    )
    resize_mode: Literal["stretch", "letterbox"] = Field(
        default="stretch",
        description="How a frame becomes the model input: stretch to the model size, or keep its aspect ratio "
        "and pad (letterbox). Recorded in the metadata; the runtime does the same.",
    )
    input_color: Literal["rgb", "luma"] | None = Field(
        default=None,
        description="rgb: the backbone sees the three colour channels as given. luma: it sees only the "
        "luminance (BT.601: 0.299 R + 0.587 G + 0.114 B, the Y that JPEG and MJPEG keep at full resolution) "
        "on all three channels, so colour noise in the input (a codec's subsampled chroma, a colour camera "
        "looking at a grey part) cannot read as a defect on a model trained on monochrome images. None: "
        "decided by the trainer from the training images (luma when every one is grey); a checkpoint always "
        "records the decision.",
    )
    flow_steps: int = Field(
        default=FLOW_STEPS[DEFAULT_MODEL_KIND], ge=1, le=32,
        description="Coupling steps per feature scale. Default: 4 for fastflow, 8 for cflow (FLOW_STEPS); checkpoints "
        "record theirs.",
    )
    hidden_ratio: float = Field(
        default=1.0, gt=0, le=8,
        description="Subnet hidden channels / subnet input channels: half the feature channels (fastflow, as in "
        "its paper), plus the condition channels (cflow).",
    )
    flow_hidden_channels: tuple[int, ...] | None = Field(
        default=None,
        description="Hidden channels of each scale's subnets, filled in when the model is built so that a "
        "checkpoint always rebuilds with the layer sizes it was trained with.",
    )
    conv3x3_only: bool = Field(
        default=True,
        description="fastflow: 3x3 kernels only (else 3x3/1x1 alternating). cflow's subnets are fully connected over "
        "channels (1x1): always False there.",
    )
    condition_channels: int = Field(
        default=128, ge=4, le=1024, multiple_of=4,
        description="cflow: channels of the 2D positional encoding each coupling is conditioned on (the paper's 128).",
    )
    clamp: float = Field(default=2.0, gt=0, description="Soft clamp of the coupling log-scales.")
    feature_pooling: int = Field(
        default=1, ge=1, le=7,
        description="Side of the local mean (stride 1, padding not counted) each scale's features pass through "
        "before its LayerNorm and decoder: 1 = none, 3 = PatchCore's 3x3 local aggregation. Odd.",
    )
    map_normalization: Literal["none", "scale", "position"] = Field(
        default="position",
        description="Standardize each scale's map by normal training images before fusing: none, per scale, "
        "or per position (fftrain.head explains).",
    )
    map_blur_sigma: float = Field(
        default=0.0, ge=0, le=16, description="Gaussian smoothing of the fused map, in input pixels (0 = none)."
    )
    score_strides: tuple[int, ...] = Field(
        default=FASTFLOW_SCORE_STRIDES,
        description="Feature strides whose standardized maps, fused like the anomaly map, give the image score (the "
        "returned map always fuses every stride). Default: 8 and 16 for fastflow (the suite's mean and worst set "
        "rose; benchmarks/README.md), all three for cflow; checkpoints written before the choice score from all.",
    )
    memory_bank: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="A memory bank of the normals' stride-16 patches beside the flows (fftrain.memory_bank): its "
        "largest nearest-patch distance, weighted, joins the image score. auto: where it separates the validation "
        "normals from their synthetic defects better than the flows alone; on: always, at its best weight; off: "
        "never. Its distance map joins the anomaly map the same way, by the pixel AUROC of the synthetic defects' "
        "masks. Checkpoints written before it have none.",
    )
    memory_bank_vectors: int = Field(default=0, ge=0, description="The trained bank's vectors (0: none); set by training.")
    memory_bank_weight: float = Field(
        default=0.0, ge=0, description="The bank's weight against the flows' score, both standardized by the "
        "validation normals (0: none); set by training.")
    memory_bank_map_weight: float = Field(
        default=0.0, ge=0, description="The weight of the bank's distance map in the anomaly map, against the "
        "flows' map, the bank's standardized by the validation normals' pixels (0: the flows' map alone); set by "
        "training.")
    score_reduction: Literal["max", "topk_mean"] = "topk_mean"
    topk_fraction: float = Field(default=0.01, gt=0, le=1, description="Share of map pixels averaged into the score.")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _flow_steps_of_the_kind(cls, data: object) -> object:
        # A config that names its steps (every checkpoint does) keeps them.
        if isinstance(data, dict) and data.get("flow_steps") is None:
            return {**data, "flow_steps": FLOW_STEPS.get(data.get("model", DEFAULT_MODEL_KIND), FLOW_STEPS[DEFAULT_MODEL_KIND])}
        return data

    @model_validator(mode="before")
    @classmethod
    def _score_strides_of_the_kind(cls, data: object) -> object:
        # Only fastflow's choice was measured on the suite; a config that names them keeps its own.
        if isinstance(data, dict) and "score_strides" not in data:
            kind = data.get("model", DEFAULT_MODEL_KIND)
            return {**data, "score_strides": FASTFLOW_SCORE_STRIDES if kind == "fastflow" else FEATURE_STRIDES}
        return data

    @field_validator("score_strides", mode="before")
    @classmethod
    def _known_strides(cls, v: object) -> tuple[int, ...]:
        if isinstance(v, (int, str)):
            v = [v]
        try:
            strides = tuple(sorted({int(s) for s in v}))
        except (TypeError, ValueError):
            raise ValueError(f"score strides {v!r}: a list of feature strides among {FEATURE_STRIDES}") from None
        if not strides or not set(strides) <= set(FEATURE_STRIDES):
            raise ValueError(f"score strides {v!r}: one or more of the feature strides {FEATURE_STRIDES}")
        return strides

    @model_validator(mode="before")
    @classmethod
    def _kernels_of_the_kind(cls, data: object) -> object:
        # conv3x3_only defaults to FastFlow's choice; a cflow config that does not name it gets
        # cflow's 1x1 subnets, and one that asks for 3x3 kernels is refused (there are none).
        if not isinstance(data, dict) or data.get("model") != "cflow":
            return data
        if data.get("conv3x3_only"):
            raise ValueError("conv3x3_only: cflow's couplings are fully connected over channels (1x1 convolutions "
                             "in the exported graph); leave conv3x3_only out (or False) for model cflow")
        return {**data, "conv3x3_only": False}

    @model_validator(mode="after")
    def _cflow_map_needs_standardizing(self) -> "ModelConfig":
        if self.model == "cflow" and self.map_normalization == "none":
            raise ValueError("map_normalization 'none' with model cflow: its map is a negative log-likelihood with "
                             "no fixed zero (it is negative wherever the decoder is confident), and thresholds and "
                             "scores must be >= 0; choose scale or position (the default)")
        return self

    @field_validator("feature_pooling")
    @classmethod
    def _odd_pooling(cls, v: int) -> int:
        # An even window would shift each feature map by half a cell against the others and the map.
        if v % 2 == 0:
            raise ValueError(f"feature pooling {v}: an odd window side (1, 3, 5 or 7), so it stays centred on each cell")
        return v

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; choose one of: {', '.join(BACKBONES)}")
        return v

    @field_validator("image_size", mode="before")
    @classmethod
    def _size_pair(cls, v: object) -> tuple[int, int]:
        h, w = parse_image_size(v)
        for side in (h, w):
            if not MIN_SIDE <= side <= MAX_SIDE:
                raise ValueError(f"image size {h}x{w}: each side must be in [{MIN_SIDE}, {MAX_SIDE}]")
            if side % 16:
                raise ValueError(
                    f"image size {h}x{w}: each side must be a multiple of 16 (the deepest feature map has stride 16)"
                )
        return h, w

    @property
    def height(self) -> int:
        return self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size[1]
