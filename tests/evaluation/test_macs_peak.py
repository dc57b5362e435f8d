"""MAC counting against hand computations, and the CPU peak formula on given flags."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ffeval.machine import parse_cpuinfo, peak_gflops
from ffeval.macs import MacCountError, count_macs


def _w(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _model(nodes, inits, out_shape, in_shape=("N", 3, 8, 8)):
    graph = helper.make_graph(
        nodes, "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def hand_model():
    """x[N,3,8,8] -> Conv 3->4 k3 pad1 -> Relu -> Conv 4->4 k3 group 2 stride 2 -> Flatten
    -> MatMul [36,10] -> Gemm (B [5,10], transB) -> y[N,5]."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=2, strides=[2, 2]),
        helper.make_node("Flatten", ["c2"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Gemm", ["mm", "g", "gb"], ["y"], transB=1),
    ]
    inits = [_w("w1", (4, 3, 3, 3)), _w("b1", (4,)), _w("w2", (4, 2, 3, 3)), _w("m", (36, 10)),
             _w("g", (5, 10)), _w("gb", (5,))]
    return _model(nodes, inits, ("N", 5))


def test_macs_match_hand_computation(tmp_path):
    # Conv1: out [1,4,8,8], 3 in-channels x 3x3 kernel: 4*8*8 * 3*3*3      = 6912
    # Conv2: out [1,4,3,3] ((8-3)//2+1 = 3), 2 in-channels per group x 3x3: 4*3*3 * 2*3*3 = 648
    # MatMul: [1,36] x [36,10]: 10 outputs x K 36                             = 360
    # Gemm: [1,10] x [5,10]^T: M 1, N 5, K 10                                 = 50
    path = tmp_path / "hand.onnx"
    onnx.save(hand_model(), path)
    m = count_macs(path)
    assert m.by_op == {"Conv": 6912 + 648, "MatMul": 360, "Gemm": 50}
    assert m.total == 6912 + 648 + 360 + 50
    assert m.nodes_by_op == {"Conv": 2, "MatMul": 1, "Gemm": 1}
    assert m.uncounted_ops == {"Relu": 1, "Flatten": 1}
    assert m.unresolved == []
    d = m.to_dict()
    assert d["per_image"] == m.total and "Conv" in d["method"]


def test_batched_matmul_counts_every_output():
    # [N,2,3,4] x [4,5] -> [1,2,3,5] at batch 1: 30 outputs x K 4 = 120
    model = _model([helper.make_node("MatMul", ["x", "m"], ["y"])], [_w("m", (4, 5))], ("N", 2, 3, 5), ("N", 2, 3, 4))
    assert count_macs(model).total == 120


def test_unknown_weight_shape_is_reported_not_guessed():
    # The weight is a graph input without a shape: the node is listed as unresolved.
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = count_macs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert m.total == 0 and len(m.unresolved) == 1


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(MacCountError, match="not a readable ONNX"):
        count_macs(bad)


def test_tiny_model_macs_resolved(tiny_onnx):
    m = count_macs(tiny_onnx)
    assert m.unresolved == []
    assert m.by_op.get("Conv", 0) > 1_000_000  # backbone + flow convolutions at 64x64


@pytest.mark.parametrize(
    "flags, units, expected",
    [
        ({"avx2", "fma"}, None, 2 * 2.5 * 2 * 8 * 2),  # 160: Zen 3 / Haswell+ style
        ({"avx2", "fma", "avx512f"}, None, 2 * 2.5 * 2 * 16 * 2),  # 320
        ({"avx2", "fma", "avx512f"}, 1, 2 * 2.5 * 1 * 16 * 2),  # 160: one AVX-512 unit given
        ({"avx"}, None, 2 * 2.5 * 1 * 8 * 2),  # 80: AVX without FMA
        (set(), None, 2 * 2.5 * 1 * 4 * 2),  # 40: SSE only
    ],
)
def test_peak_formula(flags, units, expected):
    p = peak_gflops(2, 2.5, flags, units)
    assert p["fp32_gflops"] == pytest.approx(expected)
    assert p["flop_per_cycle_per_core"] * p["cores"] * p["ghz"] == pytest.approx(expected)
    assert "FMA" in p["formula"] and p["assumptions"]


def test_peak_vnni_int8():
    assert peak_gflops(1, 1.0, {"avx512f", "avx512_vnni"})["int8_vnni_gops"] == pytest.approx(4 * 64)
    assert peak_gflops(1, 1.0, {"avx2", "fma"})["int8_vnni_gops"] is None


def test_parse_cpuinfo():
    text = "processor\t: 0\nmodel name\t: Test CPU\ncpu MHz\t\t: 2445.406\nflags\t\t: fpu avx avx2 fma\n\nprocessor\t: 1\nflags\t: sse\n"
    info = parse_cpuinfo(text)
    assert info == {"model": "Test CPU", "mhz": pytest.approx(2445.406), "flags": {"fpu", "avx", "avx2", "fma"}}


@pytest.mark.parametrize("flags,bf16,int8", [
    # 2 cores x 2.0 GHz; the FP32 rate with AVX-512 and 2 FMA units: 2 x 16 x 2 = 64 FLOP/cycle/core
    ({"avx512f", "fma", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}, 2 * 2.0 * 1024, 2 * 2.0 * 2048),
    ({"avx512f", "fma", "avx512_vnni", "avx512_bf16"}, 2 * 2.0 * 128, 2 * 2.0 * 256),  # no AMX: AVX512-BF16 / VNNI
    ({"avx2", "fma"}, None, None),  # AVX2 only (the EPYC): no native BF16, no VNNI
])
def test_peaks_per_precision_from_the_flags(flags, bf16, int8):
    from ffeval.machine import precision_peaks

    peaks = precision_peaks(peak_gflops(2, 2.0, flags), flags)
    assert peaks["fp32"]["gops"] == pytest.approx(2 * 2.0 * (64 if "avx512f" in flags else 32))
    assert (peaks["bf16"] and peaks["bf16"]["gops"]) == (pytest.approx(bf16) if bf16 else None)
    assert (peaks["int8"] and peaks["int8"]["gops"]) == (pytest.approx(int8) if int8 else None)
    if bf16:
        assert ("AMX" in peaks["bf16"]["derivation"]) == ("amx_bf16" in flags)
