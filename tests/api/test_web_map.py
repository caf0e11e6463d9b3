"""The web map in a real browser (Debian's Chromium, headless, driven over the DevTools protocol)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import pytest

from api.web import install_assets
from geodata.settings import Settings
from tests.api.test_aggregates import BIG
from tests.api.test_aggregates import cells_keys as _cells_keys_fixture

cells_keys = _cells_keys_fixture


class _Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4, NUL-separated JSON)."""

    def __init__(self) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.fail("chromium is missing: install Debian's chromium (scripts/setup.sh does).")
        self.profile = tempfile.TemporaryDirectory(prefix="rutas-chromium-", ignore_cleanup_errors=True)
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()

        def fds() -> None:
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.process = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                f"--user-data-dir={self.profile.name}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._next = 0

    def call(self, method: str, session: str | None = None, **params: object) -> dict[str, object]:
        self._next += 1
        message: dict[str, object] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                assert "error" not in answer, answer
                result: dict[str, object] = answer["result"]
                return result

    def page_state(self, url: str, timeout_s: float = 60.0) -> dict[str, str]:
        """Open ``url`` and wait until the map reports features or an error; the body's data attributes."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        session = str(self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
        deadline = time.monotonic() + timeout_s
        state: dict[str, str] = {}
        while time.monotonic() < deadline:
            result = self.call(
                "Runtime.evaluate",
                session,
                returnByValue=True,
                expression="JSON.stringify(document.body ? document.body.dataset : {})",
            )
            state = json.loads(result["result"]["value"])  # type: ignore[index]
            if "features" in state or "error" in state:
                return state
            time.sleep(0.2)
        return state

    def document(self, url: str, headers: dict[str, str], timeout_s: float = 60.0) -> dict[str, Any]:
        """Open ``url`` sending ``headers`` (as a browser navigates: its own Accept) and read the page:
        its language, title, first heading, link targets, table rows and text."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = str(self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
        self.call("Network.enable", session)
        self.call("Network.setExtraHTTPHeaders", session, headers=headers)
        self.call("Page.navigate", session, url=url)
        expression = (
            "document.readyState === 'complete' && location.href !== 'about:blank' ? JSON.stringify({"
            "lang: document.documentElement.lang, title: document.title, "
            "h1: (document.querySelector('h1') || {}).textContent || '', "
            "links: Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href')), "
            "rows: document.querySelectorAll('tbody tr').length, "
            "ids: Array.from(document.querySelectorAll('tbody tr td:first-child'), td => td.textContent), "
            "text: document.body ? document.body.innerText : ''}) : ''"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.call("Runtime.evaluate", session, returnByValue=True, expression=expression)
            value = result["result"]["value"]  # type: ignore[index]
            if value:
                self.call("Target.closeTarget", targetId=target)
                page: dict[str, Any] = json.loads(str(value))
                return page
            time.sleep(0.1)
        raise AssertionError(f"{url} did not load within {timeout_s} s")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._write)
        os.close(self._read)
        self.profile.cleanup()


def test_web_map_draws_the_scoped_tiles_in_a_real_browser(
    live_server: str, cells_keys: dict[str, str], settings: Settings
) -> None:
    install_assets(settings)
    centre = f"{BIG[0]},{BIG[1]}"
    browser = _Chromium()
    try:
        cells = browser.page_state(f"{live_server}/map#key={cells_keys['analyst']}&center={centre}&zoom=4")
        assert int(cells.get("features", "0")) > 0 and cells.get("points") == "0", cells
        points = browser.page_state(f"{live_server}/map#key={cells_keys['ven']}&center={centre}&zoom=12")
        assert int(points.get("points", "0")) > 0, points
        # The analyst at the same zoom gets no points at all: victims outside its scope stay cells.
        hidden = browser.page_state(f"{live_server}/map#key={cells_keys['analyst']}&center={centre}&zoom=12")
        assert hidden.get("points") == "0", hidden
        refused = browser.page_state(f"{live_server}/map#key=rutas_000000000000_notARealSecretButLongEnough")
        assert refused.get("error") == "401", refused
    finally:
        browser.close()
