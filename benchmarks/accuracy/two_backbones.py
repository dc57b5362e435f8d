"""Issue 21's lever "concatenating two backbones' features", measured without shipping it.

    python benchmarks/accuracy/two_backbones.py latency [--rounds 30] [--json OUT]
    python benchmarks/accuracy/two_backbones.py suite [suite.py arguments]

Both backbones are frozen ImageNet EfficientNet-Lites with the same input scaling and strides:
Lite0 (the default: best on both ELPV sets alone) and Lite2 (wider and deeper: alone it lost
ELPV and DeepPCB but gained the synthetic strip and pixel AUROC). The pair's feature map at each
stride is the two maps concatenated along the channels (24+24, 40+48, 112+120), so everything
after the backbone (flows, head, memory bank, thresholds) runs unchanged on the wider features.

The pair exists only inside this process: ``fftrain.model.build_feature_extractor`` is replaced
while the script runs, so the real trainer trains it and the real exporter traces it; a
checkpoint it writes records backbone ``efficientnet_lite0`` and loads only here.

``latency``: the default model and the pair (today's default flows: 4 coupling steps; trained
weights do not change the arithmetic) traced by ffexport's own tracer and timed interleaved on
ONNX Runtime CPU at batch 1 and 8: the issue's speed budget is 1.5x today's default at batch 1.
``suite``: suite.py with recipe ``two-backbones`` (today's fftrain defaults: 4 steps, 24 epochs,
the memory bank where training's check keeps it; the baseline is recipe ``bank-steps4-epochs24``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablation"))
import suite  # noqa: E402

PAIR = ("efficientnet_lite0", "efficientnet_lite2")
RECIPE = "two-backbones"
BASELINE_RECIPE = "bank-steps4-epochs24"  # fftrain's defaults today


class ConcatFeatures(nn.Module):
    """Two feature extractors on the same input; their maps concatenated per stride."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        if tuple(first.strides) != tuple(second.strides):
            raise ValueError("the two backbones' strides differ")
        self.first, self.second = first, second
        self.strides = first.strides
        self.channels = tuple(a + b for a, b in zip(first.channels, second.channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat([a, b], dim=1) for a, b in zip(self.first(x), self.second(x))]


def install_pair() -> None:
    """Make every AnomalyModel built in this process use the pair (whatever its config names)."""
    from fftrain import backbones, model

    def pair(name, weights=None, random=False):
        (a, sha_a), (b, sha_b) = (backbones.build_feature_extractor(n, None, random=random) for n in PAIR)
        return ConcatFeatures(a, b).eval(), (None if random else f"{sha_a}+{sha_b}")

    model.build_feature_extractor = pair


def latency(rounds: int, out: Path | None) -> dict:
    from ffeval.machine import describe, one_line
    from fftrain.config import ModelConfig
    from fftrain.model import AnomalyModel
    from graph_latency import time_models, write

    config = ModelConfig(flow_steps=4)  # today's fftrain default
    print(f"machine: {one_line(describe())}", flush=True)
    models = {}
    for name in ("default (Lite0)", "two backbones (Lite0+Lite2)"):
        if name.startswith("two"):
            install_pair()
        torch.manual_seed(0)
        models[name] = AnomalyModel(config, load_pretrained=False)
    result = time_models(models, rounds)
    write(result, out)
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "suite":
        install_pair()
        suite.RECIPES[RECIPE] = suite.RECIPES[BASELINE_RECIPE]  # only the backbone differs
        return suite.main(["--recipe", RECIPE, *argv[1:]])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["latency", "suite"])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    latency(args.rounds, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
