"""Detector.submit: dynamic batching through the real ONNX Runtime on real ELPV cells.

Results are identified by their scores: the cells used here are picked so that no two
score within 0.1 % of each other, far above the batch-vs-single difference of the backend
(~1e-6 relative), so a result delivered to the wrong future cannot pass.

Back-pressure is made with a real mechanism, not a mock: futures are resolved by one
completer thread, which also runs done-callbacks; a callback that waits on an Event holds
the pipeline exactly like a slow consumer does, so the queue fills deterministically
however fast or slow this machine is.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from concurrent.futures import CancelledError

import cv2
import numpy as np
import pytest

from ffrt import Detector, InferenceError, InvalidArgumentError, InvalidImageError, QueueFullError, Result

FOREVER = 30.0  # seconds: a bound for waits that must end much sooner; never reached when the code works


@pytest.fixture(scope="module")
def cells(tiny_onnx, elpv_split):
    """(BGR 300x300 cells, their scores from direct calls), scores pairwise > 0.1 % apart."""
    det = Detector(tiny_onnx, backend="onnxruntime-cpu")
    images, scores = [], []
    for sample in elpv_split.test[:160]:
        image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        s = det(image).score
        if all(abs(s - t) > 1e-3 * max(abs(s), abs(t)) for t in scores):
            images.append(image)
            scores.append(s)
    assert len(images) >= 96, "the tiny model should give most ELPV cells distinct scores"
    return images[:96], np.array(scores[:96])


def identify(result: Result, expected: np.ndarray) -> int:
    """Index of the cell whose direct-call score this result has (or fail)."""
    i = int(np.argmin(np.abs(expected - result.score)))
    assert result.score == pytest.approx(expected[i], rel=1e-4), "a result matches no submitted cell"
    return i


def new_threads(before: set) -> list[str]:
    return sorted(t.name for t in set(threading.enumerate()) - before if t.is_alive() and t.name.startswith("ffrt-"))


class CompleterHold:
    """Holds the completer thread inside a done-callback until released."""

    def __init__(self, det: Detector, image) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        for _ in range(20):  # the first future may finish before the callback is attached: try again
            fut = det.submit(image, source="hold")
            fut.add_done_callback(self._callback)
            if self.holding.wait(FOREVER):
                return
        raise AssertionError("could not hold the completer")

    def _callback(self, fut) -> None:
        if threading.current_thread().name != "ffrt-completer":
            return  # already done when the callback was attached: it ran here, in the test thread
        self.holding.set()
        self.release.wait(FOREVER)


def test_results_of_each_source_complete_in_order_mixed_with_direct_calls(tiny_onnx, cells):
    images, expected = cells
    before = set(threading.enumerate())
    det = Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=8, max_delay_ms=5, queue_size=16)
    sources = {f"cam{k}": list(range(k, 96, 4)) for k in range(4)}  # 24 distinct cells per camera
    completed = {name: [] for name in sources}
    futures = {name: [] for name in sources}
    direct_ok = []

    def camera(name):
        for i in sources[name]:
            f = det.submit(images[i], source=name)
            f.add_done_callback(lambda f, name=name: completed[name].append(identify(f.result(), expected)))
            futures[name].append(f)

    def direct():  # __call__ and predict_batch on the same Detector, at the same time
        for k in range(6):
            ok = identify(det(images[k]), expected) == k
            batch = det.predict_batch(images[40 + k : 48 + k])
            direct_ok.append(ok and [identify(r, expected) for r in batch] == list(range(40 + k, 48 + k)))

    threads = [threading.Thread(target=camera, args=(n,)) for n in sources] + [threading.Thread(target=direct) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(FOREVER)
    for name, futs in futures.items():
        assert [identify(f.result(FOREVER), expected) for f in futs] == sources[name]  # each future, its own image
    # A future's waiters wake before its done-callbacks run (concurrent.futures sets the
    # result, notifies, then invokes callbacks), so the callbacks' record is complete only
    # once close() has joined the completer thread that runs them.
    det.close()
    stats = det.pipeline_stats()
    for name in sources:
        assert completed[name] == sources[name]  # completed in submission order
    assert direct_ok == [True] * 12
    assert stats.completed == 96 and stats.submitted == 96 and stats.failed == 0
    assert 1 <= stats.mean_batch_size <= 8 and stats.batches >= 12
    assert new_threads(before) == []


def test_a_corrupt_png_fails_only_its_own_future_with_the_direct_error(tiny_onnx, cells, tmp_path):
    images, expected = cells
    paths = []
    for i in range(6):
        p = tmp_path / f"cell{i}.png"
        cv2.imwrite(str(p), images[i])
        paths.append(str(p))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(open(paths[0], "rb").read()[:300])  # a real PNG, truncated
    paths.insert(3, str(corrupt))
    with Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=8, max_delay_ms=50) as det:
        with pytest.raises(InvalidImageError) as direct:
            det(str(corrupt))
        futures = [det.submit(p) for p in paths] + [det.submit(None), det.submit(np.zeros((9, 9, 4), np.uint8))]
        outcomes = [f.exception(FOREVER) or f.result() for f in futures]
        with pytest.raises(InvalidImageError) as none_direct:
            det(None)
        assert type(outcomes[3]) is type(direct.value) and str(outcomes[3]) == str(direct.value)
        assert type(outcomes[7]) is type(none_direct.value) and str(outcomes[7]) == str(none_direct.value)
        assert isinstance(outcomes[8], InvalidImageError) and "alpha" in str(outcomes[8])
        good = outcomes[:3] + outcomes[4:7]
        assert [identify(r, expected) for r in good] == list(range(6))
        assert det.pipeline_stats().failed == 3
        assert det(images[0]).score == pytest.approx(expected[0], rel=1e-5)  # the next call works


def test_reject_policy_raises_at_once_and_counts(tiny_onnx, cells):
    images, expected = cells
    det = Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=1, max_delay_ms=0, queue_size=3, queue_policy="reject")
    hold = CompleterHold(det, images[0])
    accepted, rejected = [], 0
    for i in range(20):
        try:
            accepted.append((i, det.submit(images[i], source="cam")))
        except QueueFullError as e:
            rejected += 1
            assert "queue_policy='reject'" in str(e)
    # Besides the 3 waiting, at most 3 more (max_batch=1): two batches awaiting the held
    # completer and one in the batcher's hands, waiting to hand over.
    assert 3 <= len(accepted) <= 3 + 3 and rejected == 20 - len(accepted)
    hold.release.set()
    assert [identify(f.result(FOREVER), expected) for _, f in accepted] == [i for i, _ in accepted]
    assert det.pipeline_stats("cam").rejected == rejected and det.pipeline_stats().rejected == rejected
    det.close()


def test_block_policy_waits_for_room(tiny_onnx, cells):
    images, expected = cells
    det = Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=1, max_delay_ms=0, queue_size=3)
    hold = CompleterHold(det, images[0])
    futures = []
    submitter = threading.Thread(target=lambda: futures.extend(det.submit(images[i]) for i in range(12)))
    submitter.start()
    deadline = time.monotonic() + FOREVER
    while det.pipeline_stats().queue_depth < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    submitter.join(0.5)
    assert submitter.is_alive() and det.pipeline_stats().queue_depth == 3  # waiting for room, not failing
    hold.release.set()
    submitter.join(FOREVER)
    assert [identify(f.result(FOREVER), expected) for f in futures] == list(range(12))
    det.close()


def test_drop_oldest_cancels_the_oldest_waiting_and_counts(tiny_onnx, cells):
    images, expected = cells
    det = Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=1, max_delay_ms=0, queue_size=3,
                   queue_policy="drop_oldest")
    hold = CompleterHold(det, images[0])
    futures = [det.submit(images[i], source="cam") for i in range(20)]  # never blocks, never raises
    hold.release.set()
    dropped = [i for i, f in enumerate(futures) if f.cancelled()]
    kept = [i for i, f in enumerate(futures) if not f.cancelled()]
    assert len(kept) <= 3 + 3 and len(dropped) == 20 - len(kept)
    assert kept[-3:] == [17, 18, 19]  # the newest frames are never the ones dropped
    assert [identify(futures[i].result(FOREVER), expected) for i in kept] == kept
    with pytest.raises(CancelledError):
        futures[dropped[0]].result()
    assert det.pipeline_stats("cam").dropped == len(dropped) == det.pipeline_stats().dropped
    det.close()


def test_close_drains_then_submit_raises_and_no_thread_is_left(tiny_onnx, cells):
    images, expected = cells
    before = set(threading.enumerate())
    det = Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=4)
    futures = [det.submit(images[i]) for i in range(30)]
    assert new_threads(before)  # the pipeline runs
    det.close()
    assert all(f.done() and not f.cancelled() for f in futures)
    assert [identify(f.result(), expected) for f in futures] == list(range(30))
    assert new_threads(before) == []
    with pytest.raises(InferenceError, match="closed"):
        det.submit(images[0])
    with pytest.raises(InferenceError, match="closed"):
        det(images[0])
    det.close()  # idempotent


def test_close_cancel_pending(tiny_onnx, cells):
    images, expected = cells
    before = set(threading.enumerate())
    det = Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=1, max_delay_ms=0, queue_size=64)
    hold = CompleterHold(det, images[0])
    futures = [det.submit(images[i]) for i in range(30)]
    closer = threading.Thread(target=det.close, kwargs={"cancel_pending": True})
    closer.start()
    deadline = time.monotonic() + FOREVER
    while det.pipeline_stats().queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(InferenceError, match="closed"):
        det.submit(images[0])
    hold.release.set()
    closer.join(FOREVER)
    cancelled = [f for f in futures if f.cancelled()]
    finished = [i for i, f in enumerate(futures) if not f.cancelled()]
    assert len(finished) <= 3 and len(cancelled) == 30 - len(finished)  # only those out of the queue
    assert [identify(futures[i].result(), expected) for i in finished] == finished
    assert det.pipeline_stats().cancelled == len(cancelled)
    assert new_threads(before) == []


def test_context_manager_and_a_dropped_detector_end_their_threads(tiny_onnx, cells):
    images, expected = cells
    before = set(threading.enumerate())
    with Detector(tiny_onnx, backend="onnxruntime-cpu") as det:
        futures = [det.submit(images[i]) for i in range(10)]
    assert [identify(f.result(0), expected) for f in futures] == list(range(10))  # done when the block ends
    assert new_threads(before) == []

    det = Detector(tiny_onnx, backend="onnxruntime-cpu")
    assert identify(det.submit(images[5]).result(FOREVER), expected) == 5
    assert new_threads(before)
    del det, futures
    gc.collect()
    deadline = time.monotonic() + FOREVER
    while new_threads(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert new_threads(before) == []  # never closed, but collected: its threads ended


def test_pipeline_stats_per_source(tiny_onnx, cells):
    images, _ = cells
    with Detector(tiny_onnx, backend="onnxruntime-cpu", max_batch=4) as det:
        empty = det.pipeline_stats()
        assert (empty.count, empty.submitted, empty.throughput_fps) == (0, 0, 0.0)
        futures = [det.submit(images[i], source=f"cam{i % 2}") for i in range(20)]
        futures += [det.submit(None, source="cam1")]
        for f in futures:
            f.exception(FOREVER)
        s0, s1, total = det.pipeline_stats("cam0"), det.pipeline_stats("cam1"), det.pipeline_stats()
    assert (s0.count, s0.submitted, s0.completed, s0.failed) == (10, 10, 10, 0)
    assert (s1.count, s1.submitted, s1.completed, s1.failed) == (10, 11, 10, 1)
    assert (total.count, total.submitted, total.completed, total.failed) == (20, 21, 20, 1)
    assert total.sources == ("cam0", "cam1") and s0.sources == ()
    assert det.pipeline_stats("never").count == 0
    anomalous = sum(f.result().is_anomalous for f in futures[:20])
    assert total.anomalous == anomalous
    for s in (s0, s1, total):
        assert s.throughput_fps > 0 and s.latency.p50_ms <= s.latency.p90_ms <= s.latency.p99_ms <= s.latency.max_ms
        assert s.inference.p50_ms > 0 and s.preprocess.p50_ms > 0
    for f in futures[:20]:  # every stage is inside the end-to-end latency, and they add up to it
        sp = f.result().latency_split
        assert sp.queue_ms >= 0
        assert sp.queue_ms + sp.preprocess_ms + sp.inference_ms + sp.postprocess_ms == pytest.approx(f.result().latency_ms)
    d = total.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["sources"] == ["cam0", "cam1"] and set(d["latency"]) == {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"queue_policy": "drop_newest"}, "queue_policy"),
        ({"queue_size": 0}, "queue_size"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 9}, "batch_max 8"),
        ({"max_delay_ms": -1}, "max_delay_ms"),
        ({"pipeline_threads": 0}, "pipeline_threads"),
    ],
)
def test_bad_pipeline_options(tiny_onnx, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        Detector(tiny_onnx, backend="onnxruntime-cpu", **kwargs)
