"""Headless Chromium driven over the DevTools protocol, for the report tests (no tests here).

One fresh browser (fresh profile, no network features) opens each report, waits until plotly has
drawn every figure the page's manifest lists, collects JavaScript exceptions, console errors and
every request the page makes, and takes full-page screenshots where asked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# -- headless Chromium over the DevTools protocol ------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000",
                  "--remote-debugging-port=0"]

#: Run in the page once it has loaded: which sections exist and which figures plotly drew.
PROBE = r"""
(() => {
  const m = JSON.parse(document.getElementById('report-manifest').textContent);
  const figs = m.figures.map(id => {
    const el = document.getElementById(id);
    const drawn = el ? el.querySelectorAll('.main-svg g.trace, .heatmaplayer image, .main-svg .hm').length : 0;
    return {id, rendered: !!(el && el._fullLayout && el.querySelector('.main-svg')), drawn,
            traces: el && el.data ? el.data.length : 0};
  });
  const sections = Array.from(document.querySelectorAll('section[data-section]')).map(s => s.id);
  return JSON.stringify({manifest: m, figs, sections,
    plotly: (typeof Plotly !== 'undefined') ? Plotly.version : null,
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight});
})()
"""


@dataclass(slots=True)
class PageResult:
    probe: dict[str, Any]
    errors: list[str]
    requests: list[str]
    screenshot: Path | None


def chromium_binary() -> str:
    exe = os.environ.get("BOT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("headless Chromium not found: apt-get install -y chromium (or set BOT_CHROMIUM)")
    return exe


class CDP:
    """A minimal DevTools-protocol client: commands by id, events collected as they arrive."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        await self.ws.send_json({"id": mid, "method": method, "params": params or {}})
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    async def wait_event(self, name: str, timeout: float = 180) -> dict[str, Any]:
        for e in self.events:
            if e["method"] == name:
                return e
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == name:
                    return msg


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append("log: " + str(p["entry"].get("text")))
    return out


async def _check(port: int, pages: dict[str, Path], shots: Path, shoot: set[str]) -> dict[str, PageResult]:
    results: dict[str, PageResult] = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = CDP(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            stage = shots / "report.html"
            for key, html in pages.items():
                # Each report is opened from one fixed URL: Chromium then reuses its compiled code for
                # the (identical) inline plotly.js, which makes later pages several times faster.
                shutil.copyfile(html, stage)
                cdp.events.clear()
                await cdp.call("Page.navigate", {"url": stage.resolve().as_uri()})
                # Generous limits: a loaded shared CI machine can be many times slower than a laptop.
                await cdp.wait_event("Page.loadEventFired", timeout=180)
                probe: dict[str, Any] = {}
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:  # plotly draws right after load; wait until all did
                    res = await cdp.call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True})
                    probe = json.loads(res["result"]["value"])
                    if all(f["rendered"] for f in probe["figs"]):
                        break
                    await asyncio.sleep(0.2)
                path = None
                if key in shoot:  # full page; costly in software rendering, so only where asked
                    shot = await cdp.call("Page.captureScreenshot", {
                        "format": "png", "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": probe["width"], "height": min(probe["height"], 12000),
                                 "scale": 1}}, timeout=180)
                    path = shots / f"screenshot_{key}.png"
                    path.write_bytes(base64.b64decode(shot["data"]))
                requests = [e["params"]["request"]["url"] for e in cdp.events
                            if e["method"] == "Network.requestWillBeSent"]
                results[key] = PageResult(probe, _errors(cdp.events), requests, path)
    return results


def check_pages(pages: dict[str, Path], shots: Path, shoot: set[str]) -> dict[str, PageResult]:
    """Open each report in one fresh headless Chromium; probe, collect JS errors, screenshot ``shoot``."""
    exe = chromium_binary()
    profile = Path(tempfile.mkdtemp(prefix="report_chromium_"))
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(_check(port, pages, shots, shoot))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
