"""Two trained flow sets on the same backbone features, their image scores fused (no retraining).

    python benchmarks/accuracy/ensemble.py RECIPES PAIRS OUT.json
    e.g. RECIPES = steps4-epochs24,pool3-steps4-epochs24  PAIRS = steps4-epochs24+pool3-steps4-epochs24

Each recipe's checkpoint (suite.py trains them; same backbone, input size and colour) scores the
validation and test images of every suite set from one feature extraction. A pair's score is the
sum of both scores, each standardized by its own validation normals' mean and spread; thresholds
by fftrain's rule (ffcore.operating_point, 2%) on the validation normals. Prints DEV and TEST
image AUROC per set with the mean and the worst set, and the synthetic strip's large soft
unevenness. Pairs of unpooled flows of another depth are the control: how much any second flow
set adds. Choices on DEV only.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sets  # noqa: E402
import suite  # noqa: E402
from ffcore import metrics as M  # noqa: E402
from ffcore.data import load_batch  # noqa: E402
from ffcore.operating_point import operating_point  # noqa: E402
from fftrain.train import evaluate_features, extract_features  # noqa: E402

work = Path("runs/accuracy")
recipes = sys.argv[1].split(",")
pairs = [p.split("+") for p in sys.argv[2].split(",")]
out = {}
for name in ["elpv-mono", "elpv-poly", "deeppcb", "synthetic-strip"]:
    ss = sets.suite_set(name, work); split = ss.split()
    models = {r: suite.saved_checkpoint(name, r, work)[0] for r in recipes}
    m0 = models[recipes[0]]
    size, mode = m0.config.image_size, m0.config.resize_mode
    with torch.no_grad():
        feats = {k: extract_features(m0, load_batch(v, size, mode), progress=False) for k, v in (("val", split.val), ("test", split.test))}
    sc = {}
    for r, m in models.items():
        assert m.config.image_size == size
        with torch.no_grad():
            sc[r] = {k: evaluate_features(m, f)[2].numpy().astype(np.float64) for k, f in feats.items()}
    halves = sets.halves(split.test)
    labels = np.array([s.label for s in split.test])
    uneven = np.array([s.label == 0 or s.defect_type == "uneven" for s in split.test])
    res = {}
    def fig(test_s, val_s, key):
        thr = operating_point(val_s, 0.02).threshold
        d = {}
        for h, idx in halves.items():
            d[h] = round(M.roc_auc(labels[idx], test_s[idx]), 4)
            if ss.synthetic:
                k = idx[uneven[idx]]; d[h + "_uneven"] = round(M.roc_auc(labels[k], test_s[k]), 4)
            d[h + "_frr"] = round(float((test_s[idx][labels[idx] == 0] > thr).mean()), 4)
            d[h + "_recall"] = round(float((test_s[idx][labels[idx] == 1] > thr).mean()), 4)
        res[key] = d
    for r in recipes:
        fig(sc[r]["test"], sc[r]["val"], r)
    for a, b in pairs:
        def z(r, k):
            return (sc[r][k] - sc[r]["val"].mean()) / sc[r]["val"].std()
        fig(z(a, "test") + z(b, "test"), z(a, "val") + z(b, "val"), f"{a}+{b}")
    out[name] = res
    print(name, json.dumps(res), flush=True)
from ffeval.machine import describe, one_line  # noqa: E402

Path(sys.argv[3]).write_text(json.dumps({"machine": one_line(describe()), "command": " ".join(sys.argv),
                                         "sets": out}, indent=1))
print("machine:", one_line(describe()))
keys = list(out["elpv-mono"])
for h in ("dev", "test"):
    print(h)
    for k in keys:
        v = [out[s][k][h] for s in out]
        print(f"  {k:60s}", " ".join(f"{x:.3f}" for x in v), f"mean {np.mean(v):.3f} worst {min(v):.3f}", "uneven", out["synthetic-strip"][k][h + "_uneven"])
