"""What an INT8 run reports: per-encoding accuracy, the gate's verdict, latency, outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .images import CalibError


class AccuracyGateError(CalibError):
    """INT8 lost too much accuracy; ``.report`` has the figures. Nothing was written."""

    def __init__(self, message: str, report: "Int8Report"):
        super().__init__(message)
        self.report = report


@dataclass
class EncodingAccuracy:
    auroc: float | None
    auroc_drop: float | None
    spearman: float
    max_abs_score_diff: float
    passed: bool
    #: Share of validation images on which this file's pass/fail decision (its own stored
    #: image threshold) equals the FP32 file's.
    decision_agreement: float | None = None


@dataclass
class Accuracy:
    images: int
    defects: int
    fp32_auroc: float | None
    encodings: dict[str, EncodingAccuracy]
    max_auroc_drop: float
    min_spearman: float
    #: Which images the gate ran on (e.g. held-out training normals + synthetic defects).
    source: str = ""

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.encodings.values())


@dataclass
class Latency:
    batch: int
    ms_per_batch: dict[str, float]  # model label -> median ms per batch
    images_per_s: dict[str, float]
    speedup_vs_fp32: dict[str, float]


@dataclass
class Int8Report:
    fp32_path: str
    outputs: dict[str, str]  # "tensorrt"/"cpu" -> written path ("" when not written)
    method: str
    calib_images: int
    op_types: tuple[str, ...]
    scope: str
    quantized_nodes: list[str]  # node names of the FP32 graph that got Q/DQ
    quantized_by_type: dict[str, int]
    float_nodes_by_type: dict[str, int]  # op types of the candidate type left in float
    calib_seconds: float
    quantize_seconds: float
    head_fit: dict[str, str] = field(default_factory=dict)  # target -> how its flow head was re-fit
    accuracy: Accuracy | None = None
    latency: list[Latency] = field(default_factory=list)
    threads: int | None = None
    written: bool = False
    forced: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"INT8 ({self.method} calibration on {self.calib_images} images, one pass, scope={self.scope}, "
            f"op types {','.join(self.op_types)}):",
            f"  quantized: {sum(self.quantized_by_type.values())} nodes "
            + ", ".join(f"{k} x{v}" for k, v in sorted(self.quantized_by_type.items()))
            + (
                "; left float: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.float_nodes_by_type.items()))
                if self.float_nodes_by_type
                else ""
            ),
        ]
        for target, how in self.head_fit.items():
            lines.append(f"  int8-{target} head: {how}")
        a = self.accuracy
        if a is not None:
            fp = f"{a.fp32_auroc:.4f}" if a.fp32_auroc is not None else "n/a (one class)"
            lines.append(f"  gate set: {a.source or 'images given by the caller'}")
            lines.append(f"  accuracy on these {a.images} images ({a.defects} defective): FP32 AUROC {fp}")
            for name, e in a.encodings.items():
                au = f"AUROC {e.auroc:.4f} (drop {e.auroc_drop:+.4f}), " if e.auroc is not None else ""
                lines.append(
                    f"    int8-{name:<8} {au}Spearman vs FP32 {e.spearman:.4f}, max |score diff| "
                    f"{e.max_abs_score_diff:.4g}"
                    + (f", same pass/fail as FP32 on {e.decision_agreement:.1%}" if e.decision_agreement is not None else "")
                    + f"  {'ok' if e.passed else 'FAILED'}"
                )
            lines.append(
                f"  gate: AUROC drop <= {a.max_auroc_drop}, Spearman >= {a.min_spearman}: "
                f"{'passed' if a.passed else 'FAILED' + (' (forced)' if self.forced else '')}"
            )
        for lat in self.latency:
            parts = [f"{k} {v:.1f} ms ({lat.images_per_s[k]:.1f} img/s)" for k, v in lat.ms_per_batch.items()]
            sp = ", ".join(f"{k} x{v:.2f}" for k, v in lat.speedup_vs_fp32.items())
            lines.append(f"  latency batch {lat.batch} ({self.threads} threads): " + "; ".join(parts) + f"; speedup {sp}")
        for target, path in self.outputs.items():
            lines.append(f"  {target:<9} -> {path if path else '(not written)'}")
        return "\n".join(lines)
