"""ffeval through ffrt.Detector: metrics equal ffcore.metrics computed directly from ONNX
Runtime outputs; PNGs written; ELPV without masks; error paths.

The pixel-level data here is SYNTHETIC: real ELPV normal cells with defects drawn by
ffcore.synthetic (exact masks)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from ffeval.eval_cli import main
from ffeval.evaluate import pick_examples


@pytest.fixture(scope="module")
def synthetic_eval(tiny_onnx, synthetic_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    rc = main([str(tiny_onnx), "--data", str(synthetic_folder), "--out", str(out), "--examples", "2", "--quiet"])
    return rc, out


def _direct(tiny_onnx, folder):
    """Scores and maps straight from an ORT session on the trainer's loading path."""
    from fftrain.data import load_batch, read_mask, resolve
    from ffrt.metafile import read_onnx_meta

    split = resolve(str(folder))
    samples = split.test
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    maps, scores = [], []
    for i in range(0, len(samples), 8):  # the same batches as ffeval's default --batch 8
        m, s = sess.run(["anomaly_map", "score"], {"image": load_batch(samples[i:i + 8], 64)})
        maps.append(m[:, 0])
        scores.append(s)
    labels = np.array([s.label for s in samples])
    masks = np.stack([read_mask(s.mask_path, 64) for s in samples])
    return samples, labels, np.concatenate(scores).astype(np.float64), np.concatenate(maps), masks, read_onnx_meta(tiny_onnx)


def test_metrics_match_fftrain_metrics_on_ort_outputs(synthetic_eval, tiny_onnx, synthetic_folder):
    from ffcore import metrics as M

    rc, out = synthetic_eval
    assert rc == 0
    r = json.loads((out / "metrics.json").read_text())
    samples, labels, scores, maps, masks, meta = _direct(tiny_onnx, synthetic_folder)
    thr = meta.thresholds.image
    im = r["image"]
    assert im["auroc"] == pytest.approx(M.roc_auc(labels, scores), abs=1e-9)
    assert im["threshold"] == pytest.approx(thr)
    assert im["f1_at_threshold"] == pytest.approx(M.f1_at_threshold(labels, scores, thr), abs=1e-9)
    p, rec = M.precision_recall_at_threshold(labels, scores, thr)
    assert (im["precision_at_threshold"], im["recall_at_threshold"]) == pytest.approx((p, rec))
    pred = scores > thr
    assert im["confusion_at_threshold"] == {
        "true_reject": int((pred & (labels == 1)).sum()), "false_reject": int((pred & (labels == 0)).sum()),
        "false_accept": int((~pred & (labels == 1)).sum()), "true_accept": int((~pred & (labels == 0)).sum()),
    }
    assert sum(im["confusion_at_threshold"].values()) == len(samples) == 17
    px = r["pixel"]
    assert px["available"] is True
    assert px["auroc"] == pytest.approx(M.pixel_auroc(masks, maps), abs=1e-6)
    assert px["aupro"] == pytest.approx(M.aupro(masks, maps, 0.3), abs=1e-6)
    assert px["images"] == 17 and px["defect_images_without_mask"] == 0
    # per defect type: that type's images against all normals
    assert set(r["per_defect_type"]) == {"crack", "dark_region", "scratch"}
    for t, v in r["per_defect_type"].items():
        keep = np.array([s.label == 0 or s.defect_type == t for s in samples])
        assert v["count"] == 3
        assert v["auroc_vs_all_normals"] == pytest.approx(M.roc_auc(labels[keep], scores[keep]), abs=1e-9)


def test_synthetic_is_said(synthetic_eval, tiny_onnx, synthetic_folder, capsys):
    rc, out = synthetic_eval
    r = json.loads((out / "metrics.json").read_text())
    assert r["data"]["synthetic"] is True
    assert any("SYNTHETIC" in n for n in r["data"]["notes"])
    assert main([str(tiny_onnx), "--data", str(synthetic_folder), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "(synthetic)" in printed


def test_pngs_written(synthetic_eval, read_png):
    rc, out = synthetic_eval
    r = json.loads((out / "metrics.json").read_text())
    assert set(r["files"]) == {"roc", "pro", "overlays", "metrics"}
    for key in ("roc", "pro"):
        assert read_png(r["files"][key]).shape[0] > 200
    grid = read_png(r["files"]["overlays"])
    # 3 groups x 2 examples = 6 rows of 4 pictures: a tall image
    assert grid.shape[0] > grid.shape[1]
    ex = r["examples"]
    assert [len(v) for v in ex.values()] == [2, 2, 2]
    top, low = ex["highest-scoring defects"], ex["lowest-scoring defects"]
    assert top[0]["score"] >= top[1]["score"] and low[0]["score"] <= low[1]["score"]


def test_pick_examples():
    labels = np.array([0, 1, 1, 0, 1, 0])
    scores = np.array([0.5, 3.0, 1.0, 2.0, 0.2, 0.1])
    g = pick_examples(labels, scores, 2)
    assert g == {"highest-scoring defects": [1, 2], "lowest-scoring defects": [4, 2], "highest-scoring normals": [3, 0]}


def test_elpv_pixel_metrics_not_available(tiny_onnx, tmp_path, read_png):
    out = tmp_path / "elpv"
    assert main([str(tiny_onnx), "--data", "elpv:mono", "--out", str(out), "--batch", "8", "--examples", "1", "--quiet"]) == 0
    r = json.loads((out / "metrics.json").read_text())
    assert r["pixel"]["available"] is False and "image labels only" in r["pixel"]["reason"]
    assert r["data"]["synthetic"] is False
    assert r["data"]["counts"] == {"train": 397, "val": 44, "test_normal": 147, "test_defective": 313}
    assert 0.0 <= r["image"]["auroc"] <= 1.0
    assert "pro" not in r["files"] and not (out / "pro.png").exists()
    read_png(out / "overlays.png")


@pytest.mark.parametrize("case", ["missing_model", "missing_data", "no_test", "only_normals"])
def test_error_paths(case, tiny_onnx, synthetic_folder, tmp_path, capsys):
    import shutil

    model, data = str(tiny_onnx), str(synthetic_folder)
    if case == "missing_model":
        model = str(tmp_path / "nope.onnx")
    elif case == "missing_data":
        data = str(tmp_path / "nothing")
    else:
        data = tmp_path / "d"
        shutil.copytree(synthetic_folder / "train", data / "train")
        if case == "only_normals":
            shutil.copytree(synthetic_folder / "test" / "good", data / "test" / "good")
        data = str(data)
    rc = main([model, "--data", data, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.startswith("ffeval: error:") and "\n" not in err
    expected = {"missing_model": "no such model file", "missing_data": "no such folder",
                "no_test": "no test images", "only_normals": "both normal and defective"}[case]
    assert expected in err


def test_ffeval_does_not_import_torch(tiny_onnx, synthetic_folder):
    import subprocess
    import sys

    code = ("import sys; from ffeval.eval_cli import main; import ffeval.bench_cli, ffeval.bench, ffeval.plots;"
            f"rc = main([{str(tiny_onnx)!r}, '--data', {str(synthetic_folder)!r}, '--quiet']);"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')];"
            "print('TORCH:' + ','.join(bad)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH:\n" in proc.stdout, proc.stdout


def test_development_folder_is_an_mvtec_layout_with_exact_masks(tmp_path):
    import cv2

    from ffeval.synthetic_data import MARKER, build_dev_folder
    from fftrain.data import read_mask, resolve
    from ffcore.synthetic import HARD_KINDS

    root = build_dev_folder("elpv:mono", tmp_path / "dev", crop=(300, 200), seed=1, exposure_share=0.5, limit=10)
    assert (root / MARKER).is_file() and "SYNTHETIC" in (root / MARKER).read_text()
    split = resolve(str(root))
    assert len(split.train) + len(split.val) == 10
    defects = [s for s in split.test if s.label == 1]
    assert len(defects) == 10 and {s.defect_type for s in defects} == set(HARD_KINDS)
    src = resolve("elpv:mono")
    originals = [s for s in src.test if s.label == 0][:10]
    reexposed = 0
    for i, s in enumerate(defects):
        img = cv2.imread(str(s.path), cv2.IMREAD_GRAYSCALE)
        assert img.shape == (300, 200)  # non-square: the centre of a 300x300 cell
        mask = read_mask(s.mask_path, img.shape)
        assert 0 < mask.sum() < mask.size // 2
        ref = cv2.imread(str(originals[int(s.path.stem)].path), cv2.IMREAD_GRAYSCALE)[:, 50:250]
        diff = np.abs(img.astype(int) - ref.astype(int))
        # Unchanged exposure: the defect is where the mask is. Re-exposed: everything moved.
        if np.median(diff[~mask]) == 0:
            assert diff[mask].mean() > diff[~mask].mean() + 1
        else:
            reexposed += 1
    assert 0 < reexposed < 10
