"""``ffrt serve`` against hostile requests and killed processes, on a real Triton on loopback.

One server (ffrt serve's default address, a 20,000-pixel limit) is watched from its launch:
its readiness, the addresses it listens on, HTTP requests declaring tensors no valid request
has. Then its tritonserver is killed (ffrt serve must exit leaving nothing), a second server
starts at once on the same ports and is killed in turn (SIGKILL of ffrt serve itself), and a
third start must remove what that one left.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import serveenv  # noqa: E402

httpclient = pytest.importorskip("tritonclient.http", reason='needs the "client" extra (tritonclient)')

from ffrt import Detector  # noqa: E402

MAX_PIXELS = 20_000
TOL = 1e-5
GB = 1 << 30


def _processes() -> dict[int, tuple[int, str, list[str]]]:
    """{pid: (parent pid, name, command line)} of every process here."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), name, cmdline)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Tree:
    """A running ffrt serve's tritonserver, its stub processes and what they name."""

    def __init__(self, srv: serveenv.Server):
        procs = _processes()
        self.triton = next(p for p, (ppid, name, _) in procs.items() if ppid == srv.proc.pid and name == "tritonserver")
        cmd = procs[self.triton][2]
        self.workdir = Path(cmd[cmd.index("--model-repository") + 1]).parent
        self.stubs = {p: c for p, (ppid, _, c) in procs.items() if ppid == self.triton and c[0].endswith("_stub")}
        # The folder tritonserver writes for ffrt_model (loaded by PyTriton with a config).
        self.model_folders = {Path(c[1]).parents[1] for c in self.stubs.values() if not c[1].startswith(str(self.workdir))}
        self.shm_prefix = f"pytrtion{srv.proc.pid}-"

    def segments(self) -> list[str]:
        return [p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(self.shm_prefix)]

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.triton}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


def _listening(port: int) -> set[str]:
    """The local addresses listening on ``port`` (IPv4 and IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                packed = bytes.fromhex(addr)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, packed[::-1]))
                else:
                    words = b"".join(packed[i:i + 4][::-1] for i in range(0, 16, 4))
                    address = socket.inet_ntop(socket.AF_INET6, words)
                    found.add(address.removeprefix("::ffff:"))  # an IPv4 address on a dual-stack socket
    return found


def _post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, (json.loads(data) if data else {})


def _infer(port: int, frame: np.ndarray) -> float:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
    try:
        tensor = httpclient.InferInput("image", [1, *frame.shape], "UINT8")
        tensor.set_data_from_numpy(frame[None])
        return float(client.infer("ffrt_detector", [tensor]).as_numpy("score")[0, 0])
    finally:
        client.close()


@pytest.fixture(scope="module")
def local(tiny_onnx):
    with Detector(tiny_onnx, color_order="BGR") as det:
        yield det


@pytest.fixture(scope="module")
def frame(real_images):
    return np.ascontiguousarray(real_images[0][:, :, ::-1])  # BGR, as raw requests send it


@pytest.fixture(scope="module")
def launch(tiny_onnx, tmp_path_factory, frame):
    """The first server, watched from its launch: [(seconds, /v2/health/ready status, what an
    inference sent right then gave)] until it reports ready, then the server."""
    log = tmp_path_factory.mktemp("serve-hostile") / "first.log"
    srv = serveenv.Server(tiny_onnx, log, "--max-pixels", str(MAX_PIXELS), address=None)
    seen = []
    start = time.monotonic()
    while time.monotonic() - start < 240:
        if srv.proc.poll() is not None:
            pytest.fail(f"ffrt serve exited with {srv.proc.returncode}:\n{srv.log_tail()}")
        status = srv.get("/v2/health/ready")[0]
        outcome = None
        if status == 200:
            try:
                outcome = _infer(srv.http, frame)
            except Exception as e:
                outcome = e
        seen.append((time.monotonic() - start, status, outcome))
        if status == 200:
            break
        time.sleep(0.05)
    srv.wait_ready()
    yield seen, srv
    srv.stop()


def test_ready_only_when_the_model_answers(launch, local, frame):
    seen, _ = launch
    statuses = [s for _, s, _ in seen]
    assert statuses[-1] == 200, seen[-5:]
    outcome = seen[-1][2]
    assert isinstance(outcome, float), f"ready, but an inference right then failed: {outcome}"
    assert abs(outcome - local(frame).score) <= TOL
    assert 503 in statuses, "while the models loaded, readiness should have said 503"


def test_listens_on_loopback_by_default(launch):
    _, srv = launch
    for port in (srv.http, srv.grpc, srv.metrics):
        assert _listening(port) == {"127.0.0.1"}, (port, _listening(port))
    log = srv.log.read_text(errors="replace")
    # Triton's own HTTP port (behind the guard) is loopback too; nothing warns.
    assert '"Started HTTPService at 127.0.0.1:' in log and "warning: listening on" not in log


@pytest.mark.parametrize("model", ["ffrt_detector", "ffrt_model"])
def test_declared_sizes_are_refused_before_triton_allocates_them(launch, local, frame, model):
    _, srv = launch
    tree = Tree(srv)
    peak = tree.peak_rss()
    json_requests = {
        "[1,100000,100000,3] with 3 bytes": [1, 100000, 100000, 3],
        "[1,20000,20000,3] with 3 bytes": [1, 20000, 20000, 3],
        "a batch of 10^12 1x1 images": [10**12, 1, 1, 3],
    }
    # Triton also answers the absolute form of a request target, with any scheme.
    targets = (f"/v2/models/{model}/infer", f"http://127.0.0.1/v2/models/{model}/infer",
               f"x://y/v2/models/{model}/versions/1/infer?a")
    for (name, shape), target in zip(json_requests.items(), targets):
        body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": shape, "data": [1, 2, 3]}]})
        status, answer = _post(srv.http, target, body.encode())
        assert status == 400, (name, target, status, answer)
        assert str(shape).replace(" ", "") in answer["error"].replace(" ", "") or "pixels" in answer["error"], answer
    # Triton reads the first of two equal keys (Python's json the last).
    hostile = json.dumps([{"name": "image", "datatype": "UINT8", "shape": [1, 100000, 100000, 3], "data": [1]}])
    status, answer = _post(srv.http, f"/v2/models/{model}/infer", b'{"inputs": %s, "inputs": []}' % hostile.encode())
    assert status == 400 and "'inputs' more than once" in answer["error"], answer
    # The binary extension: a JSON header declaring 1.2 GB, followed by 12 bytes.
    header = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 20000, 20000, 3],
                                     "parameters": {"binary_data_size": 12}}]}).encode()
    status, answer = _post(srv.http, f"/v2/models/{model}/infer", header + bytes(12),
                           {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "20000" in answer["error"], answer
    for bad in ([1, -64, 64, 3], [1, 64.5, 64, 3], "64"):
        body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": bad, "data": [0]}]}).encode()
        status, answer = _post(srv.http, f"/v2/models/{model}/infer", body)
        assert status == 400 and "non-negative integers" in answer["error"], (bad, answer)
    # Nothing of those sizes was allocated, the server is up and the next request is answered.
    assert tree.peak_rss() - peak < 0.25 * GB, (peak, tree.peak_rss())
    assert srv.proc.poll() is None and _alive(tree.triton)
    assert abs(_infer(srv.http, frame) - local(frame).score) <= TOL
    assert srv.get("/v2/health/ready")[0] == 200
    assert "bad_alloc" not in srv.log.read_text(errors="replace")


def test_an_oversized_image_is_refused_with_the_detectors_message(launch, local, frame):
    _, srv = launch
    rows, cols = 101, 200  # 20,200 pixels
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, rows, cols, 3],
                                   "data": [0] * (rows * cols * 3)}]}).encode()
    status, answer = _post(srv.http, "/v2/models/ffrt_detector/infer", body)
    assert status == 400 and answer["error"].startswith("ffrt.InvalidImageError: ")
    assert f"{cols}x{rows} pixels" in answer["error"] and f"max_pixels={MAX_PIXELS}" in answer["error"]
    # Exactly at the limit (100 x 200): forwarded, and answered by the model.
    rows = 100
    image = np.zeros((rows, cols, 3), np.uint8)
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, rows, cols, 3],
                                   "data": image.ravel().tolist()}]}).encode()
    status, answer = _post(srv.http, "/v2/models/ffrt_detector/infer", body)
    assert status == 200, answer
    score = next(o for o in answer["outputs"] if o["name"] == "score")["data"][0]
    assert abs(score - local(image).score) <= TOL


def test_killed_tritonserver_leaves_nothing_and_the_ports_restart_at_once(launch, tiny_onnx, tmp_path, local, frame):
    _, srv = launch
    tree = Tree(srv)
    assert tree.stubs and tree.model_folders and tree.segments() and tree.workdir.is_dir()
    # Connections open to every port, as clients keep them: closed by the server when it dies,
    # they hold the ports in TIME_WAIT for a minute.
    keep = [socket.create_connection(("127.0.0.1", p)) for p in (srv.http, srv.grpc, srv.metrics)]
    os.kill(tree.triton, signal.SIGKILL)
    assert srv.proc.wait(timeout=60) == 1
    assert "the Triton server stopped unexpectedly" in srv.log_tail()
    for c in keep:
        c.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in tree.stubs):
        time.sleep(0.2)
    assert not [p for p in tree.stubs if _alive(p)], "stub processes outlived tritonserver"
    assert tree.segments() == [] and not tree.workdir.exists()
    assert not [f for f in tree.model_folders if f.exists()]

    # A port whose last connection is in TIME_WAIT is free for a server (SO_REUSEADDR): make
    # sure the HTTP port is in that state (the side that closes first keeps TIME_WAIT).
    listener = socket.create_server(("127.0.0.1", srv.http))
    client = socket.create_connection(("127.0.0.1", srv.http))
    accepted, _ = listener.accept()
    accepted.close()
    client.close()
    listener.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", srv.http))  # refused without SO_REUSEADDR: the case at hand
    second = serveenv.Server(tiny_onnx, tmp_path / "second.log", ports=(srv.http, srv.grpc, srv.metrics))
    second.wait_ready()
    assert abs(_infer(second.http, frame) - local(frame).score) <= TOL

    # SIGKILL of ffrt serve itself: PyTriton's tritonserver follows it, its folders stay; the
    # next start removes them and says so.
    left = Tree(second)
    os.kill(second.proc.pid, signal.SIGKILL)
    second.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(left.triton):
        time.sleep(0.2)
    third = serveenv.Server(tiny_onnx, tmp_path / "third.log")
    try:
        third.wait_ready()
        assert f"removed what a killed ffrt serve (pid {second.proc.pid}) left" in third.log_tail(100_000)
        assert not left.workdir.exists() and not [f for f in left.model_folders if f.exists()]
        assert left.segments() == [] and not [p for p in [left.triton, *left.stubs] if _alive(p)]
        mine = Tree(third)
    finally:
        assert third.stop() == 0
    assert not mine.workdir.exists() and not [f for f in mine.model_folders if f.exists()] and mine.segments() == []
