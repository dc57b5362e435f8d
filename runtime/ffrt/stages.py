"""The per-image pipeline, written once: prepare -> run -> finish -> :class:`Result`.

    stages = det.stages
    prepared = stages.prepare(frames)                    # validate, decode, resize, colour
    maps, scores = stages.run(prepared.batch)            # the backend, outputs checked
    outs = [stages.finish(maps[i, 0], scores[i], g, thresholds)
            for i, g in enumerate(prepared.geometries)]  # map back, thresholds, regions

``Detector.__call__`` and ``predict_batch`` (:meth:`Stages.detect`), the batching pipeline
behind ``Detector.submit`` (one image per prepare, one batch per run, one image per finish)
and ffbench (each stage timed on its own) all run these same methods, so what a benchmark
times is what a line runs. Each frame's :class:`~ffcore.geometry.FrameGeometry` is computed
once, in ``prepare``, and travels with the frame to ``finish``.

A Stages object holds only what does not change after the Detector is made (the model's
input, the image limits, the backend, the postprocessing settings); the thresholds are
passed in per call, so a concurrent ``set_thresholds`` never splits a batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ffcore.geometry import FrameGeometry

from .backends.base import Backend
from .errors import FFRTError, InferenceError, ModelFileError
from .meta import InputSpec, Thresholds
from .postprocess import Outputs, Postprocessor
from .preprocess import ImageLimits, PreparedBatch, prepare_batch
from .result import LatencySplit, Result


class Detection(NamedTuple):
    """What :meth:`Stages.detect` returns: one outcome per input (a Result, or with
    errors="return" the error that refused it), and the scores of the images that ran."""

    outcomes: list
    scores: list[float]
    seconds: float  # the whole call, 0.0 when nothing ran
    images: int  # how many images ran
    ended: float  # time.perf_counter() at the end


@dataclass(frozen=True)
class Stages:
    model_path: Path
    spec: InputSpec
    color_order: str
    limits: ImageLimits
    backend: Backend
    post: Postprocessor

    # -- the three stages --------------------------------------------------------------

    def prepare(self, images: Sequence[object], errors: str = "raise") -> PreparedBatch:
        """Validate, decode, resize and colour-convert ``images`` into one uint8 NHWC RGB batch
        (``ffrt.preprocess.prepare_batch``), with each frame's geometry."""
        return prepare_batch(images, self.spec, self.color_order, self.limits, errors)

    def run(self, batch: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The backend on a uint8 [N, H, W, 3] batch, in calls of at most ``chunk`` images:
        (maps float32 [N, 1, H, W], scores float32 [N]), their shapes checked."""
        if chunk is None or len(batch) <= chunk:
            return self.run_chunks([batch])[0]
        outs = self.run_chunks([batch[i : i + chunk] for i in range(0, len(batch), chunk)])
        return np.concatenate([m for m, _ in outs]), np.concatenate([s for _, s in outs])

    def run_chunks(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several batches through the backend (which may overlap them); one (maps, scores) each."""
        backend = self.backend
        try:
            outs = backend.run_chunks(batches) if len(batches) > 1 else [backend.run(batches[0])]
        except FFRTError:
            raise
        except Exception as e:
            sizes = "+".join(str(len(b)) for b in batches)
            raise InferenceError(f"{backend.name} failed on a batch of {sizes}: {type(e).__name__}: {e}") from e
        return [self._checked(len(b), *out) for b, out in zip(batches, outs)]

    def finish(self, amap: np.ndarray, score: float, geometry: FrameGeometry, thresholds: Thresholds) -> Outputs:
        """One image's model-size map and score -> its verdict, map, mask and regions in its frame."""
        return self.post.outputs(amap, float(score), geometry, thresholds)

    def result(self, out: Outputs, thresholds: Thresholds, latency_ms: float, split: LatencySplit) -> Result:
        return self.post.result(out, thresholds, latency_ms, split)

    # -- the three together ------------------------------------------------------------

    def detect(self, images: Sequence[object], chunk: int, thresholds: Thresholds, errors: str = "raise") -> Detection:
        """Every stage over a list of images, timed as one call (``Detector.__call__`` and
        ``predict_batch``)."""
        t0 = time.perf_counter()
        prepared = self.prepare(images, errors)
        outcomes: list = [None] * len(images)
        for position, error in prepared.errors:
            outcomes[position] = error
        n = len(prepared.batch)
        if n == 0:
            return Detection(outcomes, [], 0.0, 0, t0)  # every image was refused: nothing ran, nothing to time
        t1 = time.perf_counter()
        maps, scores = self.run(prepared.batch, chunk)
        t2 = time.perf_counter()
        parts = [self.finish(maps[i, 0], scores[i], g, thresholds) for i, g in enumerate(prepared.geometries)]
        t3 = time.perf_counter()
        split = LatencySplit(0.0, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        for position, out in zip(prepared.positions, parts):
            outcomes[position] = self.result(out, thresholds, (t3 - t0) * 1e3, split)
        return Detection(outcomes, [out.score for out in parts], t3 - t0, n, t3)

    def _checked(self, n: int, maps, scores) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.spec.height, self.spec.width
        maps = np.asarray(maps, dtype=np.float32)
        scores = np.asarray(scores, dtype=np.float32)
        if maps.shape != (n, 1, h, w) or scores.shape != (n,):
            # The contract check at load time looks at declared shapes; this catches a graph
            # whose real outputs differ, which would otherwise be mis-indexed silently.
            raise ModelFileError(
                f"{self.model_path}: the graph returned anomaly_map {maps.shape} and score {scores.shape} for a "
                f"batch of {n}; expected {(n, 1, h, w)} and {(n,)}. Re-export the model with ffexport."
            )
        return maps, scores
