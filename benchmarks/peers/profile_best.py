"""Where the time goes: OpenVINO per-layer performance counters of ffrt's best CPU path on the
ResNet-18 configuration, next to anomalib's best (OpenVINO default precision), per stage.

ffrt's side runs through ffrt's own OpenVINO backend (its BF16 cut: body BF16, head FP32; the
counters are switched on by a subclass). Each executed OpenVINO layer is attributed to a stage of the source model through the ONNX
graph: the dynamo exporter writes every node's module path (``pkg.torch.onnx.name_scopes``),
and OpenVINO's ONNX frontend keeps the ONNX node names as layer names (fused layers list
them in the runtime model's ``originalLayersNames``; a layout reorder inserted by the plugin
is named ``<producer>_<layout>_<layout>_<consumer>`` and counted under its consumer's stage
and as a "Reorder"). Counters are the plugin's own ``real_time`` per layer, summed over
``--rounds`` calls; their total is compared with the wall time of the same calls.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import build_models
import runners as R

#: (module-path prefix in the source model, stage) in match order; first match wins.
STAGES = (
    ("model.backbone", "backbone (ResNet-18 to layer3)"),
    ("model.feature_extractor", "backbone (ResNet-18 to layer3)"),
    ("model.norms", "LayerNorm of the features"),
    ("flows.0", "flow, stride 4 (64 ch, 64x64)"),
    ("model.fast_flow_blocks.0", "flow, stride 4 (64 ch, 64x64)"),
    ("flows.1", "flow, stride 8 (128 ch, 32x32)"),
    ("model.fast_flow_blocks.1", "flow, stride 8 (128 ch, 32x32)"),
    ("flows.2", "flow, stride 16 (256 ch, 16x16)"),
    ("model.fast_flow_blocks.2", "flow, stride 16 (256 ch, 16x16)"),
    ("model.head", "head (map, fusion, score)"),
    ("model.anomaly_map_generator", "head (map, fusion, score)"),
    ("post_processor", "post-processing (anomalib: normalization, labels, masks)"),
    ("pre_processor", "input (layout, scale, normalize)"),
)
INPUT_STAGE = "input (layout, scale, normalize)"
#: ffrt's profiled paths: (result key, file of build_models.ffrt_paths, precision, keep_fp32, what).
#: The INT8 file's rows run when --prepare built it; on an AMX CPU they show where its
#: quantize/dequantize work goes against the BF16 path's convolutions.
FFRT_SIDES = (
    ("ffrt", "onnx", "bf16", "head", "BF16 with the head FP32 (its default BF16)"),
    ("ffrt_bf16_all", "onnx", "bf16", "none", "BF16 on the whole graph (keep_fp32='none', not gated)"),
    ("ffrt_int8_bf16", "int8", "bf16", "head", "model.int8-cpu.onnx (every convolution INT8), float parts BF16, head FP32"),
    ("ffrt_int8_fp32", "int8", "fp32", "head", "model.int8-cpu.onnx (every convolution INT8), float parts FP32 "
                                              "(what auto runs as ffexport writes it)"),
)
#: Layers a plugin transformation created (no ONNX name to follow): stage by layer type.
BY_TYPE = {"MVN": "LayerNorm of the features", "VariadicSplit": "flows: channel splits merged by the plugin"}
OUTPUTS = {"anomaly_map": "head (map, fusion, score)", "score": "head (map, fusion, score)",
           "pred_score": "post-processing (anomalib: normalization, labels, masks)"}


def onnx_stages(path: Path) -> dict[str, str]:
    """ONNX node name -> stage, from the exporter's module-path metadata."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        stage = INPUT_STAGE
        for prefix, name in STAGES:
            if f"'{prefix}" in scopes:
                stage = name
                break
        out[node.name] = stage
    return out


def _ffrt_backend(path: Path, threads: int, precision: str, keep_fp32: str):
    """ffrt's OpenVINO backend with OpenVINO's per-layer counters on: a subclass that adds
    PERF_COUNT to the compile config, so the cut, the precisions and the shapes are ffrt's own."""
    from ffrt.backends.openvino import OpenVinoBackend
    from ffrt.metafile import read_onnx_meta

    class Profiled(OpenVinoBackend):
        def _config(self, element_type: str) -> dict:
            return {**super()._config(element_type), "PERF_COUNT": True}

    return Profiled(path, read_onnx_meta(path), threads, precision, {"keep_fp32": keep_fp32})


def _ffrt_parts(backend, batch: int):
    """(compiled models, their infer requests) of one batch size. Reads the backend's private
    pool: with the latency hint it holds one set of requests per shape (openvino.py, _Compiled)."""
    compiled = backend._compiled(batch)
    return compiled.parts, compiled._slots.queue[0]


def profile(call, compiled_parts: list, requests: list, source_onnx: Path, rounds: int) -> dict:
    """Counters of ``requests`` over ``rounds`` calls of ``call``; stages from ``source_onnx``."""
    for _ in range(3):
        call()
    stage_of = onnx_stages(source_onnx)
    from ffrt.backends.ovgraph import runtime_precisions

    originals = {n.name: list(n.originals) for c in compiled_parts for n in runtime_precisions(c)}
    by_stage, by_type, by_layer = defaultdict(float), defaultdict(float), defaultdict(float)
    wall = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        wall += time.perf_counter() - t0
        for p in (p for r in requests for p in r.get_profiling_info()):
            ms = p.real_time.total_seconds() * 1e3
            if ms <= 0:
                continue
            name = p.node_name
            candidates = [name, name.split("/")[0]] + originals.get(name, [])
            if p.node_type == "Reorder":
                # <producer>_<layout>_<layout>_<consumer>: the consumer is the ONNX name after the layouts
                candidates = sorted((n for n in stage_of if name.endswith("_" + n)), key=len, reverse=True) + candidates
            stage = next((stage_of[c] for c in candidates if c in stage_of), None) or OUTPUTS.get(name) or \
                BY_TYPE.get(p.node_type, "other (plugin-inserted)")
            by_stage[stage] += ms
            by_type[f"{p.node_type} [{p.exec_type}]"] += ms
            by_layer[(name, p.node_type, p.exec_type, stage)] += ms
    total = sum(by_stage.values())

    def table(d):
        return [{"name": k, "ms_per_call": v / rounds, "share": v / total} for k, v in sorted(d.items(), key=lambda kv: -kv[1])]

    return {
        "rounds": rounds, "wall_ms_per_call": wall * 1e3 / rounds, "counters_ms_per_call": total / rounds,
        "stages": table(by_stage), "layer_types": table(by_type)[:15],
        "top_layers": [{"layer": k[0], "type": k[1], "kernel": k[2], "stage": k[3], "ms_per_call": v / rounds,
                        "share": v / total} for k, v in sorted(by_layer.items(), key=lambda kv: -kv[1])[:20]],
    }


def markdown(result: dict) -> str:
    lines = [f"# Where the time goes: OpenVINO per-layer counters, ResNet-18 FastFlow, batch {result['batch']}", "",
             f"Machine: {result['machine']}. Command: `{result['command']}`. {result['note']}", ""]
    for side in [key for key, *_ in FFRT_SIDES if key in result] + ["anomalib"]:
        p = result[side]
        lines += [f"## {p['title']}", "",
                  f"Compiled: {p['compile']} (runtime_precisions: nodes per precision as the plugin ran them). Wall {p['wall_ms_per_call']:.1f} ms per call, counters sum to "
                  f"{p['counters_ms_per_call']:.1f} ms ({p['rounds']} calls).", "",
                  "| stage | ms per call | share |", "|---|---|---|"]
        lines += [f"| {s['name']} | {s['ms_per_call']:.2f} | {100 * s['share']:.1f}% |" for s in p["stages"]]
        lines += ["", "| layer type [kernel] | ms per call | share |", "|---|---|---|"]
        lines += [f"| {s['name']} | {s['ms_per_call']:.2f} | {100 * s['share']:.1f}% |" for s in p["layer_types"][:10]]
        lines += [""]
    return "\n".join(lines) + "\n"


def run_profile(args, batch_size: int = 8, rounds: int = 10) -> dict:
    from ffeval.machine import describe, one_line

    from peers_timing import frames

    a, f = build_models.anomalib_paths(args.work), build_models.ffrt_paths(args.work)
    data = frames(batch_size)
    x_ffrt, x_ano = R.uint8_nhwc(data), R.float_nchw(data)
    sides = {}
    for key, file_key, precision, keep, what in FFRT_SIDES:
        path = f[file_key]
        if not path.is_file():
            continue
        backend = _ffrt_backend(path, args.threads, precision, keep)
        parts, requests = _ffrt_parts(backend, batch_size)
        sides[key] = profile(lambda b=backend: b.run(x_ffrt), parts, requests, path, rounds)
        sides[key].update(title=f"ffrt ResNet-18 FastFlow on ffrt's OpenVINO backend, {what}, static batch",
                          compile={"backend": backend.description, "runtime_precisions": backend.runtime_precisions})
        backend.close()
    compiled, info = R.ov_compile(a["openvino"], args.threads, False, batch=batch_size, perf_count=True)
    request = compiled.create_infer_request()
    # anomalib's IR was converted from its ONNX export and keeps that file's node names.
    ano = profile(lambda: request.infer({0: x_ano}), [compiled], [request], a["onnx"], rounds)
    from ffrt.backends.ovgraph import precision_counts

    ano.update(title="anomalib FastFlow -> OpenVINO IR, its default precision (BF16 on AMX), static batch",
               compile={**info, "runtime_precisions": {"graph": precision_counts(compiled)}})
    result = {
        "machine": one_line(describe()), "batch": batch_size,
        "command": "python benchmarks/peers/run_peers.py --profile",
        "note": "Per-layer times from OpenVINO's PERF_COUNT; the counters' sum differs from the wall time of the "
                "same calls (both shown), so read the shares. Layers OpenVINO fused into a neighbour (ReLU, Add, ...) "
                "cost nothing of their own.",
        **sides, "anomalib": ano,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=2))
    (args.out / "profile.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'profile.json'} and {args.out / 'profile.md'}")
    return result
