"""ffexport --bf16: the flow head re-fit on the backbone's BF16 features as OpenVINO computes
them, gated against FP32, the gate recorded in model.bf16.onnx. Real tiny FastFlow on ELPV
cells, real OpenVINO BF16 (AMX / AVX512-BF16), real PyTorch training of the flows. Needs the
extra `openvino` and a CPU with native BF16; skipped without them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("openvino", reason='OpenVINO is not installed: pip install "ffrt[openvino]" (extra openvino)')

from ffrt.backends.openvino import bf16_problem  # noqa: E402

NO_BF16 = bf16_problem()
pytestmark = pytest.mark.skipif(NO_BF16 is not None, reason=f"ffexport --bf16: {NO_BF16}")

# Stated bound: image AUROC of model.bf16.onnx run in BF16 on the 460 ELPV mono test cells. As
# for the INT8 re-fit (tests/export/test_int8_refit.py), the re-fit trains on the checkpoint's
# recorded data (397 normals) while the tiny checkpoint saw 48, so the re-fit head is the better
# detector: measured 0.915 when written (its gate: Spearman 0.90, validation AUROC 0.940 -> 0.956).
# A head that does not match its backbone scores ~0.5.
MIN_AUROC = 0.75


@pytest.fixture(scope="module")
def bf16_export(tiny_checkpoint, tmp_path_factory):
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("bf16_refit")
    # No --bf16: on a CPU with native BF16 the default export makes it (--bf16 asks for it, and is
    # tested in test_export_library.py and test_cflow_export.py); --force keeps a failed gate's file.
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--batch-max", "8",
                 "--refit-epochs", "2", "--force"]) == 0
    return out


def _weights(path, prefix):
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith(prefix)}


def test_the_bf16_file_has_its_own_head_and_its_gate(bf16_export):
    from ffrt.metafile import read_onnx_meta

    fp32, bf16 = bf16_export / "model.onnx", bf16_export / "model.bf16.onnx"
    flows32, flows16 = _weights(fp32, "flows."), _weights(bf16, "flows.")
    assert flows32.keys() == flows16.keys() and any(not np.array_equal(flows32[k], flows16[k]) for k in flows32)
    back32, back16 = _weights(fp32, "model.backbone."), _weights(bf16, "model.backbone.")
    assert back32 and all(np.array_equal(back32[k], back16[k]) for k in back32)  # frozen backbone
    meta = read_onnx_meta(bf16)
    assert "BF16" in meta.head_fit and meta.precision == "fp32"  # an FP32 graph, fit for a BF16 backbone
    (gate,) = meta.precision_gates
    assert (gate.precision, gate.keep_fp32) == ("bf16", "head") and "model.onnx" in gate.reference
    assert gate.bounds == {"max_auroc_drop": 0.01, "min_spearman": 0.90}
    assert not read_onnx_meta(fp32).precision_gates
    # The memory bank is re-fitted on the BF16 features at the weight training chose for it.
    bank32, bank16 = read_onnx_meta(fp32).score.memory_bank, meta.score.memory_bank
    assert bank32 is not None and bank16 is not None and bank16.weight == bank32.weight


def test_auto_runs_it_as_its_gate_says_and_it_detects(bf16_export, elpv_split):
    from ffcore.metrics import roc_auc
    from fftrain.data import load_batch

    from ffrt import Detector
    from ffrt.metafile import read_onnx_meta

    path = bf16_export / "model.bf16.onnx"
    (gate,) = read_onnx_meta(path).precision_gates
    det = Detector(path, backend="openvino", precision="auto", color_order="RGB")
    assert det.precision == ("bf16" if gate.passed else "fp32")
    cells = load_batch(elpv_split.test, 64)
    labels = np.array([s.label for s in elpv_split.test])
    bf16 = Detector(path, backend="openvino", precision="bf16", color_order="RGB")
    scores = [r.score for r in bf16.predict_batch(list(cells))]
    assert bf16.predict_batch(list(cells[:1]))[0].precision == "bf16"
    assert roc_auc(labels, np.array(scores)) >= MIN_AUROC


def test_uint8_input_feeds_only_a_cast(bf16_export):
    from support.uint8_input import assert_uint8_only_into_cast

    files = sorted(bf16_export.glob("*.onnx"))
    assert any(".bf16" in p.name for p in files), files
    for path in files:
        assert_uint8_only_into_cast(path)
