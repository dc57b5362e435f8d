"""The one nvidia-smi query: which NVIDIA GPUs this host's driver lists, and their properties.

Used where no CUDA library is loaded (machine descriptions, the GPU checks) or as the
fallback when the CUDA host API cannot say (ffrt.tensorrt.build.gpu_info).
"""

from __future__ import annotations

import shutil
import subprocess


class NvidiaSmiError(RuntimeError):
    """nvidia-smi is there but did not answer (the message says how it failed)."""


def query_gpus(fields: tuple[str, ...], device: int | None = None, timeout_s: float = 20.0) -> list[dict[str, str]] | None:
    """One dict per GPU (``device``: only that index) with each of ``fields`` (nvidia-smi
    ``--query-gpu`` names, e.g. "name", "compute_cap", "driver_version", "memory.total") as a
    string; None when nvidia-smi is not installed (no NVIDIA driver). NvidiaSmiError when it
    fails or times out."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]
    if device is not None:
        cmd.append(f"--id={device}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NvidiaSmiError(f"nvidia-smi failed: {e}") from e
    gpus = []
    for line in out.strip().splitlines():
        # Names may hold commas ("NVIDIA H100 80GB HBM3, ..." does not, but be safe): the
        # last fields are numbers, so split from the right.
        parts = [p.strip() for p in line.rsplit(",", len(fields) - 1)]
        parts += [""] * (len(fields) - len(parts))
        gpus.append(dict(zip(fields, parts)))
    return gpus
