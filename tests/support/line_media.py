"""Real media for the ``ffrt run`` tests: video files written with OpenCV, a frame damaged
inside one, and an MJPEG camera stream served over HTTP on loopback.

The opencv-python wheel here writes MJPG in .avi through its FFmpeg backend (also XVID,
mp4v, FFV1; H.264 needs an encoder the wheel lacks). MJPG is intra-only: each frame is one
JPEG in its own AVI chunk, so one frame can be damaged without touching the others.
"""

from __future__ import annotations

import http.server
import struct
import threading
import time
from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def avi_frame_chunks(data: bytes) -> list[tuple[int, int]]:
    """(payload offset, payload size) of each video frame chunk ('00dc'/'00db') in the
    'movi' list of an AVI file, in order (RIFF: fourcc, little-endian size, payload, pad)."""
    movi = data.index(b"movi") + 4
    chunks, pos = [], movi
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if tag == b"idx1" or not tag.isascii():
            break
        if tag in (b"00dc", b"00db"):
            chunks.append((pos + 8, size))
        pos += 8 + size + (size & 1)
    return chunks


def damage_frame(path: Path, index: int, nbytes: int = 400) -> None:
    """Overwrite the start of frame ``index``'s JPEG (its markers and tables) with zeros:
    bytes in the middle of the file, that no decoder can make a picture of."""
    data = bytearray(path.read_bytes())
    offset, size = avi_frame_chunks(bytes(data))[index]
    data[offset:offset + min(nbytes, size)] = bytes(min(nbytes, size))
    path.write_bytes(bytes(data))


class MjpegCamera:
    """An IP camera on loopback: ``multipart/x-mixed-replace`` JPEG frames over HTTP (what
    most IP cameras serve), ``fps`` frames a second, then the connection is closed (the
    camera goes away). ``url`` is its address."""

    def __init__(self, frames: list[np.ndarray], fps: float = 20.0) -> None:
        jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for j in jpegs:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j) + j + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1.0 / fps)
                except OSError:
                    pass  # the client left first

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegCamera":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
