"""Messages that said the wrong thing (issue 23, row 11): each names what is wrong and a
fix that works. Real files: an ONNX model with edited metadata, a 0-byte file, a real
symbolic-link loop.
"""

from __future__ import annotations

import json

import onnx
import pytest

from ffrt import Detector, ImageFileError
from ffrt.errors import ModelFileError
from ffrt.meta import META_KEY


def test_unusable_metadata_advises_a_re_export_not_ffcalib(red_model, tmp_path, capsys):
    proto = onnx.load(str(red_model))
    for p in proto.metadata_props:
        if p.key == META_KEY:
            meta = json.loads(p.value)
            meta["thresholds"]["image"] = "high"
            p.value = json.dumps(meta)
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(ModelFileError) as exc:
        Detector(broken)
    assert "re-export the model with ffexport" in str(exc.value)
    assert "re-write the thresholds" not in str(exc.value)
    # ...because ffcalib indeed refuses the file (it reads the same metadata first).
    from ffcalib.cli import main

    import cv2

    from conftest import solid_bgr

    folder = tmp_path / "normals"
    folder.mkdir()
    (folder / "a.png").write_bytes(cv2.imencode(".png", solid_bgr(40, 50, (0, 0, 255)))[1].tobytes())
    assert main(["thresholds", "--model", str(broken), "--normal", str(folder)]) == 1
    assert "is not usable" in capsys.readouterr().err


def test_an_empty_model_file_is_called_empty(tmp_path):
    empty = tmp_path / "model.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"the file is empty \(0 bytes\)"):
        Detector(empty)


def test_a_symlink_loop_is_called_a_loop(red_model, tmp_path):
    loop = tmp_path / "frame.png"
    loop.symlink_to(loop)
    with pytest.raises(ImageFileError, match=r"link loop") as exc:
        Detector(red_model, threads=1)(loop)
    assert "permissions" not in str(exc.value)
