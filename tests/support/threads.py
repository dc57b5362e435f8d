"""Run one function from several threads at once and collect what they raised."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(fn: Callable[[int], None], count: int) -> list[BaseException]:
    """``fn(k)`` for k in 0..count-1, each in its own thread, all started before any is joined;
    returns the exceptions they raised (empty: none)."""
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            fn(k)
        except Exception as e:  # noqa: BLE001  (reported to the test, which asserts there are none)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
