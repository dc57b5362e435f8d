"""``backend="auto"`` on a CPU: which CPU backend runs this model faster on this machine.

Measured, not assumed: OpenVINO is faster than ONNX Runtime on some models and CPUs and slower
on others (FP32 on AVX-512 included), so a fixed order would be wrong somewhere. When more
than one CPU backend starts, :func:`pick` times them on this model, interleaved round by round
(a busy core slows all of them alike; each turn starts with an untimed call, which takes the
previous runtime's spinning threads), at batch 1 and at the model's usual chunk (8, or
``batch_max`` if smaller), each in the precision it resolved (``precision="auto"``: OpenVINO
runs BF16 only on a file with a passed BF16 gate). The first of ``AUTO_ORDER``'s CPU backends
(ONNX Runtime) is kept unless another is faster by more than :data:`MARGIN`.

The result is remembered in ``<engine cache>/cpu-backend-choice.json`` (``$FFRT_ENGINE_CACHE``,
default ``~/.cache/ffrt/engines``) under a key of the graph's sha256, the backends with their
precision, threads and library versions, and this CPU (model name, the vector/matrix flags),
so the probe (a few seconds at 256x256) runs once per model and machine. The key is made from
the candidates before any is started (:func:`plan_key`), so a remembered choice starts that one
backend only (:func:`remembered`): opening a Detector does not compile every candidate again.
Delete the file to measure again; pass ``backend=`` to choose without measuring.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    """What the choice uses of a backend (ffrt.backends.base.Backend has it; base calls this
    module, so importing base here would make a cycle)."""

    name: str
    precision: str
    description: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


log = logging.getLogger("ffrt")


def label(backend: Backend) -> str:
    """The backend's name, and the precision variant it runs if any (``Backend.label``)."""
    return getattr(backend, "label", None) or backend.name


CACHE_NAME = "cpu-backend-choice.json"
#: A challenger must take at most this fraction of the incumbent's time per image. Keeping the
#: incumbent therefore costs at most 3% against the fastest (issue 27's bar for auto); a smaller
#: margin would let the probe's own noise on a shared machine decide between near-equals.
MARGIN = 0.97
#: Rounds per batch size (after one untimed warm-up run of each backend); in each round every
#: backend takes a turn of REWARM untimed calls, then PER_TURN timed ones.
ROUNDS = 4
PER_TURN = 2
#: The first call after another runtime ran is slowed by that runtime's spinning worker threads,
#: whichever came before (ffcore.timing.interleaved): untimed, or the candidate measured after an
#: ONNX Runtime one looked up to 50% slower than it is, and auto chose by the order it measured in.
REWARM = 1
#: Untimed pause after each turn.
SETTLE_S = 0.02
#: CPU flags that change which kernels the backends can use.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
MAX_ENTRIES = 64


def cpu_signature() -> str:
    """CPU model name and the flags in :data:`FLAGS` it has (Linux; the platform elsewhere)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return f"{name} [{' '.join(f for f in FLAGS if f in flags)}] {platform.machine()}"


def _versions() -> str:
    from importlib import metadata

    out = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def cache_path() -> Path:
    from ..tensorrt.build import default_cache_dir

    return default_cache_dir() / CACHE_NAME


def _key(backends: list[Backend], model_path: Path, threads: int | None) -> str:
    from ..tensorrt.plan import graph_sha256

    parts = [graph_sha256(model_path), cpu_signature(), _versions(), f"threads={threads}"]
    parts += [f"{label(b)}:{b.precision}:{b.description}" for b in backends]
    parts += [graph_sha256(b.variant.path) for b in backends if getattr(b, "variant", None) is not None]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def plan_key(candidates: list[Any], model_path: Path, threads: int | None, options: dict) -> str:
    """The cache key of one "auto" measurement, from what it would measure (ffrt.backends.base
    ``Candidate``: backend name, file, precision asked), before any backend is started: the
    files' graphs, this CPU and core count, the libraries, threads and backend options."""
    from ..tensorrt.plan import graph_sha256

    hashes: dict[Path, str] = {}  # each file parsed once (about 40 ms for an 8 MB graph): this runs on every open

    def sha(path) -> str:
        if Path(path) not in hashes:
            hashes[Path(path)] = graph_sha256(path)
        return hashes[Path(path)]

    parts = [sha(model_path), cpu_signature(), f"cpus={os.cpu_count()}", _versions(), f"threads={threads}",
             json.dumps(options, sort_keys=True, default=str)]
    parts += [f"{c.name}:{c.precision}:{c.path.name}:{sha(c.path)}" for c in candidates]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Remembered:
    """An earlier measurement's choice among the same candidates: the candidate to start, the
    label it was measured under, and the line that says so."""

    candidate: Any
    label: str
    line: str


def remembered(candidates: list[Any], model_path: Path, threads: int | None, options: dict) -> Remembered | None:
    """The remembered choice for these candidates on this machine, or None (never measured, a
    damaged file, or an entry from before the plan was recorded: measure)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not candidates:
        return None
    entry = _read_cache()["entries"].get(plan_key(candidates, model_path, threads, options))
    if not isinstance(entry, dict):
        return None
    chosen = entry.get("chosen")
    planned = (entry.get("plan") or {}).get(chosen)
    match = [c for c in candidates if planned == [c.name, c.path.name, c.precision]]
    if not match or not isinstance(entry.get("ms_per_image"), dict):
        return None
    how = f"measured {entry.get('measured_at', '')}, remembered in {cache_path()}"
    return Remembered(match[0], chosen, _choice_line(chosen, entry, how, candidates[0].name))


def _choice_line(chosen: str, entry: dict, how: str, incumbent: str) -> str:
    figures = ", ".join(f"{n} {v:.2f} ms/image" for n, v in entry["ms_per_image"].items())
    return (f"{chosen} measured against the other CPU candidates: {figures} (batch "
            f"{' and '.join(map(str, entry['batches']))}, {how}; another than {incumbent} must be "
            f"{100 * (1 - MARGIN):.0f}% faster to be chosen)")


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {"entries": {}}
    except (OSError, ValueError):
        return {"entries": {}}  # absent or damaged: measure again


def _write_cache(key: str, entry: dict) -> None:
    from ffcore.files import atomic_write_bytes

    data = _read_cache()
    entries = data["entries"]
    entries.pop(key, None)
    entries[key] = entry
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path(), json.dumps({"entries": entries}, indent=1).encode())
    except OSError as e:  # a read-only home: measure again next time, say so once
        log.info("ffrt: could not remember the CPU backend choice in %s (%s)", cache_path(), e)


def measure(backends: list[Backend], height: int, width: int, batches: tuple[int, ...]) -> dict[str, float]:
    """Median milliseconds per image of each backend, averaged over ``batches``; rounds
    interleaved (ffcore.timing.interleaved, with its settle pause after every call)."""
    from ffcore.timing import interleaved

    rng = np.random.default_rng(0)
    per_image: dict[str, list[float]] = {label(b): [] for b in backends}
    for n in batches:
        x = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
        # warm-up: memory arenas, kernel choice, OpenVINO's compile for this batch size
        times = interleaved({label(b): (lambda b=b: b.run(x)) for b in backends}, rounds=ROUNDS, warmup=1,
                            settle_s=SETTLE_S, per_turn=PER_TURN, rewarm=REWARM)
        for name, t in times.items():
            per_image[name].append(float(np.median(t)) / n)
    return {name: float(np.mean(v)) for name, v in per_image.items()}


def pick(backends: list[Backend], model_path: Path, meta, threads: int | None,
         key: str | None = None) -> tuple[Backend, str]:
    """The backend to keep (the others are closed) and one line saying how it was chosen.
    ``key``: the cache key (:func:`plan_key` of the candidates these backends were started
    from; None: one made from the started backends, which :func:`remembered` cannot find)."""
    incumbent = backends[0]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        chosen, line = incumbent, f"not measured on {platform.machine()} (the CPU choice is measured on x86 only)"
    else:
        key = key or _key(backends, model_path, threads)
        entry = _read_cache()["entries"].get(key)
        names = {label(b): b for b in backends}
        # what remembered() starts next time: backend, file, precision asked
        plan = {label(b): [c.name, c.path.name, c.precision] for b in backends
                if (c := getattr(b, "candidate", None)) is not None}
        if entry is None or entry.get("chosen") not in names:
            batches = tuple(sorted({1, min(8, meta.batch_max or 8)}))
            ms = measure(backends, meta.input.height, meta.input.width, batches)
            best = min(ms, key=ms.get)
            chosen_name = best if ms[best] <= MARGIN * ms[label(incumbent)] else label(incumbent)
            entry = {"chosen": chosen_name, "ms_per_image": ms, "batches": list(batches), "cpu": cpu_signature(),
                     "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "backends": {label(b): b.description for b in backends}, "plan": plan}
            _write_cache(key, entry)
            how = "measured now"
        else:
            how = f"measured {entry.get('measured_at', '')}, remembered in {cache_path()}"
            if plan and entry.get("plan") != plan:  # an entry remembered() could not follow: it can now
                _write_cache(key, {**entry, "plan": plan})
        chosen = names[entry["chosen"]]
        line = _choice_line(label(chosen), entry, how, label(incumbent))
    for b in backends:
        if b is not chosen:
            b.close()
    return chosen, line
