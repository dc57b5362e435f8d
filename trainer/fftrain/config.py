"""Model configuration: everything needed to rebuild a FastFlow from a checkpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .backbones import BACKBONES


class FastFlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = Field(default="efficientnet_lite0", description="Frozen ImageNet feature extractor.")
    random_backbone: bool = Field(default=False, description="Random backbone weights: tests and benchmarks only.")
    image_size: int = Field(default=256, ge=32, le=1024, description="Square model input size; a multiple of 16.")
    flow_steps: int = Field(default=8, ge=1, le=32)
    hidden_ratio: float = Field(default=1.0, gt=0, le=4)
    conv3x3_only: bool = Field(default=True, description="3x3 kernels only (else 3x3/1x1 alternating).")
    clamp: float = Field(default=2.0, gt=0, description="Soft clamp of the coupling log-scales.")
    score_reduction: Literal["max", "topk_mean"] = "topk_mean"
    topk_fraction: float = Field(default=0.01, gt=0, le=1, description="Share of map pixels averaged into the score.")
    seed: int = 0

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; choose one of: {', '.join(BACKBONES)}")
        return v

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"image_size {v} must be a multiple of 16 (the deepest feature map has stride 16)")
        return v
