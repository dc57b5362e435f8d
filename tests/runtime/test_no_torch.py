"""ffrt must run on line PCs without torch: no module of it may import torch."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import numpy as np
import ffrt, ffrt.cli, ffrt.detector, ffrt.backends.onnxruntime, ffrt.overlay, ffrt.preprocess, ffrt.stats
det = ffrt.Detector(sys.argv[1])       # imports onnxruntime too
det(np.zeros((8, 8, 3), np.uint8))
assert "onnxruntime" in sys.modules
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH:" + ",".join(bad))
"""


def test_ffrt_never_imports_torch(red_model):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("core", "runtime"))}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(red_model)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH:\n" in proc.stdout, proc.stdout  # an empty list of torch modules
