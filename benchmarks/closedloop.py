"""Closed-loop clients for the load benchmarks (submit_vs_call.py, triton_load.py): each client
thread sends one real frame, waits for the answer, sends the next, for a fixed time, as a line
camera whose trigger waits for the reject gate does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import numpy as np


def elpv_cells(count: int) -> list[np.ndarray]:
    """The first ``count`` ELPV mono test cells, decoded once (300x300 BGR; the demo extra)."""
    from ffcore.data import elpv

    split = elpv("mono")
    return [cv2.imread(str(s.path), cv2.IMREAD_COLOR) for s in split.test[:count]]


def closed_loop(clients: int, seconds: float, images: list[np.ndarray],
                open_client: Callable[[int], tuple[Callable, Callable, Callable]]) -> dict:
    """Run ``clients`` threads for ``seconds``; client k sends images k, k+clients, ...

    ``open_client(k)`` -> (prepare, send, close): ``prepare(image)`` runs untimed (e.g. building
    a request), ``send(prepared)`` is timed, ``close()`` runs once at the end. A failed send is
    counted and the client goes on. All clients start together (a barrier) and stop at the
    same deadline. Returns {"requests", "errors", "first_error", "wall_s", "latencies_s"}."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(k: int) -> None:
        prepare, send, close = open_client(k)
        mine, bad, i = [], [], k
        start.wait()
        while time.perf_counter() < stop_at[0]:
            item = prepare(images[i % len(images)])
            i += clients
            t0 = time.perf_counter()
            try:
                send(item)
                mine.append(time.perf_counter() - t0)
            except Exception as e:  # counted and reported, never swallowed silently
                bad.append(e)
        close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": wall, "latencies_s": latencies}
