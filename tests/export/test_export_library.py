"""``ffexport.export(ExportRequest(...))``: the library call, its report and its files, and the
CLI's exit code following the report's status.

Real tiny FastFlow (tests/conftest.py), real exporter, real onnxruntime checks and ffcalib
gate; nothing mocked.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from ffexport import ExportReport, ExportRequest, ExportStatus, export
from ffexport.cli import main
from ffrt.metafile import read_onnx_meta


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else b"<dir>") for p in folder.rglob("*")}


def test_status_to_exit_code():
    from ffexport.report import EXIT_CODES

    assert EXIT_CODES == {ExportStatus.OK: 0, ExportStatus.FAILED: 1, ExportStatus.UNAVAILABLE: 2,
                          ExportStatus.GATE_FAILED: 3, ExportStatus.SKIPPED: 0}


def test_a_plain_export_reports_its_file_and_the_parity_check(tiny_checkpoint, tmp_path, capsys):
    report = export(ExportRequest(bf16=False, ckpt=tiny_checkpoint, out=tmp_path / "line3", batch_max=4, triton=True,
                                  triton_kind="cpu"))
    assert isinstance(report, ExportReport)
    assert report.status is ExportStatus.OK and report.ok and report.reason == ""
    (onnx_file,) = report.files
    assert onnx_file.path == tmp_path / "line3" / "model.onnx" and onnx_file.path.is_file()
    assert (onnx_file.variant, onnx_file.precision) == ("fp32", "fp32")
    assert onnx_file.size_bytes == onnx_file.path.stat().st_size
    (gate,) = onnx_file.gates
    assert gate.passed and not gate.forced and gate.check == "parity with PyTorch on 8 images"
    assert read_onnx_meta(onnx_file.path).batch_max == 4
    assert report.file("model.onnx") == onnx_file
    with pytest.raises(KeyError, match="model.fp16.onnx: not published"):
        report.file("model.fp16.onnx")
    # The Triton repository was published with it, as folders.
    assert report.folders == (tmp_path / "line3" / "triton" / "ffrt_detector", tmp_path / "line3" / "triton" / "ffrt_model")
    assert all(f.is_dir() for f in report.folders)
    assert [(v.variant, v.status) for v in report.variants] == [("fp32", ExportStatus.OK), ("triton", ExportStatus.OK)]
    assert report.variants[0].files == ("model.onnx",) and report.variants[0].seconds > 0
    assert 0 < sum(v.seconds for v in report.variants) <= report.seconds
    out = capsys.readouterr().out  # progress stays line-based
    assert "parity ONNX Runtime CPU vs PyTorch on 8 images" in out and f"wrote {onnx_file.path}" in out


def test_fp16_reports_both_files_and_its_gate(tiny_checkpoint, tmp_path):
    report = export(ExportRequest(ckpt=tiny_checkpoint, out=tmp_path, batch_max=4, fp16=True, fp16_images=4))
    assert report.ok, report.reason
    assert [(f.path.name, f.variant, f.precision) for f in report.files] == [
        ("model.onnx", "fp32", "fp32"), ("model.fp16.onnx", "fp16", "fp16")]
    (gate,) = report.file("model.fp16.onnx").gates
    assert gate.passed and gate.check.startswith("FP16 gate against model.onnx on 8 images")
    assert read_onnx_meta(tmp_path / "model.fp16.onnx").precision == "fp16"
    assert [v.variant for v in report.variants] == ["fp32", "fp16"]


@pytest.fixture(scope="module")
def int8_forced(tiny_checkpoint, tmp_path_factory):
    """INT8 with a gate bound no file meets (Spearman 1.0) and force: written, the failure reported;
    and the engine asked for, which is built from the TensorRT encoding."""
    out = tmp_path_factory.mktemp("int8_forced")
    return out, export(ExportRequest(ckpt=tiny_checkpoint, out=out, batch_max=4, int8=True, refit_epochs=0,
                                     calib_count=8, min_spearman=1.0, force=True, engine=True))


def test_int8_forced_reports_each_encoding_and_its_failed_gate(int8_forced):
    from ffrt.tensorrt.build import missing_for_tensorrt

    out, report = int8_forced
    if missing_for_tensorrt() is None:
        assert report.ok and (out / "model.int8-trt.engine").is_file(), report.reason
    else:
        assert report.status is ExportStatus.UNAVAILABLE, report.reason
        assert f"python -m ffexport.tensorrt {(out / 'model.int8-trt.onnx').resolve()} " in report.reason
    assert [(v.variant, v.status is ExportStatus.OK) for v in report.variants][:2] == [("fp32", True), ("int8", True)]
    assert [(f.path.name, f.variant, f.precision) for f in report.files] == [
        ("model.onnx", "fp32", "fp32"), ("model.int8-trt.onnx", "int8", "int8"), ("model.int8-cpu.onnx", "int8", "int8")]
    from ffrt.backends.openvino import bf16_problem

    for name in ("model.int8-trt.onnx", "model.int8-cpu.onnx"):
        gate, *more = report.file(name).gates
        assert (gate.passed, gate.forced) == (False, True) and gate.check.startswith("INT8 gate against model.onnx")
        assert (out / name).is_file()
        # Where this CPU computes BF16, the CPU file's float parts in BF16 were gated too (not forced:
        # it decides only which float precision "auto" may run).
        if name == "model.int8-cpu.onnx" and bf16_problem() is None:
            (float_parts,) = more
            assert float_parts.check.startswith("float parts in BF16 (OpenVINO)") and not float_parts.forced
        else:
            assert more == []
    assert report.variants[1].files == ("model.int8-trt.onnx", "model.int8-cpu.onnx")


def test_a_gate_failure_publishes_nothing(tiny_checkpoint, int8_forced, tmp_path, capsys):
    """The same request without force: GATE_FAILED, the folder as it was; the CLI exits 3 with the reason."""
    previous, _ = int8_forced
    folder = tmp_path / "line3"
    shutil.copytree(previous, folder)
    before = _snapshot(folder)
    report = export(ExportRequest(ckpt=tiny_checkpoint, out=folder, batch_max=4, int8=True, refit_epochs=0,
                                  calib_count=8, min_spearman=1.0))
    assert report.status is ExportStatus.GATE_FAILED and report.files == ()
    assert report.reason.startswith("INT8 accuracy gate failed") and "--force writes anyway" in report.reason
    assert [(v.variant, v.status) for v in report.variants] == [("fp32", ExportStatus.OK),
                                                                ("int8", ExportStatus.GATE_FAILED)]
    assert _snapshot(folder) == before
    capsys.readouterr()
    argv = ["--ckpt", str(tiny_checkpoint), "--out", str(folder), "--batch-max", "4", "--int8", "--refit-epochs", "0",
            "--calib-count", "8", "--min-spearman", "1.0"]
    assert main(argv) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after ffcalib's progress lines
    assert last.startswith("ffexport: error: INT8 accuracy gate failed") and last.endswith("--force writes anyway")
    assert _snapshot(folder) == before


def test_success_exits_0_and_a_refused_request_exits_1(tiny_checkpoint, tmp_path, capsys):
    assert main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "a"), "--batch-max", "4"]) == 0
    assert capsys.readouterr().err == ""
    assert read_onnx_meta(tmp_path / "a" / "model.onnx").batch_max == 4
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--fp16", "--bf16"]) == 1
    assert "choose one of --fp16, --int8 and --bf16" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_an_engine_without_tensorrt_is_unavailable_after_publishing(tiny_checkpoint, tmp_path, capsys):
    from ffrt.tensorrt.build import missing_for_tensorrt

    if missing_for_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are present: the engine would be built (tests/gpu covers that)")
    report = export(ExportRequest(bf16=False, ckpt=tiny_checkpoint, out=tmp_path, batch_max=4, engine=True, batch_opt=2))
    assert report.status is ExportStatus.UNAVAILABLE
    assert [f.path.name for f in report.files] == ["model.onnx"] and (tmp_path / "model.onnx").is_file()
    engine = report.variants[-1]
    assert (engine.variant, engine.status, engine.files) == ("tensorrt", ExportStatus.UNAVAILABLE, ())
    assert report.reason == engine.reason
    assert report.reason.startswith("cannot build the TensorRT engine here: TensorRT is not installed")
    assert f"python -m ffexport.tensorrt {(tmp_path / 'model.onnx').resolve()} --batch-min 1 --batch-opt 2 " \
           "--batch-max 4" in report.reason
    assert not list(tmp_path.glob("*.engine"))
    capsys.readouterr()
    assert main(["--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "4", "--engine"]) == 2


def test_a_broken_checkpoint_is_a_failed_report_with_one_line(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k in payload["state_dict"] if k.startswith("flows.") and k.endswith("weight"))
    payload["state_dict"][name].view(-1)[0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    report = export(ExportRequest(bf16=False, ckpt=tmp_path / "nan.pt", out=tmp_path / "out", batch_max=4))
    assert report.status is ExportStatus.FAILED and report.files == ()
    assert "non-finite" in report.reason and report.reason.endswith(
        "nothing was written, the previous files in the output folder are untouched")
    assert [(v.variant, v.status) for v in report.variants] == [("fp32", ExportStatus.FAILED)]
    assert not list((tmp_path / "out").iterdir())

    missing = export(ExportRequest(bf16=False, ckpt=tmp_path / "none.pt", out=tmp_path / "out"))
    assert missing.status is ExportStatus.FAILED and "no such checkpoint" in missing.reason
    assert missing.variants == () and "\n" not in missing.reason


def test_bf16_without_refit_records_its_gate_in_model_onnx(tiny_checkpoint, tmp_path):
    """refit_epochs=0: no new file; the BF16 gate is recorded in model.onnx, and the report lists
    that one file once, with both of its checks."""
    from ffrt.backends.openvino import bf16_problem

    if bf16_problem() is not None:
        pytest.skip(f"no BF16 here: {bf16_problem()}")
    report = export(ExportRequest(ckpt=tiny_checkpoint, out=tmp_path, batch_max=4, bf16=True, refit_epochs=0,
                                  force=True))
    assert report.ok, report.reason
    (onnx_file,) = report.files
    assert (onnx_file.path.name, onnx_file.variant) == ("model.onnx", "fp32")
    parity, bf16 = onnx_file.gates
    assert parity.check.startswith("parity with PyTorch") and bf16.check.startswith("BF16 gate against itself")
    (recorded,) = read_onnx_meta(tmp_path / "model.onnx").precision_gates
    assert recorded.precision == "bf16" and (bf16.passed, bf16.forced) == (recorded.passed, not recorded.passed)
    assert [(v.variant, v.files) for v in report.variants] == [("fp32", ("model.onnx",)), ("bf16", ("model.onnx",))]
    assert not (tmp_path / "model.bf16.onnx").exists()


@pytest.mark.parametrize("bf16", [None, True])
def test_bf16_left_to_the_machine_is_skipped_where_asked_for_is_refused(tiny_checkpoint, tmp_path, bf16):
    """The default BF16 variant that cannot be made (here: its data is missing; on a CPU without
    BF16, that first) is left out with its reason and model.onnx is published; asked for with
    bf16=True, the same obstacle refuses the export and publishes nothing."""
    from ffrt.backends.openvino import bf16_problem

    out = tmp_path / "out"
    report = export(ExportRequest(ckpt=tiny_checkpoint, out=out, batch_max=4, bf16=bf16,
                                  calib=str(tmp_path / "no-such-data")))
    why = "no-such-data" if bf16_problem() is None else "cannot compute"
    fp32, variant = report.variants
    assert (fp32.variant, variant.variant) == ("fp32", "bf16") and why in variant.reason
    if bf16 is None:
        assert report.ok and variant.status is ExportStatus.SKIPPED, report.reason
        assert [f.path.name for f in report.files] == ["model.onnx"]
        assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # nothing half-made left beside it
    else:
        assert not report.ok and variant.status is report.status and why in report.reason
        assert not report.files and not (out / "model.onnx").exists()
