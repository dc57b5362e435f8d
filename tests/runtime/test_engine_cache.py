"""TensorRT plan metadata, cache keys, batch profiles and backend choice, on a CPU host.

No GPU here: TensorRT itself is absent for real (no `tensorrt` module), so these tests
check everything around it that decides whether a plan may run, and the messages a
user gets on a machine without CUDA/TensorRT. The plan bytes are opaque to this logic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_meta
from ffrt import BackendUnavailableError, Detector, InvalidArgumentError, ModelFileError
from ffrt.backends import availability
from ffrt.tensorrt.build import cached_plan, missing_for_tensorrt
from ffrt.tensorrt.plan import BatchProfile, CacheKey, EngineInfo, check_engine, engine_mismatches, read_engine_info, sidecar_path, write_engine
from ffrt.errors import EngineMismatchError

ROOT = Path(__file__).resolve().parents[2]
NO_TRT = missing_for_tensorrt() is not None
needs_no_trt = pytest.mark.skipif(not NO_TRT, reason="TensorRT and a GPU are present on this machine")

PLAN = b"serialized-plan-bytes" * 10


def _info(plan=PLAN, **kw) -> EngineInfo:
    base = dict(
        tensorrt_version="10.9.0",
        gpu_name="NVIDIA RTX A2000",
        compute_capability="8.6",
        graph_sha256="a" * 64,
        source_onnx="/line3/model.fp16.onnx",
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        precision="fp16",
        profile=BatchProfile(min=1, opt=4, max=8),
        workspace_mb=1024,
        built_at="2026-01-01T00:00:00+00:00",
        meta=make_meta(batch_max=8).model_copy(update={"precision": "fp16"}),
    )
    base.update(kw)
    return EngineInfo(**base)


# -- cache key -----------------------------------------------------------------------------


def test_cache_key_changes_with_every_component():
    k = CacheKey("a" * 64, "10.9.0", "NVIDIA RTX A2000", "8.6", "fp16", (1, 4, 8))
    others = [
        CacheKey("b" * 64, "10.9.0", "NVIDIA RTX A2000", "8.6", "fp16", (1, 4, 8)),
        CacheKey("a" * 64, "11.0.0", "NVIDIA RTX A2000", "8.6", "fp16", (1, 4, 8)),
        CacheKey("a" * 64, "10.9.0", "NVIDIA RTX A4000", "8.6", "fp16", (1, 4, 8)),
        CacheKey("a" * 64, "10.9.0", "NVIDIA RTX A2000", "8.9", "fp16", (1, 4, 8)),
        CacheKey("a" * 64, "10.9.0", "NVIDIA RTX A2000", "8.6", "fp32", (1, 4, 8)),
        CacheKey("a" * 64, "10.9.0", "NVIDIA RTX A2000", "8.6", "fp16", (1, 8, 8)),
    ]
    digests = {k.digest()} | {o.digest() for o in others}
    assert len(digests) == 7
    assert k.digest() == CacheKey("a" * 64, "10.9.0", "NVIDIA RTX A2000", "8.6", "fp16", (1, 4, 8)).digest()
    name = k.filename("model")
    assert name.startswith("model.fp16.trt10.9.0.sm86.") and name.endswith(".engine")
    assert _info().key() == k


# -- sidecar -------------------------------------------------------------------------------


def test_sidecar_roundtrip(tmp_path):
    plan_path = write_engine(tmp_path / "model.fp16.engine", PLAN, _info())
    assert plan_path.read_bytes() == PLAN
    side = sidecar_path(plan_path)
    assert side.name == "model.fp16.engine.json"
    data = json.loads(side.read_text())
    assert data["format"] == "ffrt.gpu.engine" and data["tensorrt_version"] == "10.9.0"
    assert data["compute_capability"] == "8.6" and data["gpu_name"] == "NVIDIA RTX A2000"
    assert data["meta"]["precision"] == "fp16" and data["profile"] == {"min": 1, "opt": 4, "max": 8}
    info = read_engine_info(plan_path)
    assert info == _info()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_write_refuses_plan_that_does_not_match_its_info(tmp_path):
    with pytest.raises(ValueError, match="plan_sha256"):
        write_engine(tmp_path / "m.engine", PLAN + b"x", _info())
    assert not (tmp_path / "m.engine").exists()


def test_missing_sidecar_is_refused_with_rebuild_hint(tmp_path):
    p = tmp_path / "model.engine"
    p.write_bytes(PLAN)
    with pytest.raises(ModelFileError, match=r"no metadata sidecar model\.engine\.json.*ffexport .*--engine"):
        read_engine_info(p)


def test_bad_and_newer_sidecars(tmp_path):
    p = write_engine(tmp_path / "model.engine", PLAN, _info())
    side = sidecar_path(p)
    side.write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable engine metadata"):
        read_engine_info(p)
    data = json.loads(_info().model_dump_json())
    data["schema_version"] = 99
    side.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="newer ffrt.*upgrade"):
        read_engine_info(p)
    data = json.loads(_info().model_dump_json())
    del data["plan_sha256"]
    side.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="plan_sha256"):
        read_engine_info(p)


# -- mismatch detection ----------------------------------------------------------------------


def test_matching_plan_passes():
    info = _info()
    assert engine_mismatches(info, tensorrt_version="10.9.0", compute_capability="8.6", graph_sha256="a" * 64,
                             precision="fp16", plan_sha256=info.plan_sha256,
                             profile=BatchProfile(min=1, opt=4, max=8)) == []
    check_engine("p.engine", PLAN, info, tensorrt_version="10.9.0", compute_capability="8.6")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("tensorrt_version", "11.0.0", r"built with TensorRT 10\.9\.0, this machine has TensorRT 11\.0\.0"),
        ("compute_capability", "8.9", r"compute capability 8\.6 \(NVIDIA RTX A2000\), this GPU has 8\.9"),
        ("graph_sha256", "b" * 64, r"built from another graph"),
        ("precision", "fp32", r"built at precision fp16, fp32 was asked for"),
        ("profile", BatchProfile(min=1, opt=8, max=16), r"built for batches 1\.\.8 \(opt 4\), 1\.\.16 \(opt 8\)"),
    ],
)
def test_each_mismatch_is_named_and_refused(field, value, message):
    expected = dict(tensorrt_version="10.9.0", compute_capability="8.6", graph_sha256="a" * 64, precision="fp16")
    expected[field] = value
    with pytest.raises(EngineMismatchError, match=message) as e:
        check_engine("p.engine", PLAN, _info(), **expected)
    assert "Rebuild it on this machine" in str(e.value)
    assert isinstance(e.value, ModelFileError)


def test_modified_plan_is_refused():
    with pytest.raises(EngineMismatchError, match="changed after its metadata"):
        check_engine("p.engine", PLAN + b"!", _info(), tensorrt_version="10.9.0", compute_capability="8.6")


# -- batch profile -----------------------------------------------------------------------------


def test_profile_defaults_and_shapes():
    meta = make_meta(height=32, width=48, batch_max=16)
    prof = BatchProfile.for_model(meta)
    assert (prof.min, prof.opt, prof.max) == (1, 8, 16)
    assert prof.shapes(meta) == ((1, 32, 48, 3), (8, 32, 48, 3), (16, 32, 48, 3))
    assert prof.trtexec_args(meta) == "--minShapes=image:1x32x48x3 --optShapes=image:8x32x48x3 --maxShapes=image:16x32x48x3"
    assert prof.ort_profile_options(meta) == {
        "trt_profile_min_shapes": "image:1x32x48x3",
        "trt_profile_opt_shapes": "image:8x32x48x3",
        "trt_profile_max_shapes": "image:16x32x48x3",
    }
    small = BatchProfile.for_model(make_meta(batch_max=2))
    assert (small.min, small.opt, small.max) == (1, 2, 2)
    assert BatchProfile.for_model(make_meta(batch_max=None)).max == 8


def test_profile_errors():
    meta = make_meta(batch_max=8)
    with pytest.raises(InvalidArgumentError, match="min <= opt <= max"):
        BatchProfile.for_model(meta, 4, 2, 8)
    with pytest.raises(InvalidArgumentError, match="exceeds the batch_max 8"):
        BatchProfile.for_model(meta, 1, 8, 16)
    with pytest.raises(InvalidArgumentError):
        BatchProfile.for_model(meta, 0, 1, 8)


# -- backend choice on a machine without CUDA / TensorRT -----------------------------------------


@needs_no_trt
def test_availability_names_what_is_missing():
    av = availability()
    assert "TensorRT is not installed" in av["tensorrt"] and 'ffrt[gpu]' in av["tensorrt"]
    assert "TensorrtExecutionProvider" in av["onnxruntime-tensorrt"] or "onnxruntime-gpu" in av["onnxruntime-tensorrt"]
    assert av["onnxruntime-cpu"] is None


@needs_no_trt
def test_auto_falls_back_to_cpu_and_says_why(red_model, caplog):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with caplog.at_level(logging.INFO, logger="ffrt"):
        det = Detector(red_model)
    assert det.backend_name in ("onnxruntime-cpu", "openvino")  # whichever CPU backend was measured faster
    skipped = det.backend_selection
    assert [s.split(":")[0] for s in skipped] == ["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"]
    assert "TensorRT is not installed" in skipped[0]
    log = caplog.text
    assert f"chose {det.backend_name}" in log and "skipped tensorrt: TensorRT is not installed" in log
    assert "skipped onnxruntime-tensorrt" in log and "skipped onnxruntime-cuda" in log


@needs_no_trt
def test_explicit_tensorrt_on_onnx_is_refused_clearly(red_model, tmp_path):
    with pytest.raises(BackendUnavailableError, match=r"backend 'tensorrt' is not available here: TensorRT is not installed"):
        Detector(red_model, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        cached_plan(red_model, make_meta(), cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-built


@needs_no_trt
def test_engine_file_without_tensorrt(tmp_path):
    p = write_engine(tmp_path / "model.engine", PLAN, _info())
    with pytest.raises(BackendUnavailableError, match=r"model\.engine: TensorRT engine files need the native TensorRT backend.*not installed"):
        Detector(p)


def test_engine_file_with_an_onnxruntime_backend_is_an_argument_error(tmp_path):
    p = write_engine(tmp_path / "model.engine", PLAN, _info())
    with pytest.raises(InvalidArgumentError, match=r'runs only with backend="tensorrt"'):
        Detector(p, backend="onnxruntime-cpu")


def test_ort_tensorrt_cache_folder_is_keyed_like_plans(red_model, models, tmp_path):
    from ffrt.tensorrt.ort_provider import trt_ep_options

    meta = make_meta(batch_max=4)
    opts, folder = trt_ep_options(red_model, meta, tmp_path)
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(folder)
    assert opts["trt_timing_cache_enable"] and opts["trt_fp16_enable"] is False and opts["trt_int8_enable"] is False
    assert opts["trt_profile_max_shapes"] == "image:4x32x32x3"
    assert folder.parent == tmp_path / "ort-trt"
    # Same graph, other metadata (thresholds): the same folder, ORT's plan is reused.
    assert trt_ep_options(models["red_linear"], meta, tmp_path)[1] == folder
    _, other_precision = trt_ep_options(red_model, meta.model_copy(update={"precision": "fp16"}), tmp_path)
    _, other_profile = trt_ep_options(red_model, make_meta(batch_max=3), tmp_path)
    _, other_graph = trt_ep_options(models["nan"], meta, tmp_path)
    assert len({folder, other_precision, other_profile, other_graph}) == 4


@needs_no_trt
def test_engine_command_without_tensorrt_exits_2_with_the_command(red_model):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("core", "runtime", "export"))}
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['ffexport.tensorrt', {str(red_model)!r}, '--batch-max', '4']\n"
        "try:\n    runpy.run_module('ffexport.tensorrt', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 'NO-TORCH')\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TensorRT is not installed" in lines[0]
    assert f"python -m ffexport.tensorrt {red_model.resolve()} --batch-min 1 --batch-opt 4 --batch-max 4" in lines[0]
    # torch-free: this command must work on a line PC without PyTorch
    assert proc.stdout.strip() == "NO-TORCH"


# -- plans are keyed on the graph; thresholds come from the ONNX (issue 10, item 8) ---------------
# The plan bytes are opaque to all of this (no TensorRT here): the sidecars are written as
# build_plan writes them, from the real exported tiny FastFlow, and thresholds are re-tuned
# with the real `ffcalib thresholds` on real ELPV images.

TRT = "10.9.0"


def _gpu():
    from ffrt.tensorrt.build import GpuInfo

    return GpuInfo("NVIDIA RTX A2000", "8.6")


def _built(onnx_path, plan_path, profile=None):
    """Write a plan + sidecar for ``onnx_path`` the way build_plan/write_engine do on a GPU host."""
    from ffrt.tensorrt.plan import graph_sha256
    from ffcore.files import sha256_file
    from ffrt.metafile import read_onnx_meta

    meta = read_onnx_meta(onnx_path)
    profile = profile or BatchProfile.for_model(meta)
    info = EngineInfo(
        tensorrt_version=TRT, gpu_name=_gpu().name, compute_capability=_gpu().compute_capability,
        graph_sha256=graph_sha256(onnx_path), source_onnx=str(Path(onnx_path).resolve()),
        onnx_sha256=sha256_file(onnx_path), plan_sha256=hashlib.sha256(PLAN).hexdigest(), precision=meta.precision,
        profile=profile, built_at="2026-01-01T00:00:00+00:00", meta=meta.model_copy(update={"batch_max": profile.max}),
    )
    return write_engine(plan_path, PLAN, info)


def _other_graph(src, dst):
    """The same model with one weight changed: another graph, identical metadata."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    init = next(t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(1e-3), init.name))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture
def line(tiny_onnx, tmp_path):
    """A line PC's model folder holding the exported tiny model."""
    import shutil

    folder = tmp_path / "line3"
    folder.mkdir()
    shutil.copy(tiny_onnx, folder / "model.onnx")
    return folder


def test_graph_hash_ignores_metadata_only(line, tmp_path):
    import onnx

    from ffrt.tensorrt.plan import graph_sha256

    from ffcore.files import sha256_file
    from ffrt.metafile import read_onnx_meta, write_onnx_meta

    model = line / "model.onnx"
    graph, file_sha = graph_sha256(model), sha256_file(model)
    assert graph == graph_sha256(model.read_bytes()) == graph_sha256(onnx.load(str(model)))
    meta = read_onnx_meta(model)
    write_onnx_meta(model, meta.with_thresholds(meta.thresholds.image * 2, meta.thresholds.pixel * 2, "re-tuned"))
    assert sha256_file(model) != file_sha and graph_sha256(model) == graph
    assert graph_sha256(_other_graph(model, tmp_path / "other.onnx")) != graph


def test_retuned_thresholds_keep_the_cache_key_and_reach_the_engines(line, elpv_split, tmp_path, capsys):
    """The demonstration: `ffcalib thresholds` on the line PC changes the thresholds every
    engine uses, while the cached plan stays a valid hit (no rebuild) and the explicit
    engine needs no rebuild either."""
    import shutil

    from ffcalib.cli import main as ffcalib
    from ffrt.tensorrt.build import lookup_cached_plan
    from ffrt.tensorrt.plan import engine_meta, read_engine_info
    from ffrt.metafile import read_onnx_meta

    model, cache = line / "model.onnx", tmp_path / "cache"
    meta = read_onnx_meta(model)
    profile = BatchProfile.for_model(meta)
    entry, miss = lookup_cached_plan(model, meta, cache, TRT, _gpu(), profile)
    assert miss is not None and not entry.exists()  # first use: a build is needed
    _built(model, entry)  # ... which writes the plan under the key's name
    explicit = _built(model, line / "model.engine")  # and `ffexport --engine` wrote this one
    assert lookup_cached_plan(model, meta, cache, TRT, _gpu(), profile) == (entry, None)

    normals = tmp_path / "normals"
    normals.mkdir()
    for s in [s for s in elpv_split.test if s.label == 0][:12]:
        shutil.copy(s.path, normals / s.path.name)
    assert ffcalib(["thresholds", "--model", str(model), "--normal", str(normals), "--target-frr", "0.25",
                    "--backend", "onnxruntime-cpu", "--no-progress"]) == 0
    retuned = read_onnx_meta(model)
    assert retuned.thresholds.image != meta.thresholds.image and retuned.thresholds.source.startswith("ffcalib")

    # Cache: the same entry is still a valid hit for the re-tuned file: no rebuild, nothing new.
    assert lookup_cached_plan(model, retuned, cache, TRT, _gpu(), profile) == (entry, None)
    assert entry.read_bytes() == PLAN and sorted(p.name for p in cache.iterdir()) == sorted(
        [entry.name, entry.name + ".json"])
    # Explicit engine: its sidecar still holds the build-time thresholds, the Detector's
    # metadata comes from the ONNX next to it.
    assert read_engine_info(explicit).meta.thresholds == meta.thresholds
    used = engine_meta(explicit)
    assert used.thresholds == retuned.thresholds and used.score_stats == retuned.score_stats
    assert used.batch_max == profile.max


def test_explicit_engine_next_to_another_graph_is_refused(line, tmp_path):
    from ffrt.tensorrt.plan import engine_meta

    explicit = _built(line / "model.onnx", line / "model.engine")
    _other_graph(line / "model.onnx", line / "model.onnx")  # re-exported, engine not rebuilt
    with pytest.raises(EngineMismatchError, match=r"built from another graph than model\.onnx next to it.*Rebuild"):
        engine_meta(explicit)


def test_explicit_engine_without_its_onnx_uses_the_sidecar_and_says_so(line, tmp_path):
    from ffrt.tensorrt.plan import engine_meta, sidecar_path

    explicit = _built(line / "model.onnx", line / "model.engine")
    frozen = read_engine_info(explicit).meta
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for f in (explicit, sidecar_path(explicit)):
        f.rename(moved / f.name)
    warnings: list[str] = []
    assert engine_meta(moved / "model.engine", log=warnings.append).thresholds == frozen.thresholds
    assert len(warnings) == 1 and "no source ONNX (model.onnx) next to it" in warnings[0]

    # A schema-1 sidecar (no graph hash) next to its ONNX: cannot be matched, sidecar + warning.
    old = json.loads(sidecar_path(moved / "model.engine").read_text())
    for k in ("graph_sha256", "source_onnx"):
        old.pop(k)
    old["schema_version"] = 1
    sidecar_path(line / "v1.engine").write_text(json.dumps(old))
    (line / "v1.engine").write_bytes(PLAN)
    import shutil

    shutil.copy(line / "model.onnx", line / "v1.onnx")
    warnings.clear()
    assert engine_meta(line / "v1.engine", log=warnings.append).thresholds == frozen.thresholds
    assert "records no graph hash" in warnings[0]


def test_prune_keeps_one_plan_per_source_and_removes_stale_temp_files(line, tmp_path):
    import time

    from ffrt.tensorrt.build import STALE_TMP_AGE_S, prune_cache

    cache = tmp_path / "cache"
    model = line / "model.onnx"
    station4 = tmp_path / "line4"
    station4.mkdir()
    other_station = _other_graph(model, station4 / "model.onnx")  # another line's model.onnx, same name
    old = _built(_other_graph(model, tmp_path / "old.onnx"), cache / "model.old.engine")
    sidecar_path(old).write_text(sidecar_path(old).read_text().replace(str((tmp_path / "old.onnx").resolve()),
                                                                        str(model.resolve())))  # line 3, before re-export
    current = _built(model, cache / "model.current.engine")
    neighbour = _built(other_station, cache / "model.station4.engine")
    stale = cache / ".model.x.engine.abc123.tmp"
    fresh = cache / ".model.y.engine.def456.tmp"
    for t in (stale, fresh):
        t.write_bytes(b"half a plan")
    long_ago = time.time() - STALE_TMP_AGE_S - 60
    os.utime(stale, (long_ago, long_ago))

    removed = prune_cache(cache, current, str(model.resolve()))
    assert sorted(p.name for p in removed) == sorted([old.name, old.name + ".json", stale.name])
    left = sorted(p.name for p in cache.iterdir())
    assert left == sorted([current.name, current.name + ".json", neighbour.name, neighbour.name + ".json", fresh.name])
