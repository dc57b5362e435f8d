"""Progress display for every tool: a bar on a terminal, one line per stage elsewhere.

tqdm redraws its bar by rewriting the line after a carriage return; written to a file or a
pipe, every redraw becomes a line of its own (``make demo > log`` collected thousands). So
the bar is drawn only when its stream (stderr) is a terminal. Otherwise a stage prints one
line when it ends (what, how many, how long), or nothing where the caller already logs a
line per step (``summary=False``: the trainer's epochs).

torch-free (tqdm only), so ffcalib and ffexport use it too; nothing else imports tqdm.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any


def is_terminal(stream: IO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(
    iterable: Iterable | None = None,
    desc: str = "",
    unit: str = "it",
    *,
    enabled: bool = True,
    total: int | None = None,
    summary: bool = True,
    stream: IO | None = None,
    every_s: float | None = None,
):
    """Wrap ``iterable`` (or, without one, a manual ``update(n)`` / ``close()`` counter).

    enabled=False shows nothing. The returned object supports iteration, ``update``,
    ``set_postfix`` and ``close`` whichever form it takes. ``every_s``: off a terminal,
    also print a line (count, rate, postfix) at most every ``every_s`` seconds while the
    stage goes, for stages that run for hours (``ffrt run`` on a line).
    """
    stream = stream if stream is not None else sys.stderr
    if enabled and is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, leave=False, file=stream)
    return StageLine(iterable, desc, unit, stream if enabled and summary else None, every_s)


class StageLine:
    """The non-terminal form: counts, and prints ``desc: N unit in S s`` once at the end."""

    def __init__(
        self, iterable: Iterable | None, desc: str, unit: str, stream: IO | None, every_s: float | None = None
    ) -> None:
        self._iterable = iterable
        self._desc = desc
        self._unit = unit
        self._stream = stream
        self._count = 0
        self._postfix = ""
        self._t0 = time.perf_counter()
        self._every_s = every_s
        self._last_line = self._t0
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self._iterable if self._iterable is not None else ():
                yield item
                self._count += 1
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more (``update(0)`` only gives a due periodic line its chance)."""
        self._count += n
        if self._every_s is not None and self._stream is not None and not self._closed:
            now = time.perf_counter()
            if now - self._last_line >= self._every_s:
                self._last_line = now
                rate = self._count / (now - self._t0) if now > self._t0 else 0.0
                extra = f", {self._postfix}" if self._postfix else ""
                label = f"{self._desc}: " if self._desc else ""
                print(f"{label}{self._count} {self._unit} so far, {rate:.1f} {self._unit}/s{extra}", file=self._stream, flush=True)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is None:
            return
        seconds = time.perf_counter() - self._t0
        extra = f" ({self._postfix})" if self._postfix else ""
        label = f"{self._desc}: " if self._desc else ""
        print(f"{label}{self._count} {self._unit} in {seconds:.1f} s{extra}", file=self._stream, flush=True)
