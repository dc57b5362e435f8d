"""Export and INT8 of a ResNet-18 FastFlow (the other backbone family: residual Adds,
ReLU instead of ReLU6, a MaxPool stem), through the shipped ffexport command.

The backbone has RANDOM weights (no ImageNet ResNet-18 weights exist offline; weights do
not change the graph's structure, which is what is tested here), so accuracy is not
asserted: plain post-training INT8 (``--refit-epochs 0``), written with ``--force``.
The FP16 variant of this backbone is tested with the FP16 work (tests/export/test_fp16.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ffcalib.int8 import CPU_NAME, TRT_NAME, find_quantizable_nodes
from ffcore.rankcorr import spearman
from ffrt import Detector
from ffrt.metafile import read_onnx_meta
from fftrain.config import ModelConfig
from fftrain.train import TrainSettings, train_and_save

SIZE = 64


@pytest.fixture(scope="module")
def resnet_export(elpv_split, tmp_path_factory):
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("resnet18")
    config = ModelConfig(backbone="resnet18", random_backbone=True, image_size=SIZE, flow_steps=2, hidden_ratio=1.0)
    train_and_save(config, elpv_split, TrainSettings(epochs=1, batch_size=16, progress=False, augment_views=0),
                   out / "model.pt", log=lambda _: None)
    rc = main(["--ckpt", str(out / "model.pt"), "--out", str(out), "--batch-max", "8", "--int8", "--refit-epochs", "0",
               "--calib-count", "16", "--force"])
    assert rc == 0
    return out


def _quantized_convs(model) -> set[str]:
    producers = {o: n for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "Conv"
            and (p := producers.get(n.input[1])) is not None and p.op_type == "DequantizeLinear"}


def test_fp32_export_passes_parity_and_records_the_backbone(resnet_export):
    meta = read_onnx_meta(resnet_export / "model.onnx")
    assert meta.backbone.name == "resnet18" and meta.precision == "fp32"
    assert (meta.input.height, meta.input.width) == (SIZE, SIZE)


def test_int8_quantizes_exactly_the_resnet_backbone(resnet_export):
    fp = onnx.load(str(resnet_export / "model.onnx"))
    backbone = set(find_quantizable_nodes(fp, ("Conv",), "backbone"))
    convs = [n.name for n in fp.graph.node if n.op_type == "Conv"]
    # ResNet-18 up to layer3: the stem conv, 2 x 2 blocks of 2 convs in layers 1-3, and the
    # two 1x1 downsample convs (layers 2, 3) = 1 + 12 + 2 = 15; the flows' convs stay float.
    assert len(backbone) == 15 and len(convs) > len(backbone)
    for name, target in ((TRT_NAME, "tensorrt"), (CPU_NAME, "cpu")):
        meta = read_onnx_meta(resnet_export / name)
        assert (meta.precision, meta.target) == ("int8", target)
        assert _quantized_convs(onnx.load(str(resnet_export / name))) == backbone, name


def test_int8_files_run_in_the_detector(resnet_export, real_images):
    fp = Detector(resnet_export / "model.onnx", backend="onnxruntime-cpu", color_order="RGB")
    ref = np.array([r.score for r in fp.predict_batch(list(real_images))])
    for name in (TRT_NAME, CPU_NAME):
        det = Detector(resnet_export / name, backend="onnxruntime-cpu", color_order="RGB")
        results = det.predict_batch(list(real_images))
        scores = np.array([r.score for r in results])
        assert np.all(np.isfinite(scores)) and all(r.anomaly_map.shape == (SIZE, SIZE) for r in results)
        print(f"\n{name}: Spearman vs FP32 {spearman(ref, scores):.3f} on {len(scores)} cells (random backbone)")
