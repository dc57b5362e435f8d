"""``RemoteDetector``: the Detector API, answered by an ffrt model on a Triton server.

    from ffrt.client import RemoteDetector
    det = RemoteDetector("triton-host:8000")            # instead of Detector("model.onnx")
    r = det(frame)                                      # the same Result
    futures = [det.submit(f) for f in frames]           # concurrent.futures.Future[Result]
    results = det.predict_batch(frames)

Line software moves from in-process to a server by changing that one line. The server is
``ffrt serve MODEL`` or a Triton with the repository of ``ffrt triton-repo`` /
``ffexport --triton``; its ``ffrt_detector`` model does ffrt's own preprocessing and
postprocessing, so scores, masks and verdicts equal the in-process Detector's.

Images are checked here first with the Detector's own rules (dtype, channels, NaN, ...: the
same ``InvalidImageError``), then sent as raw uint8 BGR or gray pixels; paths and ``bytes``
are sent encoded, as the file's bytes. Size limits are the server's. Concurrent calls reach
the server together, so its dynamic batcher can batch them: the requests go out from a
small pool of threads, each with its own tritonclient client (tritonclient's
InferenceServerClient "is intended to be used by a single thread", its docstring; the HTTP
one runs on gevent and must also be closed on its own thread, triton-inference-server/server
issue #4223). Needs ``pip install "ffrt[client]"`` (tritonclient).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future

import cv2
import numpy as np

from .errors import (
    FFRTError, InferenceError, InvalidArgumentError, InvalidImageError, RemoteError, RemoteTimeoutError,
    ServerUnavailableError,
)
from .preprocess import ImageLimits, check_color_order, read_image_data, to_uint8_image
from .result import Result
from .stats import DEFAULT_WINDOW, LatencyStats, LatencyWindow
from .triton import protocol

#: Local checks only: the server applies its own size limits.
_NO_SIZE_LIMIT = ImageLimits(max_pixels=None, min_side=1)
_RESULT_OUTPUTS = tuple(protocol.OUTPUTS)  # (the constructor's argument ``protocol`` hides the module)
_IMAGE_ERRORS = {"InvalidImageError": InvalidImageError, "ImageFileError": InvalidImageError}


def _tritonclient(protocol_name: str):
    try:
        if protocol_name == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as e:
        raise FFRTError(f"RemoteDetector needs tritonclient ({e}); install it: pip install \"ffrt[client]\"") from e
    return module


class RemoteDetector:
    """An ffrt detector served by Triton, called like :class:`ffrt.Detector`.

    url:         "host:port" of the server's HTTP (default 8000) or gRPC (8001) endpoint
                 ("http://" / "grpc://" prefixes are accepted).
    model:       the model to call (default "ffrt_detector").
    protocol:    "http" or "grpc".
    color_order: channel order of 3-channel numpy inputs, "BGR" (default) or "RGB".
    timeout_s:   longest wait for one answer (connecting included) before RemoteTimeoutError.
    workers:     requests in flight at once (threads, each with its own connection).
    """

    def __init__(
        self,
        url: str,
        model: str = protocol.DETECTOR_MODEL,
        protocol: str = "http",
        color_order: str = "BGR",
        timeout_s: float = 30.0,
        workers: int = 4,
        stats_window: int = DEFAULT_WINDOW,
    ) -> None:
        self._protocol = str(protocol).lower()
        if self._protocol not in ("http", "grpc"):
            raise InvalidArgumentError(f"protocol must be 'http' or 'grpc', not {protocol!r}.")
        for prefix in ("http://", "https://", "grpc://"):
            if url.startswith(prefix):
                url = url[len(prefix):]
        self._url, self._model = url.rstrip("/"), model
        self._color_order = check_color_order(color_order)
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise InvalidArgumentError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}.")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidArgumentError(f"workers must be a positive integer, not {workers!r}.")
        self._timeout = float(timeout_s)
        self._module = _tritonclient(self._protocol)
        self._stats = LatencyWindow(stats_window)
        self._outputs = list(_RESULT_OUTPUTS)  # plus the INFO_OUTPUTS the model declares (_check_model)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._worker, name=f"ffrt-remote-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()
        try:
            self._call(self._check_model).result()
        except BaseException:
            self.close()
            raise

    # -- public API (as ffrt.Detector) -----------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def stats(self) -> LatencyStats:
        """Round-trip latency and throughput of the last ``stats_window`` answered calls."""
        return self._stats.snapshot()

    def __call__(self, image: object) -> Result:
        """Detect on one image (numpy array, path or encoded bytes). See :class:`ffrt.Result`."""
        return self.submit(image).result()

    def submit(self, image: object) -> Future:
        """Send one image; the Future resolves to its Result, or to the error a direct call raises."""
        future: Future = Future()
        try:
            name, array = self._encode(image)
        except InvalidImageError as e:
            future.set_exception(e)
            return future
        return self._call(lambda client: self._infer(client, name, array), future)

    def predict_batch(
        self, images: Iterable[object], batch_size: int | None = None, errors: str = "raise"
    ) -> list[Result] | list[Result | InvalidImageError]:
        """As :meth:`ffrt.Detector.predict_batch`: every image is checked before any is sent
        (errors="raise") or a refused one's place holds its error (errors="return"). The
        images go out concurrently and the server batches them (``batch_size`` is accepted
        for compatibility and unused)."""
        if errors not in ("raise", "return"):
            raise InvalidArgumentError(f"errors must be 'raise' or 'return', not {errors!r}.")
        if images is None or isinstance(images, (str, bytes)) or hasattr(images, "__fspath__"):
            raise InvalidImageError("predict_batch takes a list of images; for a single image call det(image).")
        items = list(images)
        n = len(items)
        encoded: list = []
        for i, item in enumerate(items):
            try:
                encoded.append(self._encode(item))
            except InvalidImageError as e:
                located = e if n == 1 else type(e)(f"image {i} of {n}: {e}")
                if errors == "raise":
                    raise located from e
                encoded.append(located)
        futures = [e if isinstance(e, Exception) else self._call(lambda c, e=e: self._infer(c, *e)) for e in encoded]
        outcomes: list = []
        for i, f in enumerate(futures):
            if isinstance(f, Exception):
                outcomes.append(f)
                continue
            try:
                outcomes.append(f.result())
            except InvalidImageError as e:
                located = e if n == 1 else type(e)(f"image {i} of {n}: {e}")
                if errors == "raise":
                    raise located from e
                outcomes.append(located)
        return outcomes

    def close(self) -> None:
        """Close the connections and stop the worker threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=self._timeout)

    def __enter__(self) -> "RemoteDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteDetector({self._url!r}, model={self._model!r}, protocol={self._protocol!r})"

    # -- internals ---------------------------------------------------------------------

    def _encode(self, image: object) -> tuple[str, np.ndarray]:
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        elif isinstance(image, (str, os.PathLike)):
            data = read_image_data(image, _NO_SIZE_LIMIT)
        else:
            pixels, order = to_uint8_image(image, self._color_order, _NO_SIZE_LIMIT)
            if order == "RGB":
                pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            elif order == "GRAY":
                pixels = pixels[:, :, None]
            return protocol.INPUT_IMAGE, np.ascontiguousarray(pixels)[None]
        if not data:
            raise InvalidImageError("the image data is empty (0 bytes); the frame was not captured or read completely.")
        return protocol.INPUT_BYTES, np.array([[data]], dtype=np.object_)

    def _call(self, fn, future: Future | None = None) -> Future:
        future = future or Future()
        if self._closed:
            future.set_exception(InvalidArgumentError("this RemoteDetector is closed; create a new one."))
            return future
        self._queue.put((future, fn))
        return future

    def _worker(self) -> None:
        client = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                future, fn = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if client is None:
                        client = self._connect()
                    future.set_result(fn(client))
                except BaseException as e:  # delivered to the caller through its future
                    future.set_exception(e)
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:
                    pass

    def _connect(self):
        m = self._module
        try:
            if self._protocol == "grpc":
                return m.InferenceServerClient(self._url)
            return m.InferenceServerClient(self._url, connection_timeout=self._timeout, network_timeout=self._timeout)
        except Exception as e:
            raise self._translate(e) from e

    def _rpc(self, fn):
        try:
            return fn()
        except Exception as e:
            raise self._translate(e) from e

    def _check_model(self, client) -> None:
        kwargs = {"client_timeout": self._timeout} if self._protocol == "grpc" else {}
        if not self._rpc(lambda: client.is_server_live(**kwargs)):
            raise ServerUnavailableError(f"the Triton server at {self._url} is not live yet; wait for it or check its log.")
        if not self._rpc(lambda: client.is_model_ready(self._model, **kwargs)):
            raise ServerUnavailableError(
                f"the server at {self._url} has no model {self._model!r} ready; check the name (ffrt serve and "
                f"ffrt triton-repo call it {protocol.DETECTOR_MODEL!r}) and the server's log for why it did not load."
            )
        # Servers written by an earlier ffrt lack the INFO_OUTPUTS (backend, precision, latency
        # split); asking for an output a model does not declare fails the whole request.
        if self._protocol == "grpc":
            metadata = self._rpc(lambda: client.get_model_metadata(self._model, as_json=True, **kwargs))
        else:
            metadata = self._rpc(lambda: client.get_model_metadata(self._model))
        declared = {o.get("name") for o in (metadata or {}).get("outputs", [])}
        self._outputs = [*_RESULT_OUTPUTS, *(n for n in protocol.INFO_OUTPUTS if n in declared)]

    def _infer(self, client, name: str, array: np.ndarray) -> Result:
        m = self._module
        datatype = protocol.INPUTS[name][1]
        tensor = m.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        outputs = [m.InferRequestedOutput(o) for o in self._outputs]
        kwargs = {"client_timeout": self._timeout} if self._protocol == "grpc" else {}
        t0 = time.perf_counter()
        response = self._rpc(lambda: client.infer(self._model, [tensor], outputs=outputs, **kwargs))
        t1 = time.perf_counter()
        result = protocol.result_from_tensors(response.as_numpy, (t1 - t0) * 1000.0)
        self._stats.record(t1 - t0, 1, end=t1)
        return result

    def _translate(self, error: Exception) -> FFRTError:
        """tritonclient's and the network's errors as ffrt errors saying what to do."""
        if isinstance(error, FFRTError):
            return error
        text = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
        text = text or type(error).__name__
        status = str(error.status()) if hasattr(error, "status") and callable(error.status) else ""
        tagged = protocol.parse_error(text)
        if tagged is not None:
            name, message = tagged
            cls = _IMAGE_ERRORS.get(name)
            if cls is not None:
                return cls(f"the server at {self._url} refused the image: {message}")
            return InferenceError(f"the server at {self._url} failed: {message}")
        lowered = f"{status} {text}".lower()
        if isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower() or "deadline" in lowered \
                or "timed out" in lowered:
            return RemoteTimeoutError(
                f"no answer from the server at {self._url} within {self._timeout:g} s; it is overloaded or stalled: "
                "check its load (Triton metrics: nv_inference_queue_duration_us) or raise timeout_s."
            )
        if isinstance(error, (ConnectionError, OSError)) or "unavailable" in lowered or "connect" in lowered:
            return ServerUnavailableError(
                f"cannot reach the Triton server at {self._url} ({text.strip().splitlines()[0]}); start it "
                "(ffrt serve MODEL) or check the address, the port and the protocol."
            )
        if "unknown model" in lowered or "not found" in lowered or "not ready" in lowered:
            return ServerUnavailableError(
                f"the server at {self._url} has no model {self._model!r} ready ({text.strip()}); check the name and the "
                "server's log."
            )
        if "data-type" in lowered or "unexpected shape" in lowered or "[400]" in lowered or "invalid_argument" in lowered:
            return InvalidImageError(f"the server at {self._url} refused the request: {text.strip()}")
        return RemoteError(f"the server at {self._url} failed: {text.strip()}")
