"""A real headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: the
browser reads commands on fd 3 and writes replies and events on fd 4, each a JSON message ending in a NUL
byte). Standard library only: no websocket client, no Playwright.

`check_page(html_file, screenshot)` loads a file URL with the network emulated offline and every non-file
request counted, and returns what a test asserts on: console errors, exceptions, failed and non-local
requests, every <img>'s natural width, the ids of the <section>s and the page's size; it saves a PNG
screenshot of the full page. Also a script: `python tests/browser.py PAGE.html SHOT.png`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _high_pipe() -> tuple[int, int]:
    """A pipe whose two ends are above fd 10, so moving them to fds 3 and 4 in the child cannot clash."""
    import fcntl

    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class Browser:
    """One headless Chromium process; `send(method, params, session)` waits for that command's reply while
    collecting every event into `events`."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="embedflow-chromium-")
        to_browser_r, self._to_browser = _high_pipe()
        self._from_browser, from_browser_w = _high_pipe()
        args = [executable, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
                # no DNS and no proxy: a request that slipped past the offline emulation still fails
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                f"--user-data-dir={self.profile}", "about:blank"]
        # fd 3: what the browser reads; fd 4: what it writes
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, pass_fds=(3, 4),
                                     preexec_fn=lambda: (os.dup2(to_browser_r, 3), os.dup2(from_browser_w, 4)))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                    raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()}): {err[-2000:]}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str | None = None) -> dict:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close(self) -> None:
        try:
            os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)


PAGE_FACTS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete,
                                                 naturalWidth: i.naturalWidth})),
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  tops: Array.from(document.querySelectorAll('section')).map(s => Math.round(s.getBoundingClientRect().top + scrollY)),
  svgs: document.querySelectorAll('svg').length,
  title: document.title,
  height: document.documentElement.scrollHeight,
  text: document.body.innerText.length,
  background: getComputedStyle(document.body).backgroundColor
})"""


def check_page(html_file: str | os.PathLike, screenshot: str | os.PathLike | None = None, *,
               executable: str | None = None, width: int = 1280, color_scheme: str = "light") -> dict:
    """Open `html_file` (a file URL) offline in headless Chromium, the page told the system prefers
    `color_scheme` (light or dark); returns {console_errors, exceptions, failed_requests, requests (every
    URL asked for), images, sections, svgs, title, height, background (the body's computed colour)}."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    url = Path(html_file).resolve().as_uri()
    browser = Browser(executable)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", {}, session)
        browser.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                          "uploadThroughput": -1}, session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session)
        browser.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                  "value": color_scheme}]}, session)
        browser.send("Page.navigate", {"url": url}, session)
        browser.wait_for("Page.loadEventFired", session)
        facts = json.loads(browser.send("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True},
                                        session)["result"]["value"])
        if screenshot is not None:
            height = min(int(facts["height"]), 16000)
            browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                "deviceScaleFactor": 1, "mobile": False}, session)
            shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        mine = [e for e in browser.events if e.get("sessionId") == session]
        console_errors = [e["params"] for e in mine if e.get("method") == "Runtime.consoleAPICalled"
                          and e["params"].get("type") in ("error", "assert")]
        console_errors += [e["params"]["entry"] for e in mine if e.get("method") == "Log.entryAdded"
                           and e["params"]["entry"].get("level") == "error"]
        exceptions = [e["params"] for e in mine if e.get("method") == "Runtime.exceptionThrown"]
        failed = [e["params"] for e in mine if e.get("method") == "Network.loadingFailed"]
        requests = [e["params"]["request"]["url"] for e in mine if e.get("method") == "Network.requestWillBeSent"]
        return {**facts, "console_errors": console_errors, "exceptions": exceptions, "failed_requests": failed,
                "requests": requests, "url": url}
    finally:
        browser.close()


if __name__ == "__main__":
    result = check_page(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    result["requests"] = [url[:60] for url in result["requests"][:5]] + [f"... {len(result['requests'])} in all"]
    print(json.dumps({k: v for k, v in result.items() if k != "images"}, indent=2)[:4000])
    print(f"{len(result['images'])} images, {sum(i['naturalWidth'] > 0 for i in result['images'])} decoded")
