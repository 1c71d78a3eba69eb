"""Headless Chromium driven over the DevTools protocol (no tests here): the report and dashboard
browser tests share it.

:func:`chromium` starts one fresh browser (fresh profile, no network features) and yields its
DevTools port; :func:`page_session` attaches to its page. On that page, :func:`navigate` loads a
URL, :func:`poll` evaluates a probe until it says ready, :func:`screenshot` writes a PNG, and
:func:`errors` / :func:`requests` read JavaScript exceptions, console errors and every request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000",
                  "--remote-debugging-port=0"]


def chromium_binary() -> str:
    exe = os.environ.get("BOT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("headless Chromium not found: apt-get install -y chromium (or set BOT_CHROMIUM)")
    return exe


@contextlib.contextmanager
def chromium() -> Iterator[int]:
    """One fresh headless Chromium for the block; yields its DevTools port."""
    exe = chromium_binary()
    profile = Path(tempfile.mkdtemp(prefix="chromium_"))
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield int(port_file.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


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


@contextlib.asynccontextmanager
async def page_session(port: int) -> AsyncIterator[CDP]:
    """The browser's page, with the Page, Runtime, Log and Network events switched on."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = CDP(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            yield cdp


async def navigate(cdp: CDP, url: str) -> None:
    """Open ``url`` and wait for its load event (the page's earlier events are dropped)."""
    cdp.events.clear()
    await cdp.call("Page.navigate", {"url": url})
    # Generous limits: a loaded shared CI machine can be many times slower than a laptop.
    await cdp.wait_event("Page.loadEventFired", timeout=180)


async def evaluate(cdp: CDP, expression: str) -> Any:
    res = await cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
    return res["result"].get("value")


async def poll(cdp: CDP, probe: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
    """Evaluate ``probe`` (an expression returning a JSON string) until ``ready`` says so or time
    runs out; the last answer either way."""
    answer: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while True:
        answer = json.loads(await evaluate(cdp, probe))
        if ready(answer) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.2)


async def screenshot(cdp: CDP, path: Path, width: int, height: int) -> Path:
    """A PNG of the page's top ``width`` x ``height`` pixels (beyond the window too)."""
    shot = await cdp.call("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}, timeout=180)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def errors(events: list[dict[str, Any]]) -> list[str]:
    """JavaScript exceptions, console errors and error log entries among ``events``."""
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


def requests(events: list[dict[str, Any]]) -> list[str]:
    """Every URL the page asked for."""
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
