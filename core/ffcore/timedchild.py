"""A runtime timed in a child process of its own, spoken to over pipes: both ends.

Why: a figure meant to describe one runtime must not be measured next to another runtime's
worker threads in the same process (ffcore.timing: IsolationCheck). ``python -m
fftrain.eager`` (PyTorch eager) and ``python -m ffeval.modelonly`` (an ffrt backend) serve
this protocol with :func:`serve`; :class:`TimedChild` is the parent's end.

The child writes one JSON line when it is ready: ``{"ok": true, ...hello}`` or
``{"ok": false, "error": "..."}``. Then, one request per line on stdin:

    load PATH   read a uint8 NHWC batch from the .npy file PATH      -> {"ok": true}
    run         one timed call on the loaded batch    -> {"ok": true, "ms": 12.3, "cpu_ms": 24.1}
    quit        (or end of input)

The child times each call itself (``time.perf_counter``), so the pipe's round trip is not in
the figure; ``cpu_ms`` is the CPU time all of the child's threads spent during the call. Between
requests the child is idle, and so is the parent while it waits for a reply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


class ChildError(RuntimeError):
    """The child process could not start or answer; one line saying why."""


def serve(hello: dict, timed_call: Callable[[np.ndarray], float], stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The child's loop: ``hello`` first, then ``load`` / ``run`` / ``quit`` requests;
    ``timed_call(batch)`` returns the milliseconds of one call."""

    def say(obj: dict) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    say({"ok": True, **hello})
    batch = None
    for line in stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "load":
                batch = np.load(arg)
                say({"ok": True})
            elif cmd == "run":
                if batch is None:
                    raise ValueError("run before load")
                cpu0 = time.process_time()
                ms = timed_call(batch)
                say({"ok": True, "ms": ms, "cpu_ms": (time.process_time() - cpu0) * 1e3})
            elif cmd == "quit":
                break
            else:
                raise ValueError(f"unknown request {cmd!r}")
        except Exception as e:  # noqa: BLE001 - reported to the parent as one line
            say({"ok": False, "error": f"{type(e).__name__}: {e}"})
    return 0


def refuse(error: str, stdout=sys.stdout) -> int:
    """What a child that cannot start says instead of its hello."""
    stdout.write(json.dumps({"ok": False, "error": error}) + "\n")
    stdout.flush()
    return 1


class TimedChild:
    """The parent's end: starts ``command`` (``python -m ...``) and waits for its hello (``hello``).
    ``what`` names it in errors, raised as ``error`` (a caller's own class, or :class:`ChildError`);
    ``hint(last stderr line)`` may add advice to them."""

    def __init__(self, command: list[str], what: str, hint: Callable[[str], str] = lambda why: "",
                 error: type[Exception] = ChildError) -> None:
        self.what, self._hint, self._error = what, hint, error
        self.last_cpu_ms = float("nan")
        self._tmp = tempfile.TemporaryDirectory(prefix="ffcore-timedchild-")
        self._stderr = open(Path(self._tmp.name) / "stderr.txt", "w+b")  # a file: a chatty child never blocks
        self._proc = subprocess.Popen([sys.executable, *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, env=os.environ.copy())
        try:
            self.hello = self._reply()
        except self._error:
            self.close()
            raise

    def _reply(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=30)
            self._stderr.seek(0)
            tail = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
            why = tail[-1].strip() if tail else f"exit code {self._proc.returncode}"
            raise self._error(f"{self.what} ended: {why}{self._hint(why)}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise self._error(f"{self.what}: {reply.get('error', 'failed')}")
        return reply

    def _ask(self, request: str) -> dict:
        self._proc.stdin.write(request + "\n")
        self._proc.stdin.flush()
        return self._reply()

    def load(self, batch: np.ndarray) -> None:
        path = Path(self._tmp.name) / "batch.npy"
        np.save(path, np.ascontiguousarray(batch))
        self._ask(f"load {path}")

    def run(self) -> float:
        """Milliseconds of one call on the loaded batch, as the child timed it (its CPU time:
        :attr:`last_cpu_ms`)."""
        reply = self._ask("run")
        self.last_cpu_ms = float(reply.get("cpu_ms", "nan"))
        return float(reply["ms"])

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.wait()
        self._stderr.close()
        self._tmp.cleanup()

    def __enter__(self) -> "TimedChild":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
