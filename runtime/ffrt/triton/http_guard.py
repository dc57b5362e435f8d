"""``ffrt serve``'s HTTP port: a small reverse proxy in front of Triton's HTTP frontend.

Triton listens for HTTP on 127.0.0.1, on a port of its own; ``--http-port`` is this guard's.
For each request it reads the head and, for an inference request, the JSON header, refuses
what :mod:`ffrt.triton.request_guard` finds (HTTP 400 in Triton's own error form,
``{"error": "..."}``, so tritonclient raises it as it raises Triton's), and forwards the rest
unchanged, answers included. Triton never sees a refused request, so it allocates nothing
for it and stays up.

It also answers readiness (``/v2/health/ready``, ``/v2/models/NAME/ready``) with 503 until
ffrt serve has seen ffrt_detector answer an inference (:meth:`HttpGuard.set_ready`): Triton
reports ready as soon as the models loaded so far are, which is before PyTriton has loaded
ffrt_model, the graph ffrt_detector calls. When the server stops, this port closes first.

HTTP/1.1 with keep-alive, one request at a time on each connection (as Triton answers
them); request bodies need a Content-Length (every Triton client sends one): a chunked
request body is answered 411.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass

from .request_guard import MAX_JSON_BYTES, RequestBounds, infer_path_model, infer_request_problem

log = logging.getLogger("ffrt")

#: Longest request or response head (request line and headers) read.
HEAD_LIMIT = 64 << 10
#: Bodies are copied in pieces of this size, never held whole (except an infer request's JSON).
COPY_CHUNK = 1 << 20
#: A refused request's remaining body is read and dropped (keeping the connection) up to this
#: size; a larger one is not read: the answer says so and the connection closes.
DRAIN_LIMIT = 16 << 20
#: Readiness endpoints, anywhere in a request target (Triton answers the absolute form too).
#: A header field line as RFC 9110 has it: a token, then the colon at once.
_FIELD = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+:")
READY_PATH = re.compile(r"/v2/(?:health/ready|models/[^/?#]+(?:/versions/[^/?#]*)?/ready)(?:[?#]|$)")
REASONS = {400: "Bad Request", 411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           502: "Bad Gateway", 503: "Service Unavailable"}


class _Refusal(Exception):
    def __init__(self, status: int, message: str, close: bool = True):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


@dataclass
class _Head:
    """A request or response head: its first line and its header lines, as received."""

    first: bytes
    lines: list[bytes]

    @classmethod
    def parse(cls, raw: bytes) -> "_Head":
        first, *lines = raw[:-4].split(b"\r\n")
        return cls(first, lines)

    def values(self, name: str) -> list[str]:
        key = name.lower().encode()
        out = []
        for line in self.lines:
            field, sep, value = line.partition(b":")
            if sep and field.strip().lower() == key:
                out.append(value.strip().decode("latin-1"))
        return out

    def value(self, name: str) -> str | None:
        """The field's one value (None when absent); two different values are refused: Triton
        might read the other one."""
        found = set(self.values(name))
        if len(found) > 1:
            raise _Refusal(400, f"the header {name} is given {len(found)} different values.")
        return found.pop() if found else None

    def check_request_fields(self) -> None:
        """Refuse header lines another parser may read otherwise (a space before the colon,
        a line folded onto the previous one): Triton must frame the request as this does."""
        for line in self.lines:
            if not _FIELD.match(line):
                raise _Refusal(400, f"malformed header line {line[:60]!r}.")

    def forwarded(self, length: int) -> bytes:
        """The head sent to Triton: without Expect (answered here), with one Content-Length."""
        drop = {b"expect", b"content-length"}
        kept = [line for line in self.lines if line.partition(b":")[0].lower() not in drop]
        return b"\r\n".join([self.first, *kept, b"Content-Length: %d" % length]) + b"\r\n\r\n"

    def content_length(self) -> int | None:
        value = self.value("content-length")
        if value is not None and not (value.isascii() and value.isdigit()):
            raise _Refusal(400, f"invalid Content-Length {value!r}.")
        return None if value is None else int(value)

    def wants_close(self, version: str) -> bool:
        tokens = {t.strip().lower() for v in self.values("connection") for t in v.split(",")}
        return "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)


class HttpGuard:
    """The proxy, listening on ``address:port`` (bound at construction, so a port in use fails
    at once), forwarding to Triton's HTTP port on 127.0.0.1; runs in a thread of its own."""

    def __init__(self, address: str, port: int, upstream_port: int, bounds: RequestBounds):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.create_server((address, port), family=family, backlog=256)  # sets SO_REUSEADDR
        self._upstream_port = upstream_port
        self._bounds = bounds
        self._ready = False
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self) -> None:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, sock=self._sock, limit=HEAD_LIMIT))
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="ffrt-http-guard", daemon=True)
        self._thread.start()
        started.wait(30)

    def set_ready(self, ready: bool) -> None:
        """Whether readiness requests are forwarded to Triton (True) or answered 503."""
        self._ready = ready

    def close(self) -> None:
        """Stop listening and end every connection (a second call does nothing)."""
        self._ready = False
        if self._loop.is_closed():
            return
        if self._thread is None:
            self._sock.close()
            self._loop.close()
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                except asyncio.LimitOverrunError:
                    raise _Refusal(431, f"the request head is longer than {HEAD_LIMIT >> 10} KiB.") from None
                close, upstream = await self._one_request(_Head.parse(raw), reader, writer, upstream)
                if close:
                    return
        except _Refusal as r:
            try:
                await _answer(writer, r.status, r.message, close=True)
            except ConnectionError:
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # either side went away mid-message: nothing more can be said on this connection
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    w.close()

    async def _one_request(self, head: _Head, reader, writer, upstream):
        """Answer one request (refuse or forward it); returns (close the client?, upstream)."""
        parts = head.first.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refusal(400, "not an HTTP/1.x request line.")
        method, target, version = parts
        head.check_request_fields()
        close = head.wants_close(version)
        if head.values("transfer-encoding"):
            raise _Refusal(411, "send the request body with a Content-Length (chunked request bodies are not accepted).")
        length = head.content_length() or 0
        if READY_PATH.search(target) and not self._ready:
            await _drain(reader, length)
            await _answer(writer, 503, "ffrt serve is not ready: its models are loading or it is stopping.", close,
                          body=method != "HEAD")
            return close, upstream
        prefix = b""
        model = infer_path_model(target) if method.upper() == "POST" else None
        if model is not None:
            json_length = _json_length(head, length)
            if json_length > MAX_JSON_BYTES:
                raise _Refusal(413, f"the request's JSON is {json_length / 1e6:.0f} MB, above this server's "
                               f"{MAX_JSON_BYTES >> 20} MB: send tensors in binary form (tritonclient's default).")
            await _continue(head, writer)
            prefix = await reader.readexactly(json_length)
            problem = infer_request_problem(model, prefix, self._bounds)
            if problem is not None:
                rest = length - json_length
                log.warning("ffrt serve: refused an HTTP request to %s: %s", target[:200], problem)
                if rest > DRAIN_LIMIT:
                    raise _Refusal(400, problem)
                await _drain(reader, rest)
                await _answer(writer, 400, problem, close)
                return close, upstream
        else:
            await _continue(head, writer)
        if upstream is None:
            try:
                upstream = await asyncio.open_connection("127.0.0.1", self._upstream_port, limit=HEAD_LIMIT)
            except OSError:
                raise _Refusal(502, "the Triton server behind ffrt serve is not reachable (starting, or stopped).") from None
        up_reader, up_writer = upstream
        up_writer.write(head.forwarded(length) + prefix)
        await _copy(reader, up_writer, length - len(prefix))
        keep_upstream, close_client = await _relay_response(up_reader, writer, method)
        if not keep_upstream:
            up_writer.close()
            upstream = None
        return close or close_client, upstream


def _json_length(head: _Head, length: int) -> int:
    """Bytes of an infer request's JSON: Triton's binary extension sends it first and says how
    long it is (Inference-Header-Content-Length); otherwise the whole body is JSON."""
    declared = head.value("inference-header-content-length")
    if declared is None:
        return length
    if not (declared.isascii() and declared.isdigit()) or int(declared) > length:
        raise _Refusal(400, f"Inference-Header-Content-Length {declared!r} must be a number of at most the "
                       f"Content-Length ({length}).")
    return int(declared)


async def _continue(head: _Head, writer: asyncio.StreamWriter) -> None:
    """Answer ``Expect: 100-continue`` here (the header is not forwarded): the client sends
    its body only after this, and only once the head has passed."""
    if any(v.lower() == "100-continue" for v in head.values("expect")):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _answer(writer: asyncio.StreamWriter, status: int, message: str, close: bool, body: bool = True) -> None:
    """An answer in Triton's error form, ``{"error": message}`` (``body=False``: a HEAD request's)."""
    content = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: application/json",
            f"Content-Length: {len(content)}"]
    if close:
        head.append("Connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (content if body else b""))
    await writer.drain()


async def _drain(reader: asyncio.StreamReader, n: int) -> None:
    while n > 0:
        n -= len(await reader.readexactly(min(n, COPY_CHUNK)))


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        data = await reader.readexactly(min(n, COPY_CHUNK))
        writer.write(data)
        n -= len(data)
        await writer.drain()
    await writer.drain()


async def _relay_response(up: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str) -> tuple[bool, bool]:
    """Copy one response (after any 1xx) from Triton to the client; returns (whether the
    upstream connection can carry the next request, whether the client's must close)."""
    while True:
        raw = await up.readuntil(b"\r\n\r\n")
        head = _Head.parse(raw)
        writer.write(raw)
        status_text = head.first.split(b" ", 2)[1] if head.first.count(b" ") else b""
        status = int(status_text) if status_text.isdigit() else 0
        if not 100 <= status < 200:
            break
    version = head.first.split(b" ", 1)[0].decode("latin-1")
    keep = not head.wants_close(version)
    if method == "HEAD" or status in (204, 304):
        pass
    elif any("chunked" in v.lower() for v in head.values("transfer-encoding")):
        while True:
            line = await up.readuntil(b"\r\n")
            writer.write(line)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionError(f"Triton sent a malformed chunk size {line[:40]!r}") from None
            if size == 0:
                while (trailer := await up.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                break
            await _copy(up, writer, size + 2)  # the chunk and its CRLF
    elif (length := head.content_length()) is not None:
        await _copy(up, writer, length)
    else:  # delimited by the end of the connection: the client's must end too
        while data := await up.read(COPY_CHUNK):
            writer.write(data)
            await writer.drain()
        await writer.drain()
        return False, True
    await writer.drain()
    return keep, False
