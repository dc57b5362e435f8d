"""A real Triton server on loopback: ``ffrt serve`` (PyTriton's tritonserver + Python backend),
called with tritonclient over HTTP and gRPC, against the in-process Detector.

The server starts once for the module (in the serve environment, which the tests create
when the project's cannot run PyTriton: tests/support/serveenv.py) on free loopback ports,
with a 20,000-pixel image limit so that an oversized raw image is cheap to send.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import serveenv  # noqa: E402

httpclient = pytest.importorskip("tritonclient.http", reason='needs the "client" extra (tritonclient)')
grpcclient = pytest.importorskip("tritonclient.grpc", reason='needs the "client" extra (tritonclient)')
from tritonclient.utils import InferenceServerException  # noqa: E402

from ffrt import Detector, InvalidImageError  # noqa: E402
from ffrt.client import RemoteDetector  # noqa: E402
from ffrt.errors import RemoteTimeoutError, ServerUnavailableError  # noqa: E402

MAX_PIXELS = 20_000
MIN_REGION_PX = 3
TOL = 1e-5


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    srv = serveenv.Server(tiny_onnx, log, "--max-pixels", str(MAX_PIXELS), "--max-delay-ms", "20",
                          "--min-region-px", str(MIN_REGION_PX))
    srv.wait_ready()
    yield srv
    code = srv.stop()
    assert code == 0, f"ffrt serve did not stop cleanly on SIGINT (exit {code}):\n{srv.log_tail()}"


@pytest.fixture(scope="module")
def local(tiny_onnx):
    with Detector(tiny_onnx, color_order="RGB", min_region_px=MIN_REGION_PX) as det:
        yield det


@pytest.fixture(scope="module")
def frames(real_images):
    """Real ELPV cells at the model size, and resized/gray/colour variants of other sizes."""
    imgs = [np.ascontiguousarray(i) for i in real_images]
    return imgs[:4] + [
        cv2.resize(imgs[4], (120, 96), interpolation=cv2.INTER_LINEAR),
        cv2.resize(imgs[5], (50, 70), interpolation=cv2.INTER_AREA),
        cv2.cvtColor(imgs[6], cv2.COLOR_RGB2GRAY),
        imgs[7][:, ::-1],  # a view with negative strides
    ]


def _same(remote, ref):
    assert abs(remote.score - ref.score) <= TOL, (remote.score, ref.score)
    assert remote.is_anomalous == ref.is_anomalous
    assert remote.anomaly_map.shape == ref.anomaly_map.shape
    assert float(np.max(np.abs(remote.anomaly_map - ref.anomaly_map))) <= TOL
    assert np.array_equal(remote.mask, ref.mask)
    assert (remote.normalized_score is None) == (ref.normalized_score is None)
    if ref.normalized_score is not None:
        assert abs(remote.normalized_score - ref.normalized_score) <= TOL
    assert len(remote.regions) == len(ref.regions)
    for a, b in zip(remote.regions, ref.regions):  # the masks are equal, so the components are
        assert (a.area_px, a.bbox, a.centroid) == (b.area_px, b.bbox, b.centroid)
        assert abs(a.peak_score - b.peak_score) <= TOL


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_remote_detector_equals_in_process(server, local, frames, proto):
    port = server.http if proto == "http" else server.grpc
    with RemoteDetector(f"127.0.0.1:{port}", protocol=proto, color_order="RGB") as remote:
        for frame in frames:
            _same(remote(frame), local(frame))
        for got, ref in zip(remote.predict_batch(frames), local.predict_batch(frames)):
            _same(got, ref)
        futures = [remote.submit(f) for f in frames]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        for f, frame in zip(futures, frames):
            _same(f.result(timeout=60), local(frame))
        assert remote.stats.count >= 3 * len(frames)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_remote_result_says_what_computed_it_and_where_the_time_went(server, local, frames, proto):
    port = server.http if proto == "http" else server.grpc
    with RemoteDetector(f"127.0.0.1:{port}", protocol=proto, color_order="RGB") as remote:
        results = [remote(frames[0]), *remote.predict_batch(frames[:3])]
    # ffrt serve runs the graph on a Detector of its own (in the serve environment, whose
    # backend="auto" may choose otherwise than the in-process one): the backend its start line
    # names, and the precision that backend computes this FP32 file in.
    started = re.search(r"as 'ffrt_detector' on (.+?); HTTP ", server.log.read_text(errors="replace"))
    assert started, server.log_tail()
    for r in results:
        assert r.backend == f"ffrt serve ffrt_model: {started.group(1)}", r.backend
        assert r.precision == local.precision == "fp32"
        s = r.latency_split
        assert s is not None and s.inference_ms > 0 and s.preprocess_ms >= 0 and s.postprocess_ms >= 0
        # The server's stages plus everything else (queueing, network) as queue_ms: the round trip.
        assert s.queue_ms > 0
        assert s.queue_ms + s.preprocess_ms + s.inference_ms + s.postprocess_ms == pytest.approx(r.latency_ms)
        d = r.to_dict()
        assert d["backend"] == r.backend and d["precision"] == "fp32" and d["inference_ms"] == round(s.inference_ms, 4)


def test_files_and_encoded_bytes_equal_in_process(server, local, frames, tmp_path):
    bgr = cv2.cvtColor(frames[4], cv2.COLOR_RGB2BGR)
    path = tmp_path / "cell.png"
    assert cv2.imwrite(str(path), bgr)
    ok, jpeg = cv2.imencode(".jpg", bgr)
    assert ok
    with RemoteDetector(f"127.0.0.1:{server.http}") as remote:
        _same(remote(path), local(path))  # files decode as BGR on both sides
        _same(remote(str(path)), local(str(path)))
        ref = local(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])
        _same(remote(jpeg.tobytes()), ref)


def test_raw_tritonclient_request_gets_the_result_fields(server, local, frames):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}")
    bgr = cv2.cvtColor(frames[4], cv2.COLOR_RGB2BGR)
    tensor = httpclient.InferInput("image", [1, *bgr.shape], "UINT8")
    tensor.set_data_from_numpy(bgr[None])
    r = client.infer("ffrt_detector", [tensor])
    ref = local(frames[4])
    assert r.as_numpy("score").shape == (1, 1) and abs(float(r.as_numpy("score")[0, 0]) - ref.score) <= TOL
    assert bool(r.as_numpy("is_anomalous")[0, 0]) == ref.is_anomalous
    assert r.as_numpy("anomaly_map").shape == (1, 96, 120) and r.as_numpy("mask").dtype == np.bool_
    regions = r.as_numpy("regions")
    assert regions.ndim == 3 and regions.shape[0] == 1 and regions.shape[2] == 8
    client.close()


def _bytes_request(data: bytes):
    t = httpclient.InferInput("image_bytes", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return [t]


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_bad_requests_get_one_clear_error_and_the_server_keeps_serving(server, local, frames):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}")
    good = cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR)
    wrong_dtype = httpclient.InferInput("image", [1, 64, 64, 3], "FP32")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.float32))
    big = httpclient.InferInput("image", [1, 200, 200, 3], "UINT8")
    big.set_data_from_numpy(np.zeros((1, 200, 200, 3), np.uint8))
    ok, png = cv2.imencode(".png", good)
    raw = httpclient.InferInput("image", [1, *good.shape], "UINT8")
    raw.set_data_from_numpy(good[None])
    two = httpclient.InferInput("image", [1, 64, 64, 2], "UINT8")
    two.set_data_from_numpy(np.zeros((1, 64, 64, 2), np.uint8))
    cases = {
        "wrong dtype": ([wrong_dtype], "expects 'UINT8'"),
        "empty bytes": (_bytes_request(b""), "empty (0 bytes)"),
        "corrupt PNG": (_bytes_request(png.tobytes()[:60]), "cannot be decoded"),
        "oversized raw image": ([big], f"max_pixels={MAX_PIXELS}"),
        "PNG header declaring 40000x40000": (_bytes_request(_png_header(40000, 40000)), "the file was not decoded"),
        "two channels": ([two], "ffrt.InvalidImageError: image has 2 channels"),
        "both inputs": (_bytes_request(png.tobytes()) + [raw], "exactly one of the inputs"),
        "no input": ([], "request has 0 inputs"),  # refused by Triton itself
    }
    for name, (inputs, expected) in cases.items():
        with pytest.raises(InferenceServerException) as err:
            client.infer("ffrt_detector", inputs)
        assert expected in err.value.message(), (name, err.value.message())
        # The next valid request works.
        r = client.infer("ffrt_detector", _bytes_request(png.tobytes()))
        assert abs(float(r.as_numpy("score")[0, 0]) - local(frames[0]).score) <= TOL
    client.close()


def test_bad_image_in_a_dynamic_batch_fails_only_itself(server, local, frames):
    """Concurrent requests are batched by Triton; the corrupt ones fail alone."""
    with RemoteDetector(f"127.0.0.1:{server.grpc}", protocol="grpc", color_order="RGB", workers=16) as remote:
        items = [f if i % 4 else b"\x89PNG\r\n\x1a\nnot a png" for i, f in enumerate(frames * 2)]
        outcomes = remote.predict_batch(items, errors="return")
        for i, (item, got) in enumerate(zip(items, outcomes)):
            if isinstance(item, bytes):
                assert isinstance(got, InvalidImageError) and "refused the image" in str(got) and f"image {i} of" in str(got)
                assert str(got).count(" of 16") == 1  # the client's position, not one in Triton's batch
            else:
                _same(got, local(item))
        with pytest.raises(InvalidImageError, match="image 0 of 2: the server .* refused the image"):
            remote.predict_batch([b"\x89PNG\r\n\x1a\nbad", frames[0]])
    stats = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}").get_inference_statistics(
        "ffrt_detector", headers={"triton-access-token": server.token})
    model = stats["model_stats"][0]
    # Triton's dynamic batcher put several requests into one execution.
    assert int(model["inference_count"]) > int(model["execution_count"]), model


def test_client_side_checks_match_the_detector(server, local):
    with RemoteDetector(f"127.0.0.1:{server.http}") as remote:
        for bad in (None, np.zeros((8, 8, 4), np.uint8), np.full((8, 8), 2.0), np.zeros((8, 8), np.uint16), b""):
            with pytest.raises(InvalidImageError) as remote_err:
                remote(bad)
            if not isinstance(bad, bytes):
                with pytest.raises(InvalidImageError) as local_err:
                    local(bad)
                assert str(remote_err.value) == str(local_err.value)
        future = remote.submit(None)
        with pytest.raises(InvalidImageError):
            future.result(timeout=10)


def test_unreachable_server_missing_model_and_timeout(server):
    closed = serveenv.free_ports(1)[0]
    for proto in ("http", "grpc"):
        with pytest.raises(ServerUnavailableError, match="cannot reach the Triton server .* start it"):
            RemoteDetector(f"127.0.0.1:{closed}", protocol=proto, timeout_s=5)
        port = server.http if proto == "http" else server.grpc
        with pytest.raises(ServerUnavailableError, match="no model 'nope' ready"):
            RemoteDetector(f"127.0.0.1:{port}", model="nope", protocol=proto)
    # A server that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        for proto in ("http", "grpc"):
            with pytest.raises(RemoteTimeoutError, match="no answer .* within 0.5 s"):
                RemoteDetector(f"127.0.0.1:{silent.getsockname()[1]}", protocol=proto, timeout_s=0.5)
    finally:
        silent.close()


def test_thresholds_are_retuned_by_reloading_the_config(server, local, frames):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}")
    original = client.get_model_config("ffrt_detector")
    params = {k: v["string_value"] for k, v in original["parameters"].items()}
    assert float(params["image_threshold"]) == pytest.approx(local.thresholds.image)
    assert float(params["pixel_threshold"]) == pytest.approx(local.thresholds.pixel)
    headers = {"triton-access-token": server.token}
    with pytest.raises(InferenceServerException):  # the repository API is closed without the token
        client.load_model("ffrt_detector", config=json.dumps(original))
    retuned = json.loads(json.dumps(original))
    retuned["parameters"]["image_threshold"]["string_value"] = "1e9"
    retuned["parameters"]["pixel_threshold"]["string_value"] = "1e9"
    try:
        client.load_model("ffrt_detector", config=json.dumps(retuned), headers=headers)
        with RemoteDetector(f"127.0.0.1:{server.http}", color_order="RGB") as remote:
            r = remote(frames[0])
        assert not r.is_anomalous and not r.mask.any() and r.regions == ()
        assert abs(r.score - local(frames[0]).score) <= TOL  # same model, new thresholds
    finally:
        client.load_model("ffrt_detector", config=json.dumps(original), headers=headers)
    with RemoteDetector(f"127.0.0.1:{server.http}", color_order="RGB") as remote:
        _same(remote(frames[0]), local(frames[0]))
    client.close()


def test_health_and_metrics_are_tritons(server):
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/health/ready")[0] == 200
    status, text = server.get("/metrics", port=server.metrics)
    assert status == 200
    for name in serveenv.TRITON_METRICS:
        assert f'{name}{{model="ffrt_detector",' in text, name
    success = [line for line in text.splitlines() if line.startswith('nv_inference_request_success{model="ffrt_detector"')]
    assert float(success[0].split()[-1]) > 0


def test_serve_without_the_extra_says_what_to_install(tiny_onnx, capsys):
    """The project's environment (numpy 2) cannot hold PyTriton: one line naming the extra."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("PyTriton is installed in this environment")
    from ffrt.cli import main

    assert main(["serve", str(tiny_onnx)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '"ffrt[cpu,serve]"' in err and "numpy<2" in err


def test_the_stub_loads_this_interpreters_libpython():
    """The cause of the '_recursion_count' failure: the Python-backend stub must resolve
    libpython3.X.so.1.0 to the serving interpreter's own, which prepare_environment ensures."""
    script = (
        "import os, subprocess, sys, sysconfig\n"
        "from ffrt.triton.serve import prepare_environment\n"
        "from pytriton.utils.distribution import get_stub_path\n"
        "prepare_environment()\n"
        "stub = get_stub_path(f'{sys.version_info[0]}.{sys.version_info[1]}')\n"
        "out = subprocess.run(['ldd', str(stub)], capture_output=True, text=True, env=os.environ).stdout\n"
        "line = next(l for l in out.splitlines() if 'libpython' in l)\n"
        "print(line.split('=>')[1].split()[0]); print(sysconfig.get_config_var('LIBDIR'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = os.pathsep.join(serveenv.trtenv.PACKAGES)
    proc = subprocess.run([serveenv.serve_python(), "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    resolved, libdir = proc.stdout.split()
    assert Path(resolved).resolve().parent == Path(libdir).resolve()


def test_a_port_in_use_is_named_at_once(tiny_onnx):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
        env["PYTHONPATH"] = os.pathsep.join(serveenv.trtenv.PACKAGES)
        http, metrics = serveenv.free_ports(2)
        proc = subprocess.run(
            [serveenv.serve_python(), "-m", "ffrt", "serve", str(tiny_onnx), "--address", "127.0.0.1",
             "--http-port", str(http), "--grpc-port", str(port), "--metrics-port", str(metrics)],
            capture_output=True, text=True, env=env, timeout=60)
    finally:
        busy.close()
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--grpc-port" in proc.stderr
