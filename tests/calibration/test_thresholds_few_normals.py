"""``ffcalib thresholds`` on too few or identical normal images (issue 23, row 10): one
normal image or twelve copies of one wrote thresholds without a word, and the zero spread
left the operators' normalized score undefined on the line.

Real ELPV cells through the CLI on the tiny real FastFlow.
"""

from __future__ import annotations

import shutil

from ffcalib.cli import main


def _folder(tmp_path, paths, copies: int = 1):
    folder = tmp_path / "normals"
    folder.mkdir()
    for p in paths:
        for k in range(copies):
            shutil.copy(p, folder / f"{p.stem}_{k:02d}{p.suffix}")
    return folder


def _normals(elpv_split):
    return [s.path for s in elpv_split.test if s.label == 0]


def _run(model, folder, *extra):
    return main(["thresholds", "--model", str(model), "--normal", str(folder), "--no-progress",
                 "--backend", "onnxruntime-cpu", "--threads", "1", *extra])


def test_one_normal_image_is_refused(model_copy, elpv_split, tmp_path, capsys):
    before = model_copy.read_bytes()
    assert _run(model_copy, _folder(tmp_path, _normals(elpv_split)[:1])) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ffcalib: error: the only normal image scored ")
    assert "no spread" in err and "at least 100 for a false-reject target of 0.01" in err and "nothing was written" in err
    assert model_copy.read_bytes() == before


def test_twelve_copies_of_one_image_are_refused(model_copy, elpv_split, tmp_path, capsys):
    before = model_copy.read_bytes()
    assert _run(model_copy, _folder(tmp_path, _normals(elpv_split)[:1], copies=12), "--target-frr", "0.1") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ffcalib: error: all 12 normal images (copies of one image?) scored ")
    assert "at least 10 for a false-reject target of 0.1" in err
    assert model_copy.read_bytes() == before


def test_fewer_normals_than_the_target_needs_are_warned_about(model_copy, elpv_split, tmp_path, capsys):
    # 8 different normals, target 0.01: one false reject in 100 cannot be seen in 8 images.
    assert _run(model_copy, _folder(tmp_path, _normals(elpv_split)[:8])) == 0
    out = capsys.readouterr().out
    assert "warning: only 8 normal images: a false-reject rate of 0.01 cannot be measured on fewer than 100" in out
    assert "written into the model's metadata" in out
    # Enough for the target: no warning (8 normals, target 0.125 = one in 8).
    (tmp_path / "again").mkdir()
    assert _run(model_copy, _folder(tmp_path / "again", _normals(elpv_split)[:8]), "--target-frr", "0.125") == 0
    assert "warning" not in capsys.readouterr().out
