"""Where ``ffrt run`` gets its frames: image folders and globs, video files, cameras, streams.

One command-line argument is one source (one camera of the line). :func:`parse_sources`
turns the arguments into :class:`SourceSpec` objects before the model is loaded, so a
mistyped path fails at once; :func:`read_frames` then yields one :class:`Frame` per frame,
in the source's own order. ffrt.line.runner reads each source in its own thread.

What counts as which kind of source:

- a folder: its image files, in name order (``--recursive``: sub-folders too);
- an argument with ``*``, ``?`` or ``[`` that is not an existing path: a glob of image files;
- an image file (image suffix): a one-frame source;
- any other file: a video file, read with OpenCV ``VideoCapture``;
- a number (``0``): a camera index; ``scheme://...`` (rtsp, http, ...): a stream URL.
  Both are *live*: they are opened and read by OpenCV in their thread, and cannot be
  checked before the run starts.

Faults never end the run. An unreadable image file, or a video frame OpenCV cannot decode,
is yielded as a Frame with ``error`` set (the caller reports and counts it). A video file
ends at its last frame; a live source whose reads keep failing (``MAX_BAD_READS`` in a row)
is taken as disconnected and ends; a source that cannot be opened ends at once. The reason
is in :attr:`FrameReader.ended`.
"""

from __future__ import annotations

import glob
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ffcore.files import IMAGE_SUFFIXES

from ..errors import InvalidArgumentError, InvalidImageError
from ..runreport import collect_images

IMAGES, VIDEO, CAMERA, STREAM = "images", "video", "camera", "stream"

#: Failed reads in a row after which a live source counts as disconnected (and a video file
#: as ended): one bad frame is a fault to report, a run of them is a dead source.
MAX_BAD_READS = 25
#: Pause between failed reads of a live source, so that a dead camera does not spin a core.
LIVE_RETRY_S = 0.04

#: FourCCs (as OpenCV reports them) of codecs that discard detail: their artefacts can score as
#: defects on a model trained on lossless images. Raw and lossless ones (YUYV, FFV1, ...) are
#: not listed.
LOSSY_CODECS = frozenset({
    "MJPG", "JPEG", "AVC1", "H264", "X264", "DAVC", "HEVC", "H265", "HVC1", "HEV1", "MP4V", "XVID", "DIVX",
    "FMP4", "MPG1", "MPG2", "VP80", "VP90", "AV01", "WMV2", "WMV3",
})

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class SourceSpec:
    """One source of frames: its name (the camera), kind, and the argument it came from."""

    name: str
    kind: str  # IMAGES, VIDEO, CAMERA or STREAM
    target: str
    #: For IMAGES: the files, in order.
    files: tuple[Path, ...] = ()
    #: For IMAGES from a folder: (entry, reason) of each folder entry left out.
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def live(self) -> bool:
        """Cameras and streams: frames arrive at their own pace and cannot be re-read."""
        return self.kind in (CAMERA, STREAM)

    def describe(self) -> str:
        if self.kind == IMAGES:
            return f"{len(self.files)} image file{'s' if len(self.files) != 1 else ''} from {self.target}"
        return f"{self.kind} {self.target}"


@dataclass
class Frame:
    """One frame of one source. ``image`` is None when ``error`` says why it could not be read."""

    index: int  # position in the source, from 0 (a video's unreadable frames keep their place)
    time: float  # wall clock (time.time()) when the frame was read
    image: np.ndarray | None
    file: str | None = None  # the image file, for IMAGES
    video_ms: float | None = None  # position in a video file
    error: str | None = None
    #: A JPEG decoded at 1/decode_scale of its size (ffrt.line.decode); 1: decoded whole.
    decode_scale: int = 1


def parse_sources(targets: list[str], names: list[str] | None, recursive: bool = False) -> list[SourceSpec]:
    """The sources named on the command line, checked before any model is loaded.

    Raises InvalidArgumentError listing every argument that names nothing (a missing path,
    a folder or glob without image files) and every bad ``--source-name``.
    """
    names = list(names or [])
    problems: list[str] = []
    if names and len(names) != len(targets):
        problems.append(f"--source-name given {len(names)} time(s) for {len(targets)} source(s): give one name per source, in order, or none")
    for n in names:
        if not _NAME.match(n):
            problems.append(f"--source-name {n!r}: use 1-64 letters, digits, '.', '_' or '-' (it names output folders)")
    if len(set(names)) != len(names):
        problems.append("--source-name: each source needs its own name")
    specs: list[SourceSpec] = []
    used: set[str] = set(names)
    for i, arg in enumerate(targets):
        kind, files, skipped, problem = _classify(arg, recursive)
        if problem:
            problems.append(problem)
            continue
        name = names[i] if names else _unique(_default_name(arg, kind), used)
        specs.append(SourceSpec(name=name, kind=kind, target=arg, files=tuple(files), skipped=tuple(skipped)))
    if problems:
        raise InvalidArgumentError("; ".join(problems))
    return specs


def _classify(arg: str, recursive: bool) -> tuple[str, list[Path], list[tuple[str, str]], str | None]:
    p = Path(arg)
    if p.is_dir():
        listing = collect_images([arg], recursive)
        return IMAGES, listing.paths, listing.skipped, (listing.problems[0] if listing.problems else None)
    if p.exists():
        return (IMAGES, [p], [], None) if p.suffix.lower() in IMAGE_SUFFIXES else (VIDEO, [], [], None)
    if arg.isdigit():
        return CAMERA, [], [], None
    if _URL.match(arg):
        return STREAM, [], [], None
    if _GLOB.search(arg):
        matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
        files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
        skipped = [(str(m), f"not an image file ({', '.join(IMAGE_SUFFIXES)})") for m in matches if m not in files]
        if not files:
            return IMAGES, [], [], f"{arg}: the pattern matches no image files"
        return IMAGES, files, skipped, None
    return IMAGES, [], [], f"{arg}: no such file or folder (nor a camera index, a stream URL or a glob)"


def _default_name(arg: str, kind: str) -> str:
    if kind == CAMERA:
        return f"camera{arg}"
    if kind == STREAM:
        host = _URL.sub("", arg).split("/")[0].split("@")[-1]
        base = host or "stream"
    else:
        p = Path(_GLOB.split(arg)[0]) if kind == IMAGES and _GLOB.search(arg) else Path(arg)
        base = p.stem if p.suffix else p.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:48] or kind


def _unique(name: str, used: set[str]) -> str:
    out, k = name, 2
    while out in used:
        out, k = f"{name}-{k}", k + 1
    used.add(out)
    return out


@dataclass
class FrameReader:
    """Iterates one source's frames; afterwards ``ended`` says why it stopped and
    ``failed`` whether that was a fault (cannot open, disconnected) rather than the end."""

    spec: SourceSpec
    read_image: object  # callable(path) -> BGR array or ReducedFrame; raises InvalidImageError
    stop: threading.Event = field(default_factory=threading.Event)
    realtime: bool = False
    ended: str = ""
    failed: bool = False
    #: Called once from the reader's thread with the codec's FourCC ("" if unknown) when a
    #: video, camera or stream has been opened.
    on_open: Callable[[str], None] | None = None
    #: Image files: decode them on this pool (ffrt.line.decode), at most ``ahead`` frames before
    #: the caller takes them; None: in the reader's own thread.
    pool: Executor | None = None
    ahead: int = 2

    def __iter__(self) -> Iterator[Frame]:
        if self.spec.kind == IMAGES:
            yield from self._images()
        else:
            yield from self._video()

    def _images(self) -> Iterator[Frame]:
        if self.pool is not None:
            yield from self._images_ahead()
            return
        for i, path in enumerate(self.spec.files):
            if self.stop.is_set():
                self.ended = "stopped"
                return
            yield self._frame(i, path, lambda: self.read_image(path))
        self.ended = "end of the image list"

    def _images_ahead(self) -> Iterator[Frame]:
        """The files decoded on the pool, up to ``ahead`` at a time, yielded in the source's order."""
        pending: deque = deque()
        files = iter(enumerate(self.spec.files))
        try:
            while True:
                while len(pending) < max(1, self.ahead) and not self.stop.is_set():
                    nxt = next(files, None)
                    if nxt is None:
                        break
                    pending.append((nxt[0], nxt[1], self.pool.submit(self.read_image, nxt[1])))
                if self.stop.is_set():
                    self.ended = "stopped"
                    return
                if not pending:
                    break
                i, path, decoded = pending.popleft()
                yield self._frame(i, path, decoded.result)
        finally:
            for *_, decoded in pending:
                decoded.cancel()
        self.ended = "end of the image list"

    @staticmethod
    def _frame(i: int, path: Path, read: Callable[[], object]) -> Frame:
        try:
            return Frame(i, time.time(), read(), file=str(path))
        except InvalidImageError as e:  # ImageFileError too: unreadable, corrupt, refused by the limits
            return Frame(i, time.time(), None, file=str(path), error=str(e))

    def _video(self) -> Iterator[Frame]:
        import cv2

        live = self.spec.live
        target = int(self.spec.target) if self.spec.kind == CAMERA else self.spec.target
        cap = cv2.VideoCapture(target)
        try:
            if not cap.isOpened():
                self.failed = True
                self.ended = f"could not be opened by OpenCV VideoCapture ({_cannot_open_hint(self.spec.kind)})"
                return
            if self.on_open is not None:
                self.on_open(fourcc(cap))
            yield from self._read_capture(cap, live)
        finally:
            cap.release()

    def _read_capture(self, cap, live: bool) -> Iterator[Frame]:
        import cv2

        count = 0 if live else int(max(0.0, cap.get(cv2.CAP_PROP_FRAME_COUNT)))  # 0: unknown
        fps = cap.get(cv2.CAP_PROP_FPS) if self.realtime and not live else 0.0
        index, bad, t0 = 0, [], time.monotonic()
        while not self.stop.is_set():
            if fps > 0 and self.stop.wait(max(0.0, t0 + index / fps - time.monotonic())):
                break
            # grab + retrieve rather than read: a packet that fails to decode fails grab (and
            # the next grab moves on to the next packet; checked with FFmpeg's MJPEG decoder),
            # so one damaged frame does not end the file. A frame FFmpeg decodes with error
            # concealment comes back as a picture (a garbled one) and is scored as such.
            ok = cap.grab()
            image = None
            if ok:
                ok, image = cap.retrieve()
                ok = bool(ok) and image is not None and image.size > 0
            if not ok:
                bad.append(index)
                index += 1
                if len(bad) >= MAX_BAD_READS or (count and index >= count):
                    break
                if live:
                    self.stop.wait(LIVE_RETRY_S)
                continue
            now = time.time()
            # Failed reads followed by a good one were damaged frames, not the end.
            for i in bad:
                yield Frame(i, now, None, error=f"frame {i} could not be decoded (corrupt data in the stream)")
            bad = []
            yield Frame(index, now, image, video_ms=None if live else float(cap.get(cv2.CAP_PROP_POS_MSEC)))
            index += 1
        if self.stop.is_set():
            self.ended = "stopped"
        elif live:
            self.failed = True
            self.ended = f"disconnected: {len(bad)} reads in a row failed"
        else:
            # A damaged tail looks like the end; the frame count in the header tells them apart.
            missing = range(bad[0], count) if bad and count else range(0)
            for i in missing:
                yield Frame(i, time.time(), None, error=f"frame {i} of {count} could not be read (the end of the file is damaged)")
            self.ended = "end of the video file"


def fourcc(cap) -> str:
    """The opened capture's codec as four upper-case characters, or "" when OpenCV does not say."""
    import cv2

    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip().upper() if code > 0 and text.isprintable() else ""


def _cannot_open_hint(kind: str) -> str:
    if kind == CAMERA:
        return "no such camera, or it is in use by another program"
    if kind == STREAM:
        return "unreachable, wrong URL, or a protocol this OpenCV build lacks"
    return "not a video file, or a codec this OpenCV build lacks"
