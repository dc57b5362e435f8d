"""``Detector.submit``: many cameras into one model, with dynamic batching.

    fut = det.submit(frame, source="cam2")   # returns at once (policy "block": when the queue has room)
    r = fut.result()                         # a Result, or the error a direct call would raise

Threads (started by the first submit, ended by ``Detector.close``):

- a preprocessing pool: each image is decoded / validated / resized as soon as it is
  submitted, so the next batch is ready while the backend runs the current one;
- the batcher: takes up to ``max_batch`` waiting requests, waiting at most
  ``max_delay_ms`` after the oldest one was submitted for more to arrive (none when it is
  already late), and makes one backend call for the batch;
- a postprocessing pool: thresholds, map resize and regions of each image, overlapped with
  the next batch's inference;
- the completer: resolves the futures strictly in the order the requests were queued, so
  the results of one source (of every source) complete in submission order, and a
  done-callback never sees a later frame before an earlier one.

A bad image fails only its own future, with the error ``det(image)`` raises; a backend
failure fails the futures of its batch. The queue holds at most ``queue_size`` requests
waiting for a batch; when it is full the Detector's ``queue_policy`` says what ``submit``
does: "block" (wait for room), "reject" (raise QueueFullError at once) or "drop_oldest"
(cancel the oldest waiting request's future and count it as dropped: for live video,
where the newest frame matters).

The worker threads hold the Detector only through a weak reference, so a Detector that is
dropped without ``close()`` is still collected, and its threads then end on their own.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from ffcore.geometry import FrameGeometry

from .errors import InferenceError, InvalidArgumentError, QueueFullError
from .result import LatencySplit
from .stages import Stages
from .stats import PipelineRecorder

POLICIES = ("block", "reject", "drop_oldest")
DEFAULT_MAX_DELAY_MS = 2.0
DEFAULT_QUEUE_SIZE = 64
DEFAULT_THREADS = 2
#: Batches whose results are still being postprocessed before the batcher waits: enough to
#: overlap postprocessing with the next inference, and a bound on memory in flight.
_IN_FLIGHT_BATCHES = 2


@dataclass(frozen=True)
class PipelineConfig:
    max_batch: int
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_policy: str = "block"
    threads: int = DEFAULT_THREADS

    def __post_init__(self) -> None:
        def positive_int(name: str, v: object) -> None:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, not {v!r}.")

        positive_int("max_batch", self.max_batch)
        positive_int("queue_size", self.queue_size)
        positive_int("pipeline_threads", self.threads)
        d = self.max_delay_ms
        if isinstance(d, bool) or not isinstance(d, (int, float, np.floating, np.integer)) or not 0 <= d < 60_000:
            raise InvalidArgumentError(f"max_delay_ms must be a number of milliseconds in [0, 60000), not {d!r}.")
        if self.queue_policy not in POLICIES:
            raise InvalidArgumentError(
                f"queue_policy must be one of {', '.join(repr(p) for p in POLICIES)}, not {self.queue_policy!r}: "
                "'block' waits for room, 'reject' raises QueueFullError, 'drop_oldest' cancels the oldest waiting frame."
            )


class _Request:
    # The image itself is not kept: only its preprocessing task holds it, so a frame is
    # freed as soon as it is at the model size.
    __slots__ = ("source", "future", "submitted", "prep")

    def __init__(self, source: object, submitted: float) -> None:
        self.source, self.submitted = source, submitted
        self.future: Future = Future()
        self.prep: Future | None = None


def _prepare(stages: Stages, image: object) -> tuple[np.ndarray, FrameGeometry, float]:
    """One image through the same prepare stage as ``det(image)`` (so: the same errors)."""
    t = time.perf_counter()
    prepared = stages.prepare([image])
    return prepared.batch[0], prepared.geometries[0], time.perf_counter() - t


class Pipeline:
    """The threads and the queue behind ``Detector.submit`` (see the module doc)."""

    def __init__(
        self, owner: object, config: PipelineConfig, stages: Stages, recorder: PipelineRecorder, on_scores,
    ) -> None:
        self._owner = weakref.ref(owner)  # never a strong reference: see the module doc
        self._config = config
        self._stages = stages
        self._prepare = partial(_prepare, stages)
        self._recorder = recorder
        self._on_scores = on_scores  # called with each batch's scores (drift monitoring)
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._closing = False
        self._done: queue.Queue = queue.Queue(maxsize=_IN_FLIGHT_BATCHES)
        self._pre_pool = ThreadPoolExecutor(config.threads, thread_name_prefix="ffrt-preprocess")
        self._post_pool = ThreadPoolExecutor(config.threads, thread_name_prefix="ffrt-postprocess")
        self._batcher = threading.Thread(target=self._batch_loop, name="ffrt-batcher", daemon=True)
        self._completer = threading.Thread(target=self._complete_loop, name="ffrt-completer", daemon=True)
        self._batcher.start()
        self._completer.start()
        # Dropped without close(): the threads end when the Detector is collected.
        weakref.finalize(owner, self.close, True, False)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    # -- callers' side -----------------------------------------------------------------

    def submit(self, image: object, source: object) -> Future:
        req = _Request(source, time.perf_counter())
        dropped = None
        with self._cond:
            self._check_open()
            while len(self._waiting) >= self._config.queue_size:
                policy = self._config.queue_policy
                if policy == "reject":
                    self._recorder.count(source, "rejected")
                    raise QueueFullError(
                        f"the submit queue is full ({self._config.queue_size} images waiting): the images arrive "
                        "faster than this Detector scores them. This Detector was made with queue_policy='reject'; "
                        "'block' waits for room, 'drop_oldest' keeps the newest frames, and a larger queue_size, "
                        "max_batch or a faster backend raise the rate it keeps up with."
                    )
                if policy == "drop_oldest":
                    dropped = self._waiting.popleft()
                    break
                if threading.current_thread() in (self._batcher, self._completer):
                    # A done-callback waiting for room would wait for itself.
                    raise QueueFullError(
                        "submit() from a done-callback found the queue full; waiting there would deadlock the "
                        "Detector (callbacks run in its completer thread). Submit from another thread."
                    )
                self._cond.wait()  # "block": the batcher notifies when it takes requests
                self._check_open()
            self._recorder.count(source, "submitted")
            # Scheduled under the lock, so preprocessing starts in queue order.
            req.prep = self._pre_pool.submit(self._prepare, image)
            self._waiting.append(req)
            self._cond.notify_all()
        if dropped is not None:
            self._cancel(dropped, "dropped")
        return req.future

    def close(self, cancel_pending: bool = False, wait: bool = True) -> None:
        """Refuse new submits; finish (default) or cancel the waiting requests; end the
        threads (``wait``: return once they have ended)."""
        with self._cond:
            self._closing = True
            cancelled = list(self._waiting) if cancel_pending else []
            if cancel_pending:
                self._waiting.clear()
            self._cond.notify_all()
        for req in cancelled:
            self._cancel(req, "cancelled")
        # A done-callback runs in the completer: closing from there must not join itself.
        if wait and threading.current_thread() not in (self._batcher, self._completer):
            self._batcher.join()
            self._completer.join()

    def _check_open(self) -> None:
        if self._closing:
            raise InferenceError(
                "this Detector is closed (close() was called or its with-block ended); submit() needs an open "
                "Detector: create a new one."
            )

    def _cancel(self, req: _Request, counter: str) -> None:
        req.prep.cancel()
        if req.future.cancel():
            self._recorder.count(req.source, counter)

    # -- the batcher -------------------------------------------------------------------

    def _batch_loop(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._run(batch)
        finally:
            self._done.put(None)  # tells the completer that nothing more comes
            self._pre_pool.shutdown(wait=True, cancel_futures=True)

    def _next_batch(self) -> list[_Request] | None:
        cfg = self._config
        with self._cond:
            while not self._waiting:
                if self._closing:
                    return None
                self._cond.wait()
            # Dynamic batching: wait for more until the batch is full or the oldest request
            # has waited max_delay_ms. A request that is already late goes at once.
            deadline = self._waiting[0].submitted + cfg.max_delay_ms / 1000.0
            while self._waiting and len(self._waiting) < cfg.max_batch and not self._closing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._waiting.popleft() for _ in range(min(cfg.max_batch, len(self._waiting)))]
            self._cond.notify_all()  # room for blocked submitters
        return batch

    def _run(self, batch: list[_Request]) -> None:
        # Claim each future; one the caller cancelled meanwhile is left out.
        live = []
        for req in batch:
            if req.future.set_running_or_notify_cancel():
                live.append(req)
            else:
                req.prep.cancel()
                self._recorder.count(req.source, "cancelled")
        if not live:
            return
        entries: list[tuple[_Request, object]] = []  # (request, Future of its Result | exception)
        good, arrays, prepared = [], [], []
        for req in live:
            try:
                array, geometry, prep_s = req.prep.result()
            except BaseException as e:  # the error det(image) would raise: this image's own
                entries.append((req, e))
                continue
            entries.append((req, None))
            good.append(len(entries) - 1)
            arrays.append(array)
            prepared.append((geometry, prep_s))
        if arrays:
            owner = self._owner()
            try:
                if owner is None:
                    raise InferenceError("the Detector was garbage-collected while images were waiting")
                thresholds = owner.thresholds  # once per batch: set_thresholds never splits a batch
                t0 = time.perf_counter()
                maps, scores = self._stages.run(np.stack(arrays))
                t1 = time.perf_counter()
            except BaseException as e:
                for i in good:
                    entries[i] = (entries[i][0], e)
            else:
                self._recorder.batch(len(arrays))
                self._on_scores(scores.tolist())
                for j, i in enumerate(good):
                    req = entries[i][0]
                    geometry, prep_s = prepared[j]
                    fut = self._post_pool.submit(
                        self._finish, req, maps[j, 0], float(scores[j]), geometry, thresholds, prep_s, t1 - t0
                    )
                    entries[i] = (req, fut)
            finally:
                del owner
        self._done.put(entries)  # blocks while _IN_FLIGHT_BATCHES are being postprocessed

    def _finish(self, req: _Request, amap, score, geometry, thresholds, prep_s: float, infer_s: float):
        t = time.perf_counter()
        out = self._stages.finish(amap, score, geometry, thresholds)
        end = time.perf_counter()
        pre_ms, inf_ms, post_ms = prep_s * 1e3, infer_s * 1e3, (end - t) * 1e3
        total_ms = (end - req.submitted) * 1e3
        split = LatencySplit(max(0.0, total_ms - pre_ms - inf_ms - post_ms), pre_ms, inf_ms, post_ms)
        return self._stages.result(out, thresholds, total_ms, split), end

    # -- the completer -----------------------------------------------------------------

    def _complete_loop(self) -> None:
        try:
            while True:
                entries = self._done.get()
                if entries is None:
                    break
                for req, outcome in entries:
                    self._resolve(req, outcome)
        finally:
            self._post_pool.shutdown(wait=True, cancel_futures=True)

    def _resolve(self, req: _Request, outcome: object) -> None:
        if isinstance(outcome, Future):
            try:
                result, end = outcome.result()
            except BaseException as e:
                outcome = e
            else:
                s = result.latency_split
                self._recorder.result(
                    req.source, req.submitted, end,
                    (s.queue_ms, s.preprocess_ms, s.inference_ms, s.postprocess_ms), result.is_anomalous,
                )
                req.future.set_result(result)
                return
        self._recorder.count(req.source, "failed")
        req.future.set_exception(outcome)
