"""``ffrt serve``: an ffrt model behind a real Triton Inference Server, via NVIDIA's PyTriton.

PyTriton (``pip install "ffrt[serve]"``) ships the ``tritonserver`` binary and its Python
backend. The server it starts here holds two models, the same pair ``ffrt triton-repo``
writes for a full Triton:

- ``ffrt_model``: the fused graph, bound with PyTriton to a :class:`ffrt.Detector`'s backend
  (any of them: ONNX Runtime CPU/CUDA/TensorRT, native TensorRT) with Triton's dynamic
  batcher (``--max-batch``, ``--max-delay-ms``);
- ``ffrt_detector``: ffrt's own Python-backend model (``ffrt.triton.python_model``), loaded
  from a model repository written at start, which decodes and checks each image and calls
  ``ffrt_model`` by BLS. HTTP, gRPC, health (``/v2/health/ready``) and Prometheus metrics
  (``:PORT/metrics``) are Triton's own.

Triton's HTTP frontend is not reached directly: it listens on 127.0.0.1 on a port of its own,
and ``--http-port`` is :class:`~ffrt.triton.http_guard.HttpGuard`'s, which refuses inference
requests whose declared tensor sizes no valid request has (Triton would allocate them before
reading a byte of data) and reports ready only once ffrt_detector has answered an inference.
Every port listens on 127.0.0.1 unless ``--address`` says otherwise: Triton has no
authentication for inference, so another address gets a one-line warning. What a killed
server leaves (processes, shared memory, folders) is removed by the next start
(:mod:`ffrt.triton.leftovers`).

The Python the Triton Python-backend stub runs must be *this* interpreter, the same build:
the stub (one per Python minor version in the PyTriton wheel) links ``libpython3.X.so.1.0``
by name, and the dynamic loader takes the first it finds. On a machine whose system
Python differs from this one in the patch release (here Debian's 3.11.2 next to a pyenv
3.11.7), the stub would run this interpreter's standard library on the other build's C
modules; 3.11.7's ``multiprocessing.resource_tracker`` calls ``RLock._recursion_count``,
which 3.11.2's C lock lacks (added by CPython gh-109629, back-ported to 3.11.6 and 3.12.1),
and the model fails to load with that AttributeError. So :func:`prepare_environment` puts
this interpreter's own libpython folder first on ``LD_LIBRARY_PATH``, as PyTriton's
installation guide does for uv-managed Pythons
(https://triton-inference-server.github.io/pytriton/latest/installation/).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, FFRTError, InvalidArgumentError
from ..config import DetectorConfig
from . import leftovers, protocol
from .http_guard import HttpGuard
from .repository import Options, detector_files, preferred_batch_sizes
from .request_guard import RequestBounds

log = logging.getLogger("ffrt")

#: The PyTriton release the serve extra pins (its wheel holds Triton and the stubs).
PYTRITON_VERSION = "0.7.0"
SERVE_HINT = (
    'ffrt serve needs the serve extra in a virtual environment of its own (PyTriton requires numpy<2): '
    'python3 -m venv .venv-serve && .venv-serve/bin/pip install "ffrt[cpu,serve]" (docs/triton.md)'
)


def prepare_environment() -> str:
    """Check that PyTriton can run a Python-backend stub for this interpreter and make the
    stub load this interpreter's libpython. Returns the PyTriton version; raises
    BackendUnavailableError saying what to do otherwise."""
    try:
        import pytriton
        from pytriton.utils.distribution import get_stub_path
    except ImportError as e:
        raise BackendUnavailableError(f"PyTriton is not installed ({e}). {SERVE_HINT}") from e
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not get_stub_path(version).is_file():
        raise BackendUnavailableError(
            f"this PyTriton has no Python-backend stub for Python {version}; use a Python it ships one for "
            f"(PyTriton {PYTRITON_VERSION}: 3.8 to 3.13) for the serve environment."
        )
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not (Path(libdir) / ldlibrary).is_file():
        raise BackendUnavailableError(
            f"this Python ({sys.executable}, {sys.version.split()[0]}) is built without a shared libpython{version}.so; "
            "the Triton Python-backend stub links one and would load another build's, whose C modules do not match "
            "this Python's standard library. Use a Python built with --enable-shared (Debian/Ubuntu python3 with "
            "libpython3.X, pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared, the python:3.X Docker images)."
        )
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if current.split(os.pathsep)[:1] != [libdir]:
        # Read by the tritonserver process PyTriton starts (it copies os.environ) and by the
        # stub processes it forks: their libpython3.X.so.1.0 is then this interpreter's.
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, current] if current else [libdir])
    return getattr(pytriton, "__version__", "") or PYTRITON_VERSION


def serve(
    model: Path,
    config: DetectorConfig,
    *,
    address: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    access_token: str | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve ``model`` until SIGINT/SIGTERM (or ``stop`` is set); returns the exit code.
    ``config``: the Detector settings of both models (backend, threads, image limits,
    min_region_px; max_batch and max_delay_ms are Triton's dynamic batching)."""
    warning = exposure_warning(address)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    prepare_environment()
    _check_ports(address, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    for pid, removed in leftovers.remove_dead_owners().items():
        owner = f" (pid {pid})" if pid is not None else ""
        print(f"ffrt serve: removed what a killed ffrt serve{owner} left: {', '.join(removed)}", flush=True)
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    from ..detector import Detector

    det = Detector(model, config)
    meta = det.meta
    opts = Options(max_batch=config.max_batch, delay_us=int(round(config.max_delay_ms * 1000)), kind="cpu",
                   instances=1, max_pixels=config.max_pixels, min_side=config.min_side,
                   min_region_px=config.min_region_px).checked(meta)
    h, w = det.input_size
    map_name, score_name = meta.outputs.anomaly_map, meta.outputs.score
    bounds = RequestBounds(config.limits, opts.max_batch)
    triton_http_port = _free_loopback_port()

    @batch
    def run_graph(**inputs):
        maps, scores = det.run_model(inputs[meta.input.name])
        return {map_name: maps, score_name: scores.reshape(-1, 1)}

    workdir = Path(tempfile.mkdtemp(prefix=leftovers.FOLDER_PREFIX))
    leftovers.claim(workdir)
    repo = workdir / "repository"
    import ffcore
    import ffrt

    code = sorted({str(Path(m.__file__).resolve().parents[1]) for m in (ffrt, ffcore)})
    graph = (f"ffrt serve {protocol.GRAPH_MODEL}: {det.backend_description}", det.precision)
    for path, data in detector_files(repo, meta, opts, code, graph).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    config = TritonConfig(
        model_repository=repo, http_address="127.0.0.1", http_port=triton_http_port, grpc_address=address,
        grpc_port=grpc_port, metrics_port=metrics_port, metrics_address=address, exit_timeout_secs=5,
    )
    # PyTriton protects the model-repository endpoints (load/unload) with a token by default;
    # --access-token fixes it so an operator can reload ffrt_detector with new thresholds.
    security = TritonSecurityConfig(access_token=access_token) if access_token else None
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if threading.current_thread() is threading.main_thread():
            signal.signal(sig, lambda *_: stop.set())
    guard: HttpGuard | None = None
    triton = Triton(config=config, workspace=workdir / "pytriton", security_config=security)
    try:
        guard = HttpGuard(address, http_port, triton_http_port, bounds)
        guard.start()
        triton.bind(
            model_name=protocol.GRAPH_MODEL,
            infer_func=run_graph,
            inputs=[Tensor(name=meta.input.name, dtype=np.uint8, shape=(h, w, 3))],
            outputs=[Tensor(name=map_name, dtype=np.float32, shape=(1, h, w)),
                     Tensor(name=score_name, dtype=np.float32, shape=(1,))],
            config=ModelConfig(
                max_batch_size=opts.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=opts.delay_us,
                                       preferred_batch_size=preferred_batch_sizes(opts.max_batch) or None),
            ),
            strict=True,
        )
        try:
            triton.run()
        except Exception as e:  # PyTriton waits for the server; its log above says why it stopped
            raise FFRTError(f"the Triton server did not start ({type(e).__name__}: {e}); its log above says why.") from e
        _check_ready(triton_http_port)
        _check_answers(triton_http_port, (h, w))
        guard.set_ready(True)
        print(
            f"ffrt serve: {model} as '{protocol.DETECTOR_MODEL}' on {det.backend_description}; HTTP {address}:{http_port}, "
            f"gRPC {address}:{grpc_port}, metrics http://{address}:{metrics_port}/metrics; batch <= {opts.max_batch}, "
            f"queue delay {opts.delay_us} us. Ctrl-C stops.",
            flush=True,
        )
        if ready is not None:
            ready.set()
        while not stop.wait(1.0):
            if not triton.is_alive():
                print("ffrt serve: error: the Triton server stopped unexpectedly", file=sys.stderr)
                return 1
        return 0
    finally:
        if guard is not None:
            guard.close()
        triton.stop()
        det.close()
        leftovers.remove_own(workdir)


def exposure_warning(address: str) -> str | None:
    """The one-line warning for an address other machines can reach (None for loopback)."""
    try:
        loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"ffrt serve: warning: listening on {address}: inference, health and metrics are unauthenticated and "
            "reachable from the network; keep the default --address 127.0.0.1 unless this network is trusted "
            "(or put an authenticating proxy in front).")


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_ports(address: str, ports: dict[str, int]) -> None:
    """A port in use makes tritonserver exit at start, which PyTriton only notices after its
    start-up timeout (minutes): say so now, naming the option."""
    if len(set(ports.values())) != len(ports):
        raise InvalidArgumentError(f"the ports must differ: {', '.join(f'{k} {v}' for k, v in ports.items())}.")
    for option, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
            # As the servers bind (Triton's, the HTTP guard): a port whose only users are
            # closed connections in TIME_WAIT (a minute after a server stopped) is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                raise InvalidArgumentError(
                    f"cannot listen on {address}:{port} ({e.strerror or e}); another server uses it: choose another "
                    f"{option}, or stop that server."
                ) from None


def _check_ready(port: int) -> None:
    """PyTriton loads every model of the repository at start (--load-model=*): ffrt_detector
    must be ready now, ffrt_model too (bound and loaded by PyTriton)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=30, network_timeout=60)
    try:
        missing = [m for m in (protocol.GRAPH_MODEL, protocol.DETECTOR_MODEL) if not client.is_model_ready(m)]
    finally:
        client.close()
    if missing:
        raise FFRTError(f"Triton started but {', '.join(missing)} is not ready; its log above says why.")


def _check_answers(port: int, size: tuple[int, int]) -> None:
    """ffrt_detector must answer an inference (a blank image of the model's size, through
    ffrt_model) before the server says it is ready: Triton's own readiness comes earlier."""
    import tritonclient.http as httpclient

    image = np.zeros((1, *size, 3), np.uint8)
    tensor = httpclient.InferInput(protocol.INPUT_IMAGE, list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=30, network_timeout=120)
    try:
        score = client.infer(protocol.DETECTOR_MODEL, [tensor]).as_numpy("score")
    except Exception as e:
        raise FFRTError(f"Triton started but {protocol.DETECTOR_MODEL} does not answer ({e}); its log above says why.") from e
    finally:
        client.close()
    if score is None or score.shape != (1, 1):
        raise FFRTError(f"Triton started but {protocol.DETECTOR_MODEL} answered without a score; its log above says why.")
