"""The loop of ``ffrt run``: sources in their threads, one Detector, one writer.

    source thread (one per camera)       main thread
    read frame -> det.submit() ---+      take (frame, future) in submission order,
    read frame -> det.submit() ---+--->  wait for the future, write the frame's lines,
    ...                           |      count, update metrics and the progress bar
    end of source -> End marker --+

An image-file source's frames are decoded ahead on a pool of threads shared by the sources
(``decode_threads``, ffrt.line.decode) and taken from it in the source's order, so decoding
overlaps inference; videos, cameras and streams are read in their source's thread.

One FIFO of (frame, future) pairs in submission order: results of one source are written
in frame order, and the writer is the only thread touching the output files. The FIFO is
bounded, so a slow disk slows the sources (through ``block``) instead of filling memory.

Stopping: ``stop`` (first Ctrl-C / SIGTERM) makes every source stop reading; the frames
already submitted are still scored and written, then the run ends "interrupted". ``abort``
(a second Ctrl-C) stops waiting for them. A source thread blocked inside OpenCV (a stream
that stopped answering) cannot be interrupted: the threads are daemons, and the run stops
waiting for a source after ``DRAIN_S``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import __version__
from ..errors import FFRTError
from .writer import RunOutputs
from .sources import IMAGES, LOSSY_CODECS, Frame, FrameReader, SourceSpec

#: After a stop, how long the run waits for sources still reading before it gives up on them.
DRAIN_S = 10.0
#: Throughput and reject rate "now" are measured over this many seconds.
RECENT_S = 10.0
#: Summary rewrite and fsync of the line files, at most this often.
SYNC_EVERY_S = 1.0
REFUSED = "refused"


@dataclass
class Opened:
    """Put by a video, camera or stream source once it is open: its codec's FourCC."""

    source: str
    codec: str


@dataclass
class End:
    """Put by a source thread when it has put its last frame."""

    source: str
    reason: str
    failed: bool


@dataclass
class SourceState:
    spec: SourceSpec
    frames: int = 0
    scored: int = 0
    fail: int = 0
    errors: int = 0
    dropped: int = 0
    refused: int = 0
    ended: str = ""
    failed: bool = False
    codec: str = ""
    recent: deque = field(default_factory=deque)  # (monotonic time, rejected) of recent scored frames
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scored_now(self, rejected: bool) -> None:
        now = time.monotonic()
        with self.lock:
            self.recent.append((now, rejected))
            self._prune(now)

    def live(self, started: float) -> dict:
        now = time.monotonic()
        with self.lock:
            self._prune(now)
            n, fails = len(self.recent), sum(r for _, r in self.recent)
        span = min(RECENT_S, now - started)
        return {"fps": n / span if span > 0 else 0.0, "reject_rate": fails / n if n else 0.0, "up": not self.ended}

    def _prune(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - RECENT_S:
            self.recent.popleft()

    def to_dict(self) -> dict:
        s = self.spec
        return {
            "name": s.name, "kind": s.kind, "target": s.target, "frames": self.frames, "scored": self.scored,
            "fail": self.fail, "pass": self.scored - self.fail, "errors": self.errors, "dropped": self.dropped,
            "refused": self.refused, "ended": self.ended or "running", "source_failed": self.failed,
            **({"codec": self.codec} if self.codec else {}),
            **({"skipped_entries": [{"path": p, "reason": r} for p, r in s.skipped]} if s.skipped else {}),
        }


class LineRun:
    """One run of ``ffrt run``. ``submit(image, source=name) -> Future`` is the Detector's."""

    def __init__(
        self,
        submit: Callable[..., Future],
        specs: list[SourceSpec],
        read_image: Callable,
        outputs: RunOutputs,
        *,
        queue_full: tuple[type[BaseException], ...] = (),
        realtime: bool = False,
        pending_max: int = 64,
        header: dict | None = None,
        on_frame: Callable[[str, str, dict | None], None] | None = None,
        codec_trained: bool = False,
        decode_threads: int = 0,
        decode_ahead: int = 2,
    ) -> None:
        self._submit = submit
        self.specs = specs
        self._read_image = read_image
        self.outputs = outputs
        self._queue_full = queue_full
        self._realtime = realtime
        self._pending: queue.Queue = queue.Queue(maxsize=max(1, pending_max))
        self.header = header or {}
        #: Called after each frame's lines with (source, outcome, latencies in ms or None);
        #: outcome: pass, fail, error, dropped, refused (the metrics' labels).
        self.on_frame = on_frame
        #: Whether the model was trained on codec artefacts (fftrain --augment-jpeg): if not, a
        #: source delivering lossy-compressed frames is warned about once.
        self.codec_trained = codec_trained
        #: Image files are decoded on a pool of this many threads shared by the sources, each
        #: source at most ``decode_ahead`` frames ahead (0 threads: in each source's thread).
        self._decode_threads, self._decode_ahead = decode_threads, decode_ahead
        self._decode_pool: ThreadPoolExecutor | None = None
        #: A progress counter (ffcore.progress) and where messages go; set by the caller.
        self.progress = None
        self.say: Callable[[str], None] = lambda msg: None
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.states = {s.name: SourceState(s) for s in specs}
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self._cpu0 = time.process_time()
        self._postfix_at = float("-inf")
        self._threads: list[threading.Thread] = []
        self.status = "running"
        self.failure = ""  # why the run failed (status "failed"), for the summary
        #: Frames read and left unwritten when the run was stopped without waiting for them.
        self.abandoned = 0

    # -- sources ---------------------------------------------------------------------

    def _read(self, spec: SourceSpec) -> None:
        reader = FrameReader(spec, self._read_image, stop=self.stop, realtime=self._realtime,
                             on_open=lambda codec: self._put(Opened(spec.name, codec)),
                             pool=self._decode_pool, ahead=self._decode_ahead)
        keep_image = self.outputs.overlays
        try:
            for frame in reader:
                if frame.error is not None:
                    self._put((spec, frame, None))
                    continue
                try:
                    future = self._submit(frame.image, source=spec.name)
                except self._queue_full:
                    future = REFUSED
                frame.decode_scale = getattr(frame.image, "scale", 1)
                if not keep_image:
                    frame.image = None  # the Detector holds its own reference until it has preprocessed
                self._put((spec, frame, future))
            self._put(End(spec.name, reader.ended, reader.failed))
        except BaseException as e:  # an OpenCV or reader error ends this source only
            self._put(End(spec.name, f"failed: {type(e).__name__}: {e}", True))

    def _opened(self, item: Opened) -> None:
        self.states[item.source].codec = item.codec
        if item.codec in LOSSY_CODECS and not self.codec_trained:
            self.say(
                f"ffrt: warning: {item.source}: its frames are {item.codec}-compressed (lossy) and this model was "
                "trained without codec artefacts: they can score as defects and reject good parts. Train on frames "
                "recorded the way this source records them, or retrain with 'fftrain --augment-jpeg 0.5' (which also "
                "makes blur-like defects harder to see); record replay videos losslessly (e.g. FFV1)."
            )

    def _put(self, item) -> None:
        while not self.abort.is_set():
            try:
                self._pending.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # -- the run ---------------------------------------------------------------------

    def run(self) -> str:
        """Read every source to its end (or until ``stop``); returns the final status:
        "complete", "interrupted" or "failed" (an output could not be written)."""
        if self._decode_threads > 0 and any(spec.kind == IMAGES for spec in self.specs):
            self._decode_pool = ThreadPoolExecutor(self._decode_threads, thread_name_prefix="ffrt-decode")
        for spec in self.specs:
            t = threading.Thread(target=self._read, args=(spec,), name=f"ffrt-source-{spec.name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.outputs.write_summary(self.summary())
        open_sources, last_sync, stop_seen = len(self.specs), time.monotonic(), None
        try:
            while open_sources and not self.abort.is_set():
                if self.stop.is_set() and stop_seen is None:
                    stop_seen = time.monotonic()
                if stop_seen is not None and time.monotonic() - stop_seen > DRAIN_S:
                    break  # a source stuck in a read: what was submitted has been written
                try:
                    item = self._pending.get(timeout=0.2)
                except queue.Empty:
                    item = None
                if isinstance(item, End):
                    st = self.states[item.source]
                    st.ended, st.failed = item.reason or "ended", item.failed
                    open_sources -= 1
                    self.say(f"ffrt: {'error: ' if item.failed else ''}{item.source}: {st.ended} ({st.frames} frames)")
                elif isinstance(item, Opened):
                    self._opened(item)
                elif item is not None:
                    self._handle(*item)
                if self.progress is not None:
                    self.progress.update(0)
                if time.monotonic() - last_sync >= SYNC_EVERY_S:
                    self.outputs.sync()
                    self.outputs.write_summary(self.summary())
                    last_sync = time.monotonic()
            self.status = "interrupted" if self.stop.is_set() or self.abort.is_set() else "complete"
        except BaseException as e:
            self.status = "failed"
            self.failure = str(e) if isinstance(e, FFRTError) else f"{type(e).__name__}: {e}"
            raise
        finally:
            self.stop.set()
            self._abandon_pending()
            for t in self._threads:
                t.join(timeout=0.5)
            if self._decode_pool is not None:
                self._decode_pool.shutdown(wait=False, cancel_futures=True)
            for st in self.states.values():
                st.ended = st.ended or ("stopped" if self.status != "complete" else "ended")
            self.outputs.close()
            self.outputs.write_summary(self.summary())
        return self.status

    def _abandon_pending(self) -> None:
        """After a second Ctrl-C (or a source stuck past DRAIN_S): frames read but not
        written are counted, and their futures cancelled so the Detector skips them."""
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, (End, Opened)):
                self.abandoned += 1
                if isinstance(item[2], Future):
                    item[2].cancel()

    def _handle(self, spec: SourceSpec, frame: Frame, future) -> None:
        st = self.states[spec.name]
        result, error, status = None, frame.error, "error"
        if future is REFUSED:
            status = "refused"
        elif future is not None:
            try:
                result = self._wait(future)
                status = "scored"
            except CancelledError:
                status = "dropped"
            except FFRTError as e:  # this frame only: refused image, failed batch
                error = str(e)
        record = frame_record(spec.name, frame, status, result, error)
        # Written first, counted after: a write that fails (disk full) must not leave the
        # summary counting a frame the results file does not have.
        self.outputs.write(record, frame.image, result)
        st.frames += 1
        if status == "scored":
            st.scored += 1
            st.fail += bool(result.is_anomalous)
            st.scored_now(bool(result.is_anomalous))
        elif status == "error":
            st.errors += 1
        elif status == "dropped":
            st.dropped += 1
        else:
            st.refused += 1
        if status == "error":
            where = f" ({frame.file})" if frame.file and frame.file not in record["error"] else ""
            self.say(f"ffrt: error: {spec.name} frame {frame.index}{where}: {record['error']}")
        if self.on_frame is not None:
            outcome = record.get("verdict", status).lower() if status == "scored" else status
            self.on_frame(spec.name, outcome, stage_latencies(record))
        if self.progress is not None:
            now = time.monotonic()
            if now - self._postfix_at >= 0.5:  # tqdm redraws at each set_postfix
                self.show_totals()
                self._postfix_at = now
            self.progress.update(1)

    def show_totals(self) -> None:
        """Put the current counts on the progress line. Call it once more before the bar
        closes: between frames they are refreshed at most twice a second, and the last line
        must agree with the summary."""
        if self.progress is not None:
            t = self.totals()
            self.progress.set_postfix(rejected=f"{100 * t['reject_rate']:.1f}%", errors=t["errors"])

    def _wait(self, future: Future):
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                if self.abort.is_set():
                    future.cancel()
                    raise CancelledError from None

    # -- reporting -------------------------------------------------------------------

    def live(self) -> dict:
        """What the metrics endpoint shows at a scrape."""
        return {"sources": {n: st.live(self._t0) for n, st in self.states.items()}}

    def totals(self) -> dict:
        keys = ("frames", "scored", "fail", "errors", "dropped", "refused")
        t = {k: sum(getattr(st, k) for st in self.states.values()) for k in keys}
        elapsed = time.monotonic() - self._t0
        t["pass"] = t["scored"] - t["fail"]
        t["elapsed_s"] = round(elapsed, 3)
        t["fps"] = round(t["scored"] / elapsed, 3) if elapsed > 0 else 0.0
        # CPU time of every thread of this process since the run began (decoding, the Detector's
        # pools, the backend's threads): what one frame costs the machine, whatever else runs on it.
        t["cpu_s"] = round(time.process_time() - self._cpu0, 3)
        t["cpu_ms_per_frame"] = round(1e3 * t["cpu_s"] / t["scored"], 3) if t["scored"] else None
        t["reject_rate"] = round(t["fail"] / t["scored"], 6) if t["scored"] else 0.0
        t["sources_failed"] = sum(st.failed for st in self.states.values())
        t["abandoned"] = self.abandoned
        return t

    def summary(self, extra: dict | None = None) -> dict:
        return {
            **self.header,
            "ffrt_version": __version__,
            "status": self.status,
            "started": iso_time(self.started_at),
            "totals": self.totals(),
            "sources": [st.to_dict() for st in self.states.values()],
            "outputs": self.outputs.paths(),
            **({"error": self.failure} if self.failure else {}),
            **(extra or {}),
        }


def frame_record(source: str, frame: Frame, status: str, result=None, error: str | None = None) -> dict:
    """The JSON line of one frame."""
    rec: dict = {"source": source, "frame": frame.index}
    if frame.file is not None:
        rec["file"] = frame.file
    if frame.decode_scale > 1:
        rec["decode_scale"] = frame.decode_scale
    if frame.video_ms is not None:
        rec["video_ms"] = round(frame.video_ms, 3)
    rec["time"] = iso_time(frame.time)
    rec["status"] = status
    if result is not None:
        rec.update(result_fields(result))
    if error:
        rec["error"] = " ".join(line.strip() for line in str(error).splitlines())
    return rec


def result_fields(result) -> dict:
    """The verdict first, then ``Result.to_dict()`` (score, normalized score, regions, latency
    and its split) less what is the same for every frame of a run (backend, precision: in
    summary.json)."""
    d = result.to_dict()
    d.pop("backend", None)
    d.pop("precision", None)
    return {"verdict": "FAIL" if d.pop("is_anomalous") else "PASS", **d}


#: Stage latencies in a frame's record, by the metrics' stage label.
STAGES = {"queue": "queue_ms", "preprocess": "preprocess_ms", "inference": "inference_ms", "postprocess": "postprocess_ms", "total": "latency_ms"}


def stage_latencies(record: dict) -> dict[str, float]:
    return {stage: record[key] for stage, key in STAGES.items() if record.get(key) is not None}


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
