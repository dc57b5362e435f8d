"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe):
no port, no driver binary, no network. Used to test the review page in a real browser.

``chromium_binary()`` installs the Debian package when it is missing (apt-get, as root) or
returns None with the reason; under CI=true a failed install is an error, not a skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

PACKAGE = "chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def install_chromium() -> tuple[str | None, str]:
    """(binary, "") or (None, why not); installs the Debian package when it is missing."""
    if path := find_chromium():
        return path, ""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None, f"headless Chromium is not installed: apt-get install -y {PACKAGE} (as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", PACKAGE]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            return None, f"installing the Debian package {PACKAGE} failed: {r.stderr.strip()[-300:]}"
    return find_chromium(), ""


def _high_fd(fd: int) -> int:
    """``fd`` duplicated above 10, so the child's dup2 onto 3 and 4 cannot clobber it."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Browser:
    """One headless Chromium, one page (tab) attached in flat mode; commands and events as dicts."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900):
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child_r, to_child_w = (_high_fd(f) for f in os.pipe())
        from_child_r, from_child_w = (_high_fd(f) for f in os.pipe())

        def wire():  # Chromium reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self._proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4, to_child_r, from_child_w), preexec_fn=wire,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._out = os.fdopen(to_child_w, "wb", buffering=0)
        self._in = os.fdopen(from_child_r, "rb", buffering=0)
        self._next = 0
        self._answers: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _read(self):
        buf = b""
        while chunk := self._in.read(1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._cond:
                for m in messages:
                    msg = json.loads(m)
                    if "id" in msg:
                        self._answers[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cond.notify_all()

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        with self._cond:
            self._next += 1
            mid = self._next
        msg = {"id": mid, "method": method, "params": params, **({"sessionId": session} if session else {})}
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._answers:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def call(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.send(method, session=self.session, **params)

    def open(self, url: str, ready: str = "document.body && document.body.dataset.ready === '1'", timeout: float = 30):
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate(ready):
                    return
            except RuntimeError:
                pass  # the new document is not there yet
            time.sleep(0.1)
        raise TimeoutError(f"{url} was not ready ({ready}) within {timeout} s; console: {self.console_errors()}")

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params = {"format": "png"}
        if full_page:
            h = self.evaluate("document.documentElement.scrollHeight")
            w = self.evaluate("document.documentElement.scrollWidth")
            params.update(clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1}, captureBeyondViewport=True)
        import base64

        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return Path(path)

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error":
                out.append(e["params"]["entry"]["text"])
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append(str(e["params"]["exceptionDetails"].get("exception", {}).get("description")))
            elif e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error":
                out.append(" ".join(str(a.get("value")) for a in e["params"]["args"]))
        return out

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._out.close()
        shutil.rmtree(self._profile, ignore_errors=True)


def chromium_or_skip() -> str:
    """The Chromium binary for a test; installs the package, else skips naming it (under
    CI=true a failed install fails the test instead)."""
    import pytest

    binary, why = install_chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(f"{why} (Debian package: {PACKAGE})")
    return binary
