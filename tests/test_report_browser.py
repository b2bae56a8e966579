"""The HTML report in a real headless browser (Debian's chromium, see scripts/install_chromium.sh).

The browser is driven through the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (JSON
messages ended by a NUL byte on file descriptors 3 and 4), so only the standard library is needed:
the test loads the report by ``file://``, collects console errors, uncaught exceptions and failed
loads, checks that every image decoded (``naturalWidth > 0``) and saves a full-page screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (run scripts/install_chromium.sh)"
)
IMAGE_CHECK = """JSON.stringify(Array.from(document.images).map(
    img => ({alt: img.alt, complete: img.complete, width: img.naturalWidth})))"""


class Browser:
    """A headless chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4; move our ends clear of 3 and 4 first.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)

        def wire() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "--window-size=1280,900",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            [CHROMIUM, *flags], preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for fd in high:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _message(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._read, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._message())

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        return result["result"]["value"]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (e.g. a resource that failed)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(
                    "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                found.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append("log: " + params["entry"]["text"])
        return found

    def screenshot(self, path: Path) -> None:
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            session=True,
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):  # it may close before replying
            self.call("Browser.close")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._read)
        os.close(self._write)


@pytest.fixture
def browser(tmp_path):
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


@needs_chromium
def test_the_checker_sees_broken_images_and_console_errors(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        '<html><body><img src="missing.png" alt="gone"><script>console.error("boom")</script></body></html>'
    )
    browser.open(page.as_uri())
    images = json.loads(browser.evaluate(IMAGE_CHECK))
    assert images == [{"alt": "gone", "complete": True, "width": 0}]
    assert any("boom" in e for e in browser.errors())


@needs_chromium
@pytest.mark.slow  # uses the shared runs of report_runs.py (about a minute, once per session)
def test_html_report_loads_cleanly_in_chromium(browser, tmp_path):
    from report_runs import cli_runs

    report = cli_runs()[0] / "report" / "report.html"
    browser.open(report.as_uri())
    assert browser.errors() == []
    images = json.loads(browser.evaluate(IMAGE_CHECK))
    assert len(images) == 8
    assert all(img["complete"] and img["width"] > 100 for img in images), images
    assert browser.evaluate("document.title").startswith("cltune report")
    assert browser.evaluate("document.querySelectorAll('td.best').length") > 0
    shot = Path(os.environ.get("CLTUNE_SCREENSHOT_DIR", tmp_path)) / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
