"""ExportRequest refuses what cannot work when it is made, with the line ffexport prints; and the
table of variants picks the rows a request asks for. No model needed: nothing here exports."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ffexport import ExportRequest
from ffexport.request import refusal

BASE = {"ckpt": "model.pt", "out": "line3"}


def _refusal(**fields) -> str:
    with pytest.raises(ValidationError) as exc:
        ExportRequest(**BASE, **fields)
    return refusal(exc.value)


@pytest.mark.parametrize("pair", [("fp16", "int8"), ("int8", "bf16"), ("fp16", "bf16"), ("fp16", "int8", "bf16")])
def test_one_reduced_precision_per_export(pair):
    assert _refusal(**dict.fromkeys(pair, True)) == (
        "choose one of --fp16, --int8 and --bf16 per export (each is checked against FP32)")


@pytest.mark.parametrize("field", ["fp16", "int8", "bf16"])
def test_each_reduced_precision_alone_is_accepted(field):
    assert getattr(ExportRequest(**BASE, **{field: True}), field) is True


@pytest.mark.parametrize("field,low,message", [
    ("parity_count", 1, "--parity-count 0: images for the parity check must be at least 1"),
    ("batch_max", 1, "--batch-max 0: the largest batch must be at least 1"),
    ("fp16_images", 1, "--fp16-images 0: images per class for the FP16 check must be at least 1"),
    ("calib_count", 0, "--calib-count -1: calibration images (0 = all) must be at least 0"),
    ("refit_epochs", 0, "--refit-epochs -1: re-fit epochs (0 = plain post-training quantization) must be at least 0"),
    ("batch_min", 1, "--batch-min 0: the smallest engine batch must be at least 1"),
    ("batch_opt", 1, "--batch-opt 0: the engine batch TensorRT tunes for must be at least 1"),
    ("workspace", 0, "--workspace -1: the builder workspace in MB must be at least 0"),
    ("device", 0, "--device -1: the GPU index must be at least 0"),
])
def test_each_number_bound_gives_its_message(field, low, message):
    assert _refusal(**{field: low - 1}) == message
    assert getattr(ExportRequest(**BASE, **{field: low}), field) == low  # the bound itself is fine


def test_opset_below_17_is_refused():
    assert _refusal(opset=16) == "--opset 16: opset 17 or newer is required (LayerNormalization)"
    assert ExportRequest(**BASE, opset=17).opset == 17


def test_bf16_is_made_by_default_unless_left_out_or_another_precision_is_asked():
    """None (the default): made where the machine can; True: asked; False: never. Asking for FP16
    or INT8 leaves the default BF16 out (one reduced precision per export), without a refusal."""
    assert ExportRequest(**BASE).bf16 is None and ExportRequest(**BASE).asks("bf16") is None
    assert ExportRequest(**BASE, bf16=True).asks("bf16") is True
    assert ExportRequest(**BASE, bf16=False).asks("bf16") is False
    assert ExportRequest(**BASE, fp16=True).asks("bf16") is False
    assert ExportRequest(**BASE, int8=True).asks("bf16") is False
    assert ExportRequest(**BASE, int8=True).asks("int8") is True and ExportRequest(**BASE).asks("fp16") is False
    assert ExportRequest(**BASE, fp16=True, bf16=False).fp16 is True  # an explicit "no" is no conflict


def test_the_precision_conflict_is_said_before_a_bad_number():
    assert _refusal(fp16=True, int8=True, batch_max=0).startswith("choose one of --fp16")


@pytest.mark.parametrize("field,value,fragment", [
    ("int8_scope", "flows", "--int8-scope: Input should be 'backbone' or 'all'"),
    ("calib_method", "kl", "--calib-method: Input should be 'minmax', 'entropy' or 'percentile'"),
    ("triton_kind", "tpu", "--triton-kind: Input should be 'gpu' or 'cpu'"),
    ("batch_max", "many", "--batch-max: Input should be a valid integer"),
])
def test_a_wrong_value_names_the_option(field, value, fragment):
    assert _refusal(**{field: value}).startswith(fragment)


def test_unknown_fields_are_refused_and_a_request_is_frozen():
    assert _refusal(int4=True) == "int4: Extra inputs are not permitted"
    request = ExportRequest(**BASE)
    with pytest.raises(ValidationError):
        request.batch_max = 4


def test_defaults_are_the_documented_ones():
    r = ExportRequest(**BASE)
    assert (r.ckpt, r.out) == (Path("model.pt"), Path("line3"))
    assert (r.batch_max, r.opset, r.parity_count, r.fp16_images, r.calib_count) == (32, 18, 8, 32, 64)
    assert (r.int8_scope, r.calib_method, r.triton_kind) == ("backbone", "minmax", "gpu")
    assert (r.batch_min, r.batch_opt, r.workspace, r.device, r.timing_cache) == (1, None, 1024, 0, None)
    assert not (r.fp16 or r.int8 or r.bf16 or r.engine or r.triton or r.force)
    assert (r.refit_epochs, r.min_spearman, r.calib, r.parity_images) == (None, None, None, None)


def test_the_cli_builds_the_same_request(tmp_path, capsys):
    """Every option maps onto its field (a flag left out keeps the request's default); a refused
    request exits 1 with the request's line, before anything is read or written."""
    from ffexport.cli import build_parser

    argv = ["--ckpt", "m.pt", "--out", "o", "--batch-max", "4", "--opset", "17", "--parity-images", "elpv:mono",
            "--parity-count", "3", "--int8", "--calib", "normals", "--calib-count", "0", "--int8-scope", "all",
            "--calib-method", "entropy", "--refit-epochs", "2", "--min-spearman", "0.8", "--force", "--engine",
            "--batch-min", "2", "--batch-opt", "3", "--workspace", "512", "--timing-cache", "tc", "--device", "1",
            "--triton", "--triton-kind", "cpu", "--fp16-images", "5"]
    parsed = ExportRequest(**vars(build_parser().parse_args(argv)))
    assert parsed == ExportRequest(
        ckpt="m.pt", out="o", batch_max=4, opset=17, parity_images="elpv:mono", parity_count=3, int8=True,
        calib="normals", calib_count=0, int8_scope="all", calib_method="entropy", refit_epochs=2, min_spearman=0.8,
        force=True, engine=True, batch_min=2, batch_opt=3, workspace=512, timing_cache="tc", device=1, triton=True,
        triton_kind="cpu", fp16_images=5)
    assert ExportRequest(**vars(build_parser().parse_args(["--ckpt", "m.pt", "--out", "o"]))) == ExportRequest(
        ckpt="m.pt", out="o")
    for flag, value in (("--bf16", True), ("--no-bf16", False)):
        assert ExportRequest(**vars(build_parser().parse_args(["--ckpt", "m.pt", "--out", "o", flag]))).bf16 is value

    from ffexport.cli import main

    assert main(["--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o"), "--batch-opt", "0"]) == 1
    assert capsys.readouterr().err.strip() == (
        "ffexport: error: --batch-opt 0: the engine batch TensorRT tunes for must be at least 1")
    assert not (tmp_path / "o").exists()


def test_the_table_runs_the_rows_a_request_asks_for_in_order():
    from ffexport.variants import VARIANTS, Phase, asked

    assert [v.name for v in VARIANTS] == ["fp32", "fp16", "int8", "bf16", "triton", "tensorrt"]
    fields = ExportRequest.model_fields
    # bool, or bool | None for a variant made by default where the machine can (bf16)
    assert all(v.flag is None or fields[v.flag].annotation in (bool, bool | None) for v in VARIANTS)
    request = ExportRequest(**BASE, int8=True, engine=True, triton=True)
    assert [v.name for v in asked(request, Phase.FILE)] == ["fp32", "int8"]
    assert [v.name for v in asked(request, Phase.PACKAGE)] == ["triton"]
    assert [v.name for v in asked(request, Phase.AFTER_PUBLISH)] == ["tensorrt"]
    plain = ExportRequest(**BASE)
    assert [v.name for p in Phase for v in asked(plain, p)] == ["fp32", "bf16"]  # bf16: where this machine can
    assert [v.name for p in Phase for v in asked(ExportRequest(**BASE, bf16=False), p)] == ["fp32"]
    assert [v.name for v in asked(ExportRequest(**BASE, fp16=True), Phase.FILE)] == ["fp32", "fp16"]
    by_name = {v.name: v for v in VARIANTS}
    assert by_name["int8"].writes == ("model.int8-trt.onnx", "model.int8-cpu.onnx")
    assert by_name["fp16"].writes == ("model.fp16.onnx",) and by_name["bf16"].writes == ("model.bf16.onnx",)
    assert "GPU" in by_name["tensorrt"].needs and "BF16" in by_name["bf16"].needs


def test_the_request_report_and_engine_step_import_without_torch():
    """``from ffexport import ExportRequest`` and ``python -m ffexport.tensorrt`` (the GPU host's
    command) must not need PyTorch."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['torchvision'] = None\n"
            "from ffexport import ExportRequest, ExportReport, ExportStatus\nimport ffexport.tensorrt, ffexport.cli\n"
            "assert 'fftrain' not in sys.modules\nExportRequest(ckpt='m.pt', out='o', fp16=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / d) for d in
                                                       ("core", "runtime", "trainer", "export", "calibration"))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
