"""ffrt serve's guards that need no Triton: the infer-request checks of the HTTP guard, the
port probe, the address warning, and the removal of a killed server's leftovers (with real
processes, shared-memory files and folders). tests/triton/test_triton_serve_hostile.py runs
them all on a real server."""

from __future__ import annotations

import argparse
import hashlib
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ffrt.errors import InvalidArgumentError
from ffrt.preprocess import ImageLimits
from ffrt.triton import leftovers
from ffrt.triton.http_guard import HttpGuard
from ffrt.triton.request_guard import MAX_JSON_BYTES, RequestBounds, infer_path_model, infer_request_problem
from ffrt.triton.serve import _check_ports, exposure_warning

#: 2 images of at most 100 pixels, 3 bytes a pixel: no valid request holds a tensor above 600 bytes.
BOUNDS = RequestBounds(ImageLimits(max_pixels=100, min_side=1), max_batch=2)


def _binary(shape, datatype="UINT8", name="image") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                   "parameters": {"binary_data_size": 1}}]}).encode()


def test_infer_paths():
    assert infer_path_model("/v2/models/ffrt_detector/infer") == "ffrt_detector"
    assert infer_path_model("/v2/models/ffrt_model/versions/1/infer?x=1") == "ffrt_model"
    # Triton answers the absolute form too, with any scheme.
    assert infer_path_model("http://127.0.0.1/v2/models/ffrt_detector/infer") == "ffrt_detector"
    assert infer_path_model("x://y/v2/models/ffrt_detector/versions/1/infer?a#b") == "ffrt_detector"
    # Anything else that mentions infer is checked without the per-model rules.
    for unclear in ("/v2/models/a/b/infer", "/v2/models/ffrt_detector/INFER", "//v2/models/x/infer"):
        assert infer_path_model(unclear) in ("", "x"), unclear
    for other in ("/v2/models/ffrt_detector/ready", "/v2/models/ffrt_detector", "/v2/health/ready",
                  "/v2/repository/models/ffrt_detector/load"):
        assert infer_path_model(other) is None, other


def test_declared_bytes_above_the_largest_valid_tensor_are_refused():
    assert BOUNDS.max_tensor_bytes == 600
    assert infer_request_problem("ffrt_model", _binary([2, 10, 10, 3]), BOUNDS) is None  # 600 bytes
    assert infer_request_problem("ffrt_model", _binary([1, 600]), BOUNDS) is None
    problem = infer_request_problem("ffrt_model", _binary([1, 601]), BOUNDS)
    assert problem and "[1, 601]" in problem and "--max-pixels" in problem
    assert infer_request_problem("ffrt_model", _binary([1, 150], "FP32"), BOUNDS) is None  # 600 bytes
    assert infer_request_problem("ffrt_model", _binary([1, 151], "FP32"), BOUNDS) is not None
    assert infer_request_problem("ffrt_model", _binary([1, 75], "FP64"), BOUNDS) is None
    assert infer_request_problem("ffrt_model", _binary([1, 76], "FP64"), BOUNDS) is not None
    # The first hostile request of issue 23, on a server with the default limit.
    default = RequestBounds(ImageLimits(), max_batch=8)
    assert infer_request_problem("ffrt_model", _binary([1, 100000, 100000, 3]), default) is not None
    assert infer_request_problem("ffrt_model", _binary([1, 1000, 1000, 3]), default) is None
    # No pixel limit: no bound on the bytes (the JSON rule below still holds).
    unlimited = RequestBounds(ImageLimits(max_pixels=None), max_batch=8)
    assert unlimited.max_tensor_bytes is None
    assert infer_request_problem("ffrt_model", _binary([1, 10**9, 10**9, 3]), unlimited) is None


def test_detector_images_are_refused_as_the_detector_refuses_them():
    assert infer_request_problem("ffrt_detector", _binary([1, 10, 10, 3]), BOUNDS) is None  # 100 pixels
    problem = infer_request_problem("ffrt_detector", _binary([1, 10, 11, 1]), BOUNDS)
    assert problem == "ffrt.InvalidImageError: " + BOUNDS.limits.problem(10, 11)
    assert "11x10 pixels" in problem and "max_pixels=100" in problem
    # Only ffrt_detector's raw image input is an image; the bytes bound covers the rest.
    assert infer_request_problem("ffrt_detector", _binary([1, 10, 11, 1], name="other"), BOUNDS) is None
    assert infer_request_problem("ffrt_model", _binary([1, 10, 11, 1]), BOUNDS) is None


def _json_request(declared: int, zeros: int) -> bytes:
    """A JSON-data request declaring ``declared`` elements (as many digits as its length)."""
    return ('{"inputs":[{"name":"x","datatype":"UINT8","shape":[%d],"data":[%s]}]}'
            % (declared, ",".join("0" * zeros))).encode()


def test_json_data_cannot_fill_more_elements_than_it_has_characters():
    unlimited = RequestBounds(ImageLimits(max_pixels=None), max_batch=8)
    length = len(_json_request(1000, 480))
    assert 1000 <= length < 10000  # the declared count below has as many digits as 1000
    assert len(_json_request(length, 480)) == length
    assert infer_request_problem("ffrt_model", _json_request(length, 480), unlimited) is None
    problem = infer_request_problem("ffrt_model", _json_request(length + 1, 480), unlimited)
    assert problem and f"only {length} characters" in problem
    # Binary data is not counted in the JSON: the same declared count passes.
    assert infer_request_problem("ffrt_model", _binary([length + 1]), unlimited) is None


@pytest.mark.parametrize("shape", [[1, -1, 64, 3], [1, 64.0, 64, 3], [1, True, 64, 3], "[1, 64, 64, 3]", None, [1, "64"]])
def test_shapes_must_be_non_negative_integers(shape):
    problem = infer_request_problem("ffrt_model", _binary(shape), BOUNDS)
    assert problem and "non-negative integers" in problem


def test_what_triton_refuses_itself_is_forwarded():
    for header in (b"[]", b'{"inputs": "x"}', b'{"outputs": []}', b'{"inputs": [1, "a"]}'):
        assert infer_request_problem("ffrt_model", header, BOUNDS) is None, header
    big = b'{"inputs": []' + b" " * MAX_JSON_BYTES + b"}"
    assert "binary form" in infer_request_problem("ffrt_model", big, BOUNDS)


def test_json_read_otherwise_than_triton_reads_it_is_refused():
    """Triton's RapidJSON finds the first of two equal keys (Python's parser keeps the last)
    and does not check UTF-8: such headers must not pass as harmless."""
    hostile = {"name": "image", "datatype": "UINT8", "shape": [1, 100000, 100000, 3], "data": [1]}
    harmless = {"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, 3]}
    twice = b'{"inputs": [%s], "inputs": [%s]}' % (json.dumps(hostile).encode(), json.dumps(harmless).encode())
    assert "'inputs' more than once" in infer_request_problem("ffrt_model", twice, BOUNDS)
    shape_twice = json.dumps(harmless).encode().replace(b'"shape"', b'"shape": [1, 100000, 100000, 3], "shape"')
    assert "'shape' more than once" in infer_request_problem("ffrt_model", b'{"inputs": [%s]}' % shape_twice, BOUNDS)
    assert infer_request_problem("ffrt_model", b'{"inputs": [%s]}' % json.dumps(harmless).encode(), BOUNDS) is None
    for unreadable in (b"not json", b'{"inputs": [], "x": "\xff"}', b'{"inputs": [1,]}'):
        assert "cannot be read" in infer_request_problem("ffrt_model", unreadable, BOUNDS), unreadable


def _time_wait_port() -> int:
    """A port whose only socket is a closed connection in TIME_WAIT."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the side that closes first keeps TIME_WAIT
    client.close()
    listener.close()
    return port


def test_a_port_in_time_wait_is_free_and_a_listening_one_is_not():
    port = _time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the probe saw without SO_REUSEADDR
    _check_ports("127.0.0.1", {"--http-port": port})
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        with pytest.raises(InvalidArgumentError, match=f"cannot listen on 127.0.0.1:{taken} .* --grpc-port"):
            _check_ports("127.0.0.1", {"--http-port": port, "--grpc-port": taken})


def test_only_loopback_addresses_listen_without_a_warning():
    for quiet in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(quiet) is None, quiet
    for exposed in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "fe80::1", "camera-host"):
        warning = exposure_warning(exposed)
        assert warning and len(warning.splitlines()) == 1 and "unauthenticated" in warning, exposed
        assert f"listening on {exposed}" in warning and "--address 127.0.0.1" in warning


def test_serve_listens_on_loopback_unless_asked():
    from ffrt.triton.cli import ServeTool

    parser = argparse.ArgumentParser()
    ServeTool().add_args(parser)
    assert parser.parse_args(["model.onnx"]).address == "127.0.0.1"
    assert parser.parse_args(["model.onnx", "--address", "0.0.0.0"]).address == "0.0.0.0"


def test_the_warning_comes_first_even_when_serve_cannot_start(tmp_path, capsys):
    """Said before anything else (here the project's environment lacks PyTriton)."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("PyTriton is installed in this environment")
    from ffrt.cli import main

    assert main(["serve", str(tmp_path / "model.onnx"), "--address", "0.0.0.0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == exposure_warning("0.0.0.0") and '"ffrt[cpu,serve]"' in lines[1]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _triton_folder(config: str) -> Path:
    """A folder as tritonserver names its own in /tmp, holding ``config``."""
    while True:
        path = leftovers.TRITON_TMP / ("folder" + "".join(random.choices(string.ascii_letters, k=6)))
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    (path / "config.pbtxt").write_text(config)
    return path


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file() or not Path("/dev/shm").is_dir(), reason="Linux only")
def test_leftovers_of_dead_servers_are_removed_and_nothing_else(tmp_path):
    dead = tmp_path / "ffrt-serve.dead"
    stub = dead / "pytriton" / "tritonserver" / "backends" / "python" / "triton_python_backend_stub"
    stub.parent.mkdir(parents=True)
    shutil.copy(shutil.which("sleep"), stub)
    pid = _dead_pid()
    (dead / leftovers.OWNER_FILE).write_text(json.dumps({"pid": pid, "start": "1"}))
    live = tmp_path / "ffrt-serve.live"
    live.mkdir()
    leftovers.claim(live)
    unowned = tmp_path / "ffrt-serve.unowned"  # written by something else: not ours to judge
    unowned.mkdir()
    # The stub ignores SIGTERM, as Triton's does.
    orphan = subprocess.Popen([str(stub), "60"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    stranger = subprocess.Popen([shutil.which("sleep"), "60"])
    # A dead server whose pid now belongs to another running process (a reused pid): its
    # folder goes, the segments named by that pid may be the other process's and stay.
    reused = tmp_path / "ffrt-serve.reused"
    reused.mkdir()
    (reused / leftovers.OWNER_FILE).write_text(json.dumps({"pid": stranger.pid, "start": "1"}))
    strangers_segment = leftovers.SHM / f"{leftovers.shm_prefix(stranger.pid)}ffrt-test"
    strangers_segment.write_bytes(b"x")
    theirs = _triton_folder(f'parameters {{ key: "workspace-path" value {{ string_value: "{dead.resolve() / "pytriton"}" }} }}')
    others = _triton_folder('parameters { key: "workspace-path" value { string_value: "/elsewhere/pytriton" } }')
    # Triton's folder of a server whose own folder is gone already (removed, the Triton one not).
    gone = tmp_path / "ffrt-serve.gone"
    orphaned = _triton_folder(f'parameters {{ key: "workspace-path" value {{ string_value: "{gone}/pytriton" }} }}')
    running = _triton_folder(f'parameters {{ key: "workspace-path" value {{ string_value: "{live.resolve()}/pytriton" }} }}')
    segment = leftovers.SHM / f"{leftovers.shm_prefix(pid)}ffrt-test"
    running_segment = leftovers.SHM / f"{leftovers.shm_prefix(os.getpid())}ffrt-test"
    segment.write_bytes(b"x")
    running_segment.write_bytes(b"x")
    try:
        cleaned = leftovers.remove_dead_owners(tmp_path)
        assert set(cleaned) == {pid, stranger.pid, None}
        assert str(orphaned) in cleaned[None] and not orphaned.exists()
        assert not reused.exists() and strangers_segment.exists()
        orphan.wait(timeout=10)
        assert orphan.returncode == -signal.SIGKILL
        assert not dead.exists() and not theirs.exists() and not segment.exists()
        assert str(segment) in cleaned[pid] and str(theirs) in cleaned[pid] and str(dead) in cleaned[pid]
        assert live.is_dir() and unowned.is_dir() and others.is_dir() and running.is_dir() and running_segment.exists()
        assert _running(stranger.pid)
        # At exit a server removes its own: its folder and its pid's segments.
        assert set(leftovers.remove_own(live)) == {str(live), str(running_segment), str(running)}
        assert not live.exists() and not running_segment.exists() and not running.exists()
    finally:
        for p in (orphan, stranger):
            p.kill()
            p.wait()
        for path in (theirs, others, orphaned, running):
            shutil.rmtree(path, ignore_errors=True)
        for seg in (segment, running_segment, strangers_segment):
            seg.unlink(missing_ok=True)


class _Upstream(http.server.BaseHTTPRequestHandler):
    """A plain HTTP/1.1 server on loopback standing where Triton's frontend is: it answers what
    it received, so the test sees what the guard forwarded."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (body[:5], body[5:], b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, json.dumps({"path": self.path, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                    "expect": self.headers.get("Expect"),
                                    "content_length": self.headers.get_all("Content-Length")}).encode())

    def do_GET(self):
        self._send(200, b'{"got": "' + self.path.encode() + b'"}', chunked=self.path == "/chunked")

    do_HEAD = do_GET


@pytest.fixture
def guard():
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    g = HttpGuard("127.0.0.1", 0, upstream.server_address[1], BOUNDS)
    g.start()
    yield g
    g.close()
    upstream.shutdown()
    upstream.server_close()


def test_the_guard_forwards_requests_and_answers_unchanged(guard):
    conn = http.client.HTTPConnection("127.0.0.1", guard.port, timeout=30)
    conn.request("GET", "/v2/health/ready")
    resp = conn.getresponse()
    assert resp.status == 503 and "not ready" in json.loads(resp.read())["error"]
    conn.request("GET", "http://127.0.0.1/v2/models/ffrt_detector/versions/1/ready?x")  # the absolute form
    resp = conn.getresponse()
    assert resp.status == 503 and resp.read()
    guard.set_ready(True)
    conn.request("GET", "/v2/health/ready")
    assert json.loads(conn.getresponse().read()) == {"got": "/v2/health/ready"}
    # A binary request larger than the pieces the guard copies in, on the same connection.
    header = _binary([1, 600])
    body = header + os.urandom(3 << 20)
    for _ in range(2):
        conn.request("POST", "/v2/models/ffrt_model/infer", body=body,
                     headers={"Inference-Header-Content-Length": str(len(header))})
        got = json.loads(conn.getresponse().read())
        assert got == {"path": "/v2/models/ffrt_model/infer", "bytes": len(body),
                       "sha256": hashlib.sha256(body).hexdigest(), "expect": None, "content_length": [str(len(body))]}
        # A refused request on the same connection (its body read and dropped), then the next.
        hostile = _binary([1, 601])
        conn.request("POST", "/v2/models/ffrt_model/infer", body=hostile + bytes(1000),
                     headers={"Inference-Header-Content-Length": str(len(hostile))})
        resp = conn.getresponse()
        assert resp.status == 400 and "[1, 601]" in json.loads(resp.read())["error"]
    conn.request("GET", "/chunked")
    assert conn.getresponse().read() == b'{"got": "/chunked"}'
    conn.request("HEAD", "/v2/models/ffrt_model")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    conn.request("GET", "/after-head")
    assert json.loads(conn.getresponse().read()) == {"got": "/after-head"}
    conn.close()


def _raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(data)
    return s


def _response(s: socket.socket) -> tuple[bytes, bytes]:
    """(status line, body) of one response with a Content-Length."""
    def more() -> bytes:
        data = s.recv(1 << 16)
        if not data:
            raise AssertionError("the connection closed before a whole response came")
        return data

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += more()
    return head.split(b"\r\n")[0], body


def test_the_guard_answers_expect_continue_and_refuses_chunked_bodies(guard):
    header = _binary([1, 600])
    with _raw(guard.port, b"POST /v2/models/ffrt_model/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(header), len(header) + 4)) as s:
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
        s.sendall(header + b"abcd")
        status, body = _response(s)
    assert status.startswith(b"HTTP/1.") and b" 200 " in status
    assert json.loads(body)["expect"] is None  # answered here, not forwarded
    with _raw(guard.port, b"POST /v2/models/ffrt_model/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n0\r\n\r\n") as s:
        status, body = _response(s)
    assert status.startswith(b"HTTP/1.1 411 ") and b"Content-Length" in body
    with _raw(guard.port, b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * (70 << 10) + b"\r\n\r\n") as s:
        assert _response(s)[0].startswith(b"HTTP/1.1 431 ")


def test_a_closed_guard_frees_its_port(guard):
    port = guard.port
    guard.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with socket.create_server(("127.0.0.1", port)):
        pass


@pytest.mark.parametrize("fields", [
    b"Content-Length : 2\r\n",  # a space before the colon: another parser may not see a length
    b"Content-Length: 2\r\n 0\r\n",  # folded onto the previous line
    b"Content-Length: 2\r\nContent-Length: 20\r\n",
    b"Content-Length: +2\r\n",
    b"Content-Length: 2\r\nInference-Header-Content-Length: 1\r\nInference-Header-Content-Length: 2\r\n",
])
def test_the_guard_refuses_heads_triton_could_frame_otherwise(guard, fields):
    """Triton must see a request where this guard sees it, or the bytes this guard took for a
    body could reach Triton as a request nobody checked."""
    with _raw(guard.port, b"POST /v2/models/ffrt_model/infer HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n{}") as s:
        status, body = _response(s)
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    assert json.loads(body)["error"]  # the guard's answer, not the server's behind it


def test_the_guard_forwards_one_content_length(guard):
    with _raw(guard.port, b"POST /v2/models/ffrt_model/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              b"content-length: 2\r\n\r\n{}") as s:
        status, body = _response(s)
    assert b" 200 " in status and json.loads(body)["content_length"] == ["2"]

