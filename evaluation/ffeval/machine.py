"""What the numbers were measured on: CPU, its vector flags, GPU, library versions, and
the CPU's theoretical FP32 peak.

Nothing here imports torch, tensorrt or onnxruntime: versions are read from the installed
package metadata, so describing the machine never loads a heavy library (or a GPU context).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from ffcore.nvidia_smi import NvidiaSmiError, query_gpus

#: Flags that decide which CPU kernels ONNX Runtime / oneDNN can use.
RELEVANT_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)

#: Packages whose version a reader needs to reproduce a figure (missing ones are null).
PACKAGES = ("ffrt", "numpy", "opencv-python-headless", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino",
            "tensorrt", "torch", "torchvision", "matplotlib")


def _cpuinfo_text(root: Path) -> str:
    try:
        return (root / "proc" / "cpuinfo").read_text()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict:
    """model name, MHz and flag set of the first processor entry of /proc/cpuinfo text."""
    model, mhz, flags = None, None, set()
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key == "model name" and model is None:
            model = value
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "mhz": mhz, "flags": flags}


def _max_mhz(root: Path) -> float | None:
    try:
        return int((root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


def physical_cores() -> int:
    """Physical cores this process may use (the count ffrt's ONNX Runtime backend uses)."""
    from ffcore.ort import physical_core_count

    return physical_core_count() or os.cpu_count() or 1


def peak_gflops(cores: int, ghz: float, flags: set[str] | frozenset[str], fma_units: int | None = None) -> dict:
    """Theoretical FP32 peak: cores x GHz x FMA units x SIMD lanes x 2 (an FMA is 2 FLOP).

    SIMD lanes from the flags: 16 FP32 lanes with avx512f, 8 with avx/avx2, 4 otherwise
    (SSE). FMA units per core cannot be read from /proc/cpuinfo; the default assumes 2
    (true for Intel Haswell and later client/server cores with AVX2, Xeon Scalable
    Gold/Platinum with AVX-512, AMD Zen 2/3/4; wrong, i.e. a 2x too high peak, for Xeon
    Silver/Bronze and some client parts with one AVX-512 unit, and for AMD Zen 1).
    Without the fma flag a core issues one multiply and one add per cycle, which is
    counted as 1 FMA unit. The INT8 peak with VNNI (avx512_vnni / avx_vnni) is 4x the FP32
    MAC rate per lane (vpdpbusd: 4 u8xs8 products per 32-bit lane); reported, not used.
    """
    flags = set(flags)
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    else:
        lanes, isa = 4, "SSE"
    if fma_units is None:
        fma_units = 2 if "fma" in flags or "avx512f" in flags else 1
        units_note = "assumed (not readable from /proc/cpuinfo)"
    else:
        units_note = "given"
    flop_per_cycle = fma_units * lanes * 2
    gflops = cores * ghz * flop_per_cycle
    vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
    return {
        "fp32_gflops": gflops,
        "formula": "cores x GHz x FMA units x FP32 SIMD lanes x 2 FLOP per FMA",
        "cores": cores,
        "ghz": ghz,
        "fma_units": fma_units,
        "fma_units_source": units_note,
        "simd_isa": isa,
        "fp32_lanes": lanes,
        "flop_per_cycle_per_core": flop_per_cycle,
        "int8_vnni_gops": gflops * 4 if vnni else None,
        "assumptions": [
            f"{fma_units} FMA unit(s) per core, {units_note}",
            "frequency = the nominal 'cpu MHz' of /proc/cpuinfo (or cpufreq max); turbo may be higher, "
            "sustained AVX-512 clocks lower",
            "every core busy with FMAs every cycle: no memory stalls, no other instructions",
            "cores = physical cores available to this process (SMT siblings share the FMA units)",
        ],
    }


#: Matrix-unit rates per core per cycle: "4th Gen Intel Xeon Scalable processor can perform 2048
#: INT8 or 1024 BF16 operations per cycle" (Intel AMX TMUL; Intel's Sapphire Rapids material, as
#: summarized in Wikipedia "Advanced Matrix Extensions"; not measurable from /proc/cpuinfo).
AMX_INT8_OPS_PER_CYCLE = 2048
AMX_BF16_OPS_PER_CYCLE = 1024


def precision_peaks(peak: dict | None, flags: set[str] | frozenset[str]) -> dict:
    """Theoretical peak per precision, from the FP32 peak (:func:`peak_gflops`) and the flags.

    fp32: the FP32 peak. bf16: AMX-BF16 (1024 BF16 FLOP per cycle per core) where amx_bf16,
    else AVX512-BF16 (vdpbf16ps: two BF16 products per 32-bit lane, 2x the FP32 FMA rate), else
    None (no native BF16). int8: AMX-INT8 (2048 ops per cycle per core) where amx_int8, else
    VNNI (vpdpbusd: four u8 x s8 products per 32-bit lane, 4x the FP32 rate), else None. Each
    entry: giga-ops/s, ops per cycle per core, and how it was derived."""
    flags = set(flags)
    if not peak:
        return {"fp32": None, "bf16": None, "int8": None}
    cores, ghz, fp32_cycle = peak["cores"], peak["ghz"], peak["flop_per_cycle_per_core"]

    def entry(per_cycle: float, how: str) -> dict:
        return {"gops": cores * ghz * per_cycle, "ops_per_cycle_per_core": per_cycle, "derivation": how}

    out = {"fp32": entry(fp32_cycle, f"{peak['formula']} ({peak['fma_units']} FMA units, {peak['fp32_lanes']} lanes)")}
    if "amx_bf16" in flags:
        out["bf16"] = entry(AMX_BF16_OPS_PER_CYCLE, "AMX-BF16 tile unit: 1024 BF16 FLOP per cycle per core (Intel)")
    elif "avx512_bf16" in flags:
        out["bf16"] = entry(2 * fp32_cycle, "AVX512-BF16 vdpbf16ps: 2x the FP32 FMA rate")
    else:
        out["bf16"] = None
    if "amx_int8" in flags:
        out["int8"] = entry(AMX_INT8_OPS_PER_CYCLE, "AMX-INT8 tile unit: 2048 ops per cycle per core (Intel)")
    elif {"avx512_vnni", "avx_vnni"} & flags:
        out["int8"] = entry(4 * fp32_cycle, "VNNI vpdpbusd: 4x the FP32 FMA rate")
    else:
        out["int8"] = None
    return out


def gpu_info() -> list[dict] | None:
    """GPUs as nvidia-smi reports them; None when there is no nvidia-smi."""
    try:
        gpus = query_gpus(("name", "driver_version", "memory.total", "compute_cap"))
    except NvidiaSmiError as e:
        return [{"error": str(e)}]
    if gpus is None:
        return None
    return [{"name": g["name"], "driver": g["driver_version"], "memory": g["memory.total"],
             "compute_capability": g["compute_cap"]} for g in gpus]


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's and each installed package's version (None where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe(fma_units: int | None = None, root: str | Path = "/") -> dict:
    """Machine + software description, with the CPU's FP32 peak estimate.

    ``root``: where ``proc/cpuinfo`` and ``sys/.../cpufreq`` are read from (a copy of
    another machine's files describes that CPU; cores and software are this process's)."""
    root = Path(root)
    info = parse_cpuinfo(_cpuinfo_text(root))
    flags = info["flags"]
    cores = physical_cores()
    max_mhz = _max_mhz(root)
    mhz = max_mhz or info["mhz"]
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:
        logical = os.cpu_count()
    cpu = {
        "model": info["model"] or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cpus": logical,
        "physical_cores": cores,
        "mhz": mhz,
        "mhz_source": "cpufreq cpuinfo_max_freq" if max_mhz else "/proc/cpuinfo cpu MHz",
        "flags": {f: f in flags for f in RELEVANT_FLAGS},
        "hypervisor": "hypervisor" in flags,
    }
    peak = peak_gflops(cores, (mhz or 0.0) / 1000.0, flags, fma_units) if mhz else None
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cpu_peak": peak,
        "cpu_peak_by_precision": precision_peaks(peak, flags),
        "gpus": gpu_info(),
        "software": versions(),
    }


def one_line(m: dict) -> str:
    c = m["cpu"]
    on = [f for f, v in c["flags"].items() if v and f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")]
    gpu = "; ".join(g.get("name", "?") + " driver " + g.get("driver", "?") for g in m["gpus"]) if m["gpus"] else "no GPU"
    mhz = f"{c['mhz']:.0f} MHz" if c["mhz"] else "MHz unknown"
    return (f"{c['model']} ({c['physical_cores']} cores / {c['logical_cpus']} logical, {mhz}, {' '.join(on) or 'no AVX2'}"
            f"{', no AVX-512' if not c['flags']['avx512f'] else ''}), {gpu}")


def write_rows(path: Path, rows: list[dict]) -> None:
    """A benchmark's result file: its rows with the machine they were measured on, said on stdout."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine_line": one_line(describe()), "rows": rows}, indent=2))
    print(f"wrote {path}")
