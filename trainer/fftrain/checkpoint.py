"""The checkpoint file ``model.pt``: a plain dict that loads with ``weights_only=True``.

A model file must never be able to run code, so it holds only tensors, numbers, strings,
lists and dicts: the config as a JSON-able dict, the full state_dict (backbone included,
so exporting needs no weights file), the calibration (thresholds, score statistics) and
what training did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from ffcore.files import atomic_write, sha256_file as sha256  # noqa: F401  (sha256: the checkpoint's identity in metadata)
from pydantic import ValidationError

from .backbones import FEATURE_STRIDES
from .config import ModelConfig
from .model import AnomalyModel

FORMAT = "fftrain.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint is missing, not ours, or from an unsupported version."""


def save(path: str | os.PathLike, model: AnomalyModel, calibration: dict[str, Any], train_info: dict[str, Any]) -> None:
    """Atomic (ffcore.files.atomic_write): temp file in the same folder, fsync'd, renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.model_dump(),
        "backbone_sha256": model.backbone_sha256,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "calibration": calibration,
        "train_info": train_info,
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_payload(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train one with: fftrain --data DIR --out {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a loadable fftrain checkpoint ({type(e).__name__}). "
            "Only files written by fftrain are accepted; they never contain code."
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an fftrain checkpoint (no '{FORMAT}' format tag)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this fftrain reads version {FORMAT_VERSION}; "
            "use the fftrain release that wrote it, or retrain"
        )
    return payload


def legacy_config(config: dict[str, Any], state_dict: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before the hidden width was recorded used another meaning of
    ``hidden_ratio`` (x the full feature channels): read each scale's hidden width from
    the weights themselves so the model rebuilds exactly as it was trained."""
    if not isinstance(config, dict):
        return config
    if "map_normalization" not in config:
        # Written before the head could standardize and smooth maps.
        config = {**config, "map_normalization": "none", "map_blur_sigma": 0.0}
    if "score_strides" not in config:
        # Written before the score could come from some strides only: it came from all.
        config = {**config, "score_strides": FEATURE_STRIDES}
    if "memory_bank" not in config:
        # Written before the memory bank: none, and a re-fit (ffexport's INT8 / BF16 heads) adds none.
        config = {**config, "memory_bank": "off"}
    if "input_color" not in config:
        # Written before the trainer chose luma for monochrome data: they see RGB.
        config = {**config, "input_color": "rgb"}
    if "flow_hidden_channels" in config:
        return config
    hidden, i = [], 0
    while (key := f"flows.{i}.steps.0.subnet.0.weight") in state_dict:
        hidden.append(int(state_dict[key].shape[0]))
        i += 1
    return {**config, "flow_hidden_channels": tuple(hidden)} if hidden else config


def load(path: str | os.PathLike) -> tuple[AnomalyModel, dict[str, Any]]:
    """Rebuild the model (eval mode) from a checkpoint; returns (model, payload).

    A config that is missing, invalid or does not fit the weights is a CheckpointError with
    a one-line reason (never a pydantic or torch traceback).
    """
    payload = load_payload(path)
    retrain = f"retrain with: fftrain --data DIR --out {path}"
    raw = payload.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: has no model config (the 'config' entry is missing or not a dict); {retrain}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: has no weights (the 'state_dict' entry is missing or empty); {retrain}")
    try:
        config = ModelConfig.model_validate(legacy_config(raw, state))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise CheckpointError(f"{path}: its model config is invalid: {where}: {first['msg']}{more}; {retrain}") from e
    model = AnomalyModel(config, load_pretrained=False)
    problem = _state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{path}: its weights do not match its config ({problem}); {retrain}")
    model.load_state_dict(state)
    model.backbone_sha256 = payload.get("backbone_sha256")
    return model.eval(), payload


def _state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, Any]) -> str:
    """'' when ``given`` has exactly the expected tensor names and shapes, else a short summary."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [
        f"{k} is {tuple(given[k].shape) if isinstance(given[k], torch.Tensor) else type(given[k]).__name__}, "
        f"the config needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and (not isinstance(given[k], torch.Tensor) or given[k].shape != v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if wrong:
        parts.append(f"{len(wrong)} of another shape, e.g. {wrong[0]}")
    return "; ".join(parts)
