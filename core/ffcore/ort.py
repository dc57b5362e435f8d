"""The one ONNX Runtime session factory, and the physical core count it sizes threads by.

``onnxruntime`` is imported only when a session is made, so importing this module costs
nothing on a machine without it. ffrt's onnxruntime backends, ffcalib's scoring, ffexport's
parity and FP16 checks and ffbench all build their sessions here, so a figure measured by
one tool is measured under the settings of the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

CPU = ("CPUExecutionProvider",)


def physical_core_count() -> int | None:
    """Physical cores this process may run on (None where the OS does not tell us).

    One inference thread per physical core is ONNX Runtime's own rule of thumb: SMT
    siblings share the vector units, so extra threads on them add contention, not speed.
    Counts only CPUs in this process's affinity mask (containers, taskset).
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: ONNX Runtime's own default is physical cores too
        return None
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(), topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology exposed: count logical CPUs
    return max(1, len(cores))


def session_options(threads: int | None = None, *, optimize: bool = True, optimized_path: str | os.PathLike | None = None,
                    quiet: bool = True):
    """SessionOptions of every session of the SDK.

    threads: intra-op threads; None = one per physical core (0 = ORT's default where they
    cannot be counted). The fused graph is one chain (backbone -> flows -> head): parallel
    execution of independent nodes buys nothing and adds scheduling jitter, so execution
    is sequential with one inter-op thread. ``optimize=False`` turns graph optimizations
    off (to run a file as written); ``optimized_path`` saves the optimized graph;
    ``quiet`` shows errors only (converters leave unused initializers ORT warns about).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads if threads is not None else (physical_core_count() or 0)
    options.inter_op_num_threads = 1
    if quiet:
        options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def make_session(model, threads: int | None = None, providers: Sequence = CPU, **options):
    """An ``InferenceSession`` of ``model`` (a path or serialized bytes); ``options`` go to
    :func:`session_options`. Errors are ONNX Runtime's own; callers word them."""
    import onnxruntime as ort

    src = model if isinstance(model, (bytes, bytearray)) else str(model)
    return ort.InferenceSession(src, sess_options=session_options(threads, **options), providers=list(providers))
