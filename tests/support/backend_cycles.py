"""The native TensorRT backend's CUDA side through the GENUINE cuda-python wheel, on the CPU
stand-in driver (fake_libcuda.c), with a stand-in for TensorRT's engine (TensorRT cannot run
here). Run in a subprocess by tests/runtime/test_cuda_host.py; prints one JSON object.

What is exercised for real: ffrt.tensorrt.cudahost over cuda-bindings (context retain/push/pop/release,
cuMemAlloc/Free, cuMemHostAlloc/FreeHost, streams, async copies, error codes), and
TensorRTBackend's slots, run(), close() order and error handling. The stand-in engine reads the
"device" input buffer (host memory in the stand-in driver) and writes the red-channel graph's
outputs (map = R/255, score = max), so results can be checked exactly.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
import threading
import time

import numpy as np

H = W = 8
DRIVER = ctypes.CDLL("libcuda.so.1")
DRIVER.fake_cuda_log.restype = ctypes.c_char_p


def note(what: str) -> None:
    DRIVER.fake_cuda_note(what.encode())


def stats() -> list[int]:
    out = (ctypes.c_int * 5)()
    DRIVER.fake_cuda_stats(out)
    return list(out)


class FakeTRT:
    """The few module attributes the backend reads (names as in the real bindings)."""

    __version__ = "10.16.1.11"

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class DataType:
        UINT8, FLOAT = "UINT8", "FLOAT"

    @staticmethod
    def nptype(t):
        return {"UINT8": np.uint8, "FLOAT": np.float32}[t]

    fail_context_at = None  # the n-th create_execution_context returns None
    fail_execute = False
    execute_delay_s = 0.0
    logger = None  # what the backend passed to Runtime: TensorRT logs through it

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            FakeTRT.logger = logger

        def deserialize_cuda_engine(self, plan):
            return FakeEngine()

        def __del__(self):
            note("runtime_del")


class FakeEngine:
    names = ["image", "anomaly_map", "score"]
    shapes = {"image": (-1, H, W, 3), "anomaly_map": (-1, 1, H, W), "score": (-1,)}
    created = 0

    num_io_tensors = 3

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, n):
        return "INPUT" if n == "image" else "OUTPUT"

    def get_tensor_dtype(self, n):
        return "UINT8" if n == "image" else "FLOAT"

    def get_tensor_shape(self, n):
        return self.shapes[n]

    def get_tensor_profile_shape(self, n, profile):
        return [(1, H, W, 3), (2, H, W, 3), (4, H, W, 3)]

    def create_execution_context(self):
        FakeEngine.created += 1
        if FakeTRT.fail_context_at == FakeEngine.created:
            return None
        return FakeContext()

    def __del__(self):
        note("engine_del")


class FakeContext:
    def __init__(self):
        self.addr, self.n = {}, 0

    def set_tensor_address(self, name, ptr):
        self.addr[name] = int(ptr)
        return True

    def set_input_shape(self, name, shape):
        self.n = shape[0]
        return True

    def get_tensor_shape(self, name):
        return (self.n, 1, H, W) if name == "anomaly_map" else (self.n,)

    def execute_async_v3(self, stream):
        if FakeTRT.execute_delay_s:
            time.sleep(FakeTRT.execute_delay_s)
        if FakeTRT.fail_execute:
            FakeTRT.logger.log(FakeTRT.ILogger.Severity.ERROR, "stand-in: this execution failed")
            return False
        n = self.n
        img = np.ctypeslib.as_array((ctypes.c_uint8 * (n * H * W * 3)).from_address(self.addr["image"]))
        red = img.reshape(n, H, W, 3)[..., 0].astype(np.float32) / 255
        amap = np.ctypeslib.as_array((ctypes.c_float * (n * H * W)).from_address(self.addr["anomaly_map"]))
        amap[:] = red.reshape(-1)
        score = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr["score"]))
        score[:] = red.reshape(n, -1).max(1)
        return True

    def __del__(self):
        note("exec_ctx_del")


def backend(slots=2, slot_timeout_s=5.0):
    sys.path.insert(0, "tests/runtime")
    from conftest import make_meta
    from ffrt.tensorrt.runner import TensorRTBackend
    from ffrt.tensorrt.cudahost import host_api

    b = TensorRTBackend.__new__(TensorRTBackend)
    b._init_state(0, slot_timeout_s)
    meta = make_meta(height=H, width=W)
    b.plan_path, b._meta, b.info = "stand-in.engine", meta, None
    b._open(FakeTRT, host_api("cuda-python"), b"plan", "stand-in.engine", meta, slots)
    return b


def batch(n, red):
    x = np.zeros((n, H, W, 3), np.uint8)
    x[..., 0] = red
    return x


def main() -> int:
    from ffrt.tensorrt.cudahost import CudaError
    from ffrt.errors import BackendUnavailableError, InferenceError

    out: dict = {}
    # 100 create / run / close cycles: nothing may stay allocated.
    scores = []
    for i in range(100):
        b = backend()
        maps, s = b.run(batch(1 + i % 4, i))
        scores.append(float(s[0]))
        assert maps.shape == (1 + i % 4, 1, H, W)
        b.close()
    out["cycles_stats"] = stats()
    out["scores_ok"] = scores == [np.float32(i / 255) for i in range(100)]

    # Order of one close().
    b = backend(slots=2)
    DRIVER.fake_cuda_clear_log()
    b.close()
    b.close()  # idempotent
    out["close_log"] = DRIVER.fake_cuda_log().decode().strip(",").split(",")
    try:
        b.run(batch(1, 1))
        out["run_after_close"] = "no error"
    except InferenceError as e:
        out["run_after_close"] = str(e)

    # push() fails once: the slot must come back (the next call neither hangs nor fails).
    b = backend(slots=1, slot_timeout_s=3.0)
    real_push = b._cuda.push
    calls = {"n": 0}

    def flaky_push():
        calls["n"] += 1
        if calls["n"] == 1:
            raise CudaError("cuCtxPushCurrent failed: CUDA_ERROR_INVALID_CONTEXT (stand-in)")
        real_push()

    b._cuda.push = flaky_push
    try:
        b.run(batch(1, 10))
        out["push_failure"] = "no error"
    except InferenceError as e:
        out["push_failure"] = str(e)
    t0 = time.perf_counter()
    out["after_push_failure"] = float(b.run(batch(1, 51))[1][0])
    out["after_push_failure_s"] = time.perf_counter() - t0
    # execute fails: InferenceError, slot back, context popped.
    FakeTRT.fail_execute = True
    try:
        b.run(batch(1, 10))
        out["execute_failure"] = "no error"
    except InferenceError as e:
        out["execute_failure"] = str(e)
    # Another thread's TensorRT message (another build, another backend) is not this call's reason.
    other = threading.Thread(target=lambda: FakeTRT.logger.log(FakeTRT.ILogger.Severity.WARNING,
                                                               "stand-in: another thread's warning"))
    other.start()
    other.join()
    try:
        b.run(batch(1, 10))
        out["execute_failure_quotes"] = "no error"
    except InferenceError as e:
        out["execute_failure_quotes"] = str(e)
    FakeTRT.fail_execute = False
    out["after_execute_failure"] = float(b.run(batch(2, 102))[1][1])
    out["depth_after_calls"] = stats()[4]
    # Several threads on two slots.
    b2 = backend(slots=2)
    errors = []

    def worker(k):
        try:
            for j in range(20):
                got = float(b2.run(batch(1, (k * 20 + j) % 256))[1][0])
                if got != np.float32(((k * 20 + j) % 256) / 255):
                    errors.append(f"thread {k} call {j}: {got}")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["thread_errors"] = errors
    b.close()
    b2.close()

    # A call waiting for a slot while close() begins ends at once, not at the slot timeout.
    b3 = backend(slots=1, slot_timeout_s=5.0)
    FakeTRT.execute_delay_s = 2.0
    holder = threading.Thread(target=lambda: b3.run(batch(1, 1)))
    holder.start()
    time.sleep(0.3)
    waited: dict = {}

    def waiter():
        try:
            b3.run(batch(1, 2))
            waited["error"] = "no error"
        except InferenceError as e:
            waited["error"] = str(e)
        waited["end"] = time.perf_counter()

    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.3)
    closed_at = time.perf_counter()
    b3.close(timeout_s=4.0)  # waits for the holder, then frees everything
    w.join()
    holder.join()
    FakeTRT.execute_delay_s = 0.0
    out["wait_during_close"] = waited["error"]
    out["wait_during_close_s"] = waited["end"] - closed_at

    # A slot that cannot be created (second execution context None): nothing leaks.
    FakeEngine.created = 0
    FakeTRT.fail_context_at = 2
    try:
        backend(slots=2)
        out["start_failure"] = "no error"
    except BackendUnavailableError as e:
        out["start_failure"] = str(e)
    FakeTRT.fail_context_at = None

    # Dropped without close(): __del__ frees.
    b = backend()
    del b
    gc.collect()
    out["final_stats"] = stats()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
