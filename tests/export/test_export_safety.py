"""A failed or killed export never costs the folder its good model; bad checkpoints get one line.

Real tiny FastFlow (tests/conftest.py), real exporter, real onnxruntime parity / FP16 / INT8
checks. The folder starts with a *previous* model whose bytes are known; after any failure
those bytes must be unchanged and nothing else may be left in the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ffexport.cli import main as ffexport_main
from ffrt.metafile import read_onnx_meta, write_onnx_meta

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "runtime", "trainer", "export", "calibration", "evaluation")


@pytest.fixture
def previous(tiny_onnx, tmp_path):
    """An export folder holding a good model.onnx with recognisable bytes (its own thresholds)."""
    out = tmp_path / "line3"
    out.mkdir()
    model = out / "model.onnx"
    shutil.copy(tiny_onnx, model)
    meta = read_onnx_meta(model)
    write_onnx_meta(model, meta.with_thresholds(1.234, 2.345, "tuned on line 3"))
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry of the folder, hidden ones included (a leftover temp file or folder shows up)."""
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in folder.iterdir()}


def _edited_checkpoint(src: Path, dst: Path, edit) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, dst)
    return dst


def _one_line(err: str) -> str:
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("ffexport: error: "), err
    return err


def test_nan_weight_export_keeps_the_previous_model(tiny_checkpoint, previous, tmp_path, capsys):
    """The issue's reproduction: one flow weight NaN, exported over a good model."""

    def poison(payload):
        name = next(k for k in payload["state_dict"] if k.startswith("flows.") and k.endswith("weight"))
        payload["state_dict"][name].view(-1)[0] = float("nan")

    ckpt = _edited_checkpoint(tiny_checkpoint, tmp_path / "nan.pt", poison)
    before = _snapshot(previous)
    assert ffexport_main(["--no-bf16", "--ckpt", str(ckpt), "--out", str(previous), "--batch-max", "8"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "non-finite" in err and "previous" in err
    assert _snapshot(previous) == before


def test_a_graph_outside_tolerance_leaves_nothing(tiny_checkpoint, previous, capsys, monkeypatch):
    """A finite graph refused by the parity check (tolerance below zero: even a bit-exact export fails)."""
    import ffexport.parity

    monkeypatch.setattr(ffexport.parity, "FP32_RTOL", -1.0)
    before = _snapshot(previous)
    assert ffexport_main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(previous), "--batch-max", "8"]) == 1
    assert "disagrees with PyTorch beyond tolerance" in _one_line(capsys.readouterr().err)
    assert _snapshot(previous) == before


def test_an_exception_during_the_check_leaves_nothing(tiny_checkpoint, previous, monkeypatch):
    """Any exception after the new graph was written (here: onnxruntime failing in the parity
    check) propagates, and the stage with the unchecked graph is removed on the way out."""
    import ffexport.parity

    def broken(*_a, **_k):
        raise RuntimeError("onnxruntime: simulated failure")

    monkeypatch.setattr(ffexport.parity, "check", broken)
    before = _snapshot(previous)
    with pytest.raises(RuntimeError, match="simulated failure"):
        ffexport_main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(previous), "--batch-max", "8"])
    assert _snapshot(previous) == before


@pytest.mark.parametrize("flag,value", [("--parity-count", "0"), ("--batch-max", "0"), ("--calib-count", "-1")])
def test_bad_numbers_are_refused_before_any_write(tiny_checkpoint, previous, capsys, flag, value):
    before = _snapshot(previous)
    assert ffexport_main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(previous), flag, value]) == 1
    assert flag in _one_line(capsys.readouterr().err)
    assert _snapshot(previous) == before


def test_fp16_gate_failure_keeps_both_previous_files(tiny_checkpoint, previous, capsys, monkeypatch):
    import ffexport.fp16_gate
    from ffexport.precision import export_fp16
    from fftrain import checkpoint

    model, payload = checkpoint.load(tiny_checkpoint)
    export_fp16(model, payload, checkpoint.sha256(tiny_checkpoint), previous / "model.fp16.onnx", batch_max=8)
    monkeypatch.setattr(ffexport.fp16_gate, "FP16_MAX_MAP_REL", -1.0)  # no FP16 graph can pass
    monkeypatch.setattr(ffexport.fp16_gate, "FP16_MAX_NOISE_RATIO", -1.0)
    before = _snapshot(previous)
    assert ffexport_main(["--ckpt", str(tiny_checkpoint), "--out", str(previous), "--batch-max", "8", "--fp16",
                          "--fp16-images", "4"]) == 1
    assert "FP16 graph disagrees with FP32" in _one_line(capsys.readouterr().err)
    assert _snapshot(previous) == before


def test_kill_during_the_check_leaves_the_previous_model(tiny_checkpoint, previous):
    """SIGKILL while the new graph is being checked: the usable name still holds the previous
    model; the unchecked one is only under a temporary name, which the next export removes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in PACKAGES)}
    script = (
        "import os, signal, sys\n"
        "import ffexport.parity as parity\n"
        "def killed(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "parity.check = killed\n"
        "from ffexport.cli import main\n"
        f"sys.exit(main(['--ckpt', {str(tiny_checkpoint)!r}, '--out', {str(previous)!r}, '--batch-max', '8']))\n"
    )
    before = _snapshot(previous)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after = _snapshot(previous)
    assert after["model.onnx"] == before["model.onnx"]
    leftovers = set(after) - set(before)
    assert leftovers and all(n.startswith(".") and n.endswith(".tmp") for n in leftovers), leftovers

    from ffexport.staging import prune_stale

    assert prune_stale(previous) == len(leftovers)  # the killed process is gone: its stage is stale
    assert _snapshot(previous) == before


# -- item 7: checkpoints whose config is missing, invalid or does not match the weights --------


def _drop_config(payload):
    del payload["config"]


def _bad_config(payload):
    payload["config"]["image_size"] = 33  # not a multiple of 16


def _config_not_a_dict(payload):
    payload["config"] = "efficientnet_lite0"


def _mismatched_steps(payload):
    payload["config"]["flow_steps"] = 3  # the weights have 2 steps


def _mismatched_size(payload):
    payload["config"]["image_size"] = 128  # the LayerNorms were trained at 64x64


def _no_state_dict(payload):
    del payload["state_dict"]


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (_drop_config, "no model config"),
        (_bad_config, "image_size"),
        (_config_not_a_dict, "no model config"),
        (_mismatched_steps, "do not match its config"),
        (_mismatched_size, "do not match its config"),
        (_no_state_dict, "no weights"),
    ],
)
def test_broken_checkpoint_config_is_one_line(tiny_checkpoint, tmp_path, capsys, edit, fragment):
    ckpt = _edited_checkpoint(tiny_checkpoint, tmp_path / "broken.pt", edit)
    out = tmp_path / "out"
    assert ffexport_main(["--no-bf16", "--ckpt", str(ckpt), "--out", str(out)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert fragment in err and "fftrain" in err
    assert not out.exists() or not any(out.iterdir())
