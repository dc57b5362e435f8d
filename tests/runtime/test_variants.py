"""backend="auto" with precision="auto" measures the gated variants (model.bf16.onnx, and a real
INT8 Q/DQ model.int8-cpu.onnx) beside the FP32 file and runs the fastest, with the variant's own
thresholds; a variant that does not qualify is left out with its reason. Real files, real ONNX
Runtime and OpenVINO; the "slower" candidates are real backends with a fixed delay added to
every run."""

from __future__ import annotations

import shutil
import time

import pytest

from ffrt import Detector
from ffrt.backends import base
from ffrt.backends.openvino import bf16_problem
from ffrt.backends.variants import gated_variants
from ffrt.meta import PrecisionGate
from ffrt.metafile import read_onnx_meta, write_onnx_meta

pytest.importorskip("openvino", reason='the "openvino" extra: pip install "ffrt[openvino]"')


def _gate(passed: bool = True, keep: str = "head", precision: str = "bf16") -> PrecisionGate:
    return PrecisionGate(precision=precision, keep_fp32=keep, passed=passed, images=8, defective=4, data="validation",
                         spearman=0.99, auroc_fp32=0.9, auroc=0.9, map_max_rel=0.01, bounds={"min_spearman": 0.9},
                         reference="model.onnx in FP32", runtime="openvino test", checked_at="now")


@pytest.fixture
def pair(tiny_onnx, tmp_path):
    """model.onnx (FP32) and model.bf16.onnx (same training, a passed BF16 gate, its own thresholds)."""
    fp32 = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, fp32)
    bf16 = tmp_path / "model.bf16.onnx"
    shutil.copy(tiny_onnx, bf16)
    meta = read_onnx_meta(bf16)
    write_onnx_meta(bf16, meta.with_thresholds(meta.thresholds.image * 1.5, meta.thresholds.pixel * 1.5, "refit",
                                               calibrated_on="openvino (bf16)")
                    .model_copy(update={"precision_gates": (_gate(),), "head_fit": "re-fit on BF16 features"}))
    return fp32, bf16


@pytest.mark.parametrize("change, reason", [
    ({"precision_gates": ()}, "no passed BF16 accuracy gate"),
    ({"precision_gates": (_gate(passed=False),)}, "no passed BF16 accuracy gate"),
    ({"precision_gates": (_gate(keep="flows"),)}, "no passed BF16 accuracy gate"),
    ({"source_checkpoint_sha256": "f" * 64}, "another checkpoint"),
])
def test_a_variant_that_does_not_qualify_is_left_out_with_its_reason(pair, change, reason):
    fp32, bf16 = pair
    write_onnx_meta(bf16, read_onnx_meta(bf16).model_copy(update=change))
    variants, why = gated_variants(fp32, read_onnx_meta(fp32))
    assert variants == [] and len(why) == 1 and reason in why[0] and "model.bf16.onnx" in why[0]


def test_only_the_fp32_file_has_variants(pair):
    fp32, bf16 = pair
    variants, why = gated_variants(fp32, read_onnx_meta(fp32))
    assert [v.path for v in variants] == [bf16] and why == []
    assert gated_variants(bf16, read_onnx_meta(bf16)) == ([], [])


@pytest.fixture
def trio(pair, elpv_split):
    """``pair`` and a real INT8 Q/DQ file of the same model (ffcalib), its CPU encoding carrying a
    passed INT8 gate and thresholds of its own; the TensorRT encoding lies beside it."""
    from ffcalib.int8 import CPU_NAME, TRT_NAME, quantize_model
    from fftrain.data import load_batch

    fp32, bf16 = pair
    quantize_model(fp32, fp32.parent, load_batch(elpv_split.train[:16], 64), benchmark_batches=(), progress=False)
    int8 = fp32.with_name(CPU_NAME)
    meta = read_onnx_meta(int8)
    write_onnx_meta(int8, meta.with_thresholds(meta.thresholds.image * 2, meta.thresholds.pixel * 2, "refit",
                                               calibrated_on="onnxruntime (int8)")
                    .model_copy(update={"precision_gates": (_gate(keep="head", precision="int8"),)}))
    for name in (TRT_NAME,):  # a passed gate does not make the TensorRT encoding a CPU variant
        write_onnx_meta(fp32.with_name(name), read_onnx_meta(fp32.with_name(name)).model_copy(
            update={"precision_gates": (_gate(keep="head", precision="int8"),)}))
    return fp32, bf16, int8


def test_the_int8_cpu_file_is_a_variant_and_the_tensorrt_encoding_is_not(trio):
    fp32, bf16, int8 = trio
    variants, why = gated_variants(fp32, read_onnx_meta(fp32))
    assert [v.path for v in variants] == [bf16, int8] and why == []
    assert [v.precisions for v in variants] == [("bf16",), ("fp32",)]  # no BF16 gate in the INT8 file
    assert gated_variants(int8, read_onnx_meta(int8)) == ([], [])


def test_an_int8_files_bf16_float_parts_run_only_on_thresholds_set_in_bf16(trio):
    """A passed BF16 gate bounds how the INT8 file with BF16 float parts ranks parts, not where
    a part near the threshold falls: with thresholds set on FP32 float parts (what ffexport
    writes) only those are a candidate, and the BF16 one is named with what makes it one."""
    fp32, _, int8 = trio
    meta = read_onnx_meta(int8)
    write_onnx_meta(int8, meta.model_copy(update={"precision_gates": meta.precision_gates + (_gate(),)}))
    variants, why = gated_variants(fp32, read_onnx_meta(fp32))
    (variant,) = [v for v in variants if v.path == int8]
    assert variant.precisions == ("fp32",)
    assert len(why) == 1 and "model.int8-cpu.onnx in bf16" in why[0] and "--precision bf16" in why[0]
    meta = read_onnx_meta(int8)
    write_onnx_meta(int8, meta.with_thresholds(meta.thresholds.image, meta.thresholds.pixel, "ffcalib",
                                               calibrated_on="openvino (int8+bf16)"))
    variants, why = gated_variants(fp32, read_onnx_meta(fp32))
    (variant,) = [v for v in variants if v.path == int8]
    assert variant.precisions == ("bf16",)
    assert len(why) == 1 and "model.int8-cpu.onnx in fp32" in why[0] and "--precision fp32" in why[0]


@pytest.mark.skipif(bf16_problem() is not None, reason="this CPU computes no native BF16: no BF16 candidate")
def test_an_int8_file_with_bf16_thresholds_is_measured_with_bf16_float_parts(trio, tmp_path, monkeypatch):
    monkeypatch.setenv("FFRT_ENGINE_CACHE", str(tmp_path / "cache"))
    fp32, _, int8 = trio
    meta = read_onnx_meta(int8)
    write_onnx_meta(int8, meta.with_thresholds(meta.thresholds.image, meta.thresholds.pixel, "ffcalib",
                                               calibrated_on="openvino (int8+bf16)")
                    .model_copy(update={"precision_gates": meta.precision_gates + (_gate(),)}))
    monkeypatch.setattr(base, "_start", _Delayed({"model.onnx", "model.bf16.onnx"}))
    with Detector(fp32, threads=1) as det:
        choice = det.backend_choice
        assert det.running_path == int8 and det.precision == "int8+bf16"
    assert "openvino int8+bf16 on model.int8-cpu.onnx" in choice and "openvino int8 on" not in choice, choice


@pytest.mark.parametrize("gates", [(), (_gate(passed=False, precision="int8"),), (_gate(keep="head"),)])
def test_an_int8_file_without_a_passed_int8_gate_is_left_out(trio, gates):
    fp32, _, int8 = trio
    write_onnx_meta(int8, read_onnx_meta(int8).model_copy(update={"precision_gates": gates}))
    variants, why = gated_variants(fp32, read_onnx_meta(fp32))
    assert [v.path.name for v in variants] == ["model.bf16.onnx"]
    assert len(why) == 1 and "model.int8-cpu.onnx" in why[0] and "no passed INT8 accuracy gate" in why[0]


@pytest.mark.parametrize("slow, runs", [({"model.onnx", "model.bf16.onnx"}, "model.int8-cpu.onnx"),
                                        ({"model.int8-cpu.onnx", "model.bf16.onnx"}, "model.onnx")])
def test_auto_runs_the_int8_file_only_where_it_is_the_fastest(trio, tmp_path, monkeypatch, slow, runs):
    monkeypatch.setenv("FFRT_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(base, "_start", _Delayed(slow))
    fp32, _, int8 = trio
    with Detector(fp32, threads=1) as det:
        assert det.running_path == fp32.with_name(runs)
        assert det.thresholds.image == read_onnx_meta(det.running_path).thresholds.image
        assert ("int8" in det.precision) == (runs == int8.name)
        assert "model.int8-cpu.onnx" in det.backend_choice  # measured either way


class _Delayed:
    """Wraps base._start: the backends it starts for ``slow`` files run ``extra_s`` longer."""

    def __init__(self, slow: set, extra_s: float = 0.04):
        self.slow, self.extra_s, self.real = slow, extra_s, base._start

    def __call__(self, name, model_path, *a, **k):
        backend = self.real(name, model_path, *a, **k)
        if backend is not None and model_path.name in self.slow:
            run, extra = backend.run, self.extra_s

            def slowed(batch):
                time.sleep(extra)
                return run(batch)

            backend.run = slowed
        return backend


@pytest.mark.skipif(bf16_problem() is not None, reason="this CPU computes no native BF16: the variant cannot run")
@pytest.mark.parametrize("slow, runs", [("model.onnx", "model.bf16.onnx"), ("model.bf16.onnx", "model.onnx")])
def test_auto_runs_the_faster_of_the_file_and_its_bf16_variant_with_that_files_thresholds(pair, tmp_path,
                                                                                            monkeypatch, slow, runs):
    monkeypatch.setenv("FFRT_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(base, "_start", _Delayed({slow}))
    fp32, bf16 = pair
    det = Detector(fp32, threads=1)
    assert det.model_path == fp32 and det.running_path == fp32.with_name(runs)
    assert det.precision == ("bf16" if runs == bf16.name else "fp32")
    assert det.thresholds.image == read_onnx_meta(det.running_path).thresholds.image
    assert read_onnx_meta(bf16).thresholds.image != read_onnx_meta(fp32).thresholds.image
    assert "model.bf16.onnx" in det.backend_choice  # measured either way
    det.close()


def test_an_explicit_backend_or_precision_runs_the_file_asked_for(pair):
    fp32, _ = pair
    with Detector(fp32, backend="openvino", threads=1) as det:
        assert det.running_path == fp32
    with Detector(fp32, precision="fp32", threads=1) as det:
        assert det.running_path == fp32 and det.precision == "fp32"


@pytest.mark.skipif(bf16_problem() is None, reason="this CPU computes BF16: nothing to refuse")
def test_without_native_bf16_the_variant_is_not_run_and_auto_says_why(pair, tmp_path, monkeypatch):
    fp32, _ = pair
    monkeypatch.setenv("FFRT_ENGINE_CACHE", str(tmp_path / "cache"))
    det = Detector(fp32, threads=1)
    assert det.running_path == fp32 and "model.bf16.onnx (bf16) not run" in det.backend_choice
