"""``ffrt run`` before its first frame and after its last: the Detector is called once at every
batch size the batcher can form (a backend that builds per batch size does it then), and the
summary says how much CPU the run's frames cost. Real ONNX Runtime, the tiny real FastFlow."""

from __future__ import annotations

import json

import cv2
import pytest

from ffrt.backends.onnxruntime import OnnxRuntimeBackend
from ffrt.cli import main


def test_every_batch_size_is_run_before_the_first_frame(tiny_onnx, elpv_split, tmp_path, monkeypatch, capsys):
    sizes = []
    real = OnnxRuntimeBackend.run

    def recorded(self, batch):
        sizes.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", recorded)
    folder = tmp_path / "cells"
    folder.mkdir()
    for i, s in enumerate(elpv_split.val[:2]):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.imread(str(s.path)))
    out = tmp_path / "out"
    assert main(["run", str(tiny_onnx), str(folder), "--out", str(out), "--threads", "1", "--max-batch", "3",
                 "--backend", "onnxruntime-cpu"]) == 0
    capsys.readouterr()
    assert sizes[:3] == [1, 2, 3]  # the warm-up, in order, before any frame
    assert sum(sizes[3:]) == 2  # then the two frames, in one batch or two
    totals = json.loads((out / "summary.json").read_text())["totals"]
    assert totals["scored"] == 2 and totals["cpu_s"] > 0
    assert totals["cpu_ms_per_frame"] == pytest.approx(1e3 * totals["cpu_s"] / 2, abs=1e-3)
