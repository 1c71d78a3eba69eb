"""The dashboard in a real headless Chromium (tests/cdp.py), served by uvicorn in a thread with a
token, while a paper replay (``bot run --mode paper --feed replay``) is still writing its run.

The page must pick that running run by itself, draw its equity, fill the positions and decisions
tables (each decision with its why), grow as the run goes on (it polls the API), show another
run's kill-switch alert when picked, raise no JavaScript error and fetch nothing but its server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.api import create_app
from storage import queries as q
from storage.db import open_database
from tests import cdp
from tests.serve_helpers import BTC_1H, PROBE, TOKEN, copy_journal, journal, serving
from tests.test_report_support import png_size

ROOT = Path(__file__).resolve().parents[1]

@dataclass(slots=True)
class Seen:
    first: dict[str, Any]
    later: dict[str, Any]
    picked: dict[str, Any]
    errors: list[str]
    requests: list[str]
    shots: list[Path]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(journal URL, id of a paper replay still running in it): the shared runs plus one live run."""
    j = journal()
    url = copy_journal(j, tmp_path_factory.mktemp("serve_browser"))
    # 0.25 s a bar: some 100 s for the 400 bars, longer than the test needs.
    proc = subprocess.Popen([sys.executable, "-m", "bot", "run", "--mode", "paper", "--feed", "replay",
                             "--data", str(BTC_1H), "--from", "2024-02-20", "--to", "2024-03-08", "--speed", "14400",
                             "--db", url, "--set", "strategy.name=sma", "--set", "logging.level=warning"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        db = open_database(url)
        deadline = time.monotonic() + 180
        while True:
            run = q.resolve_run(db, "latest")
            if run["id"] not in j.ids.values() and run["status"] == "running" and run["bars"] >= 40:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the paper replay did not get going"
            time.sleep(0.5)
        yield url, run["id"]
    finally:
        proc.send_signal(signal.SIGTERM)  # ends the run `stopped`, as Ctrl-C would
        proc.communicate(timeout=60)


async def _look(port: int, base: str, kill_run: str, shots: Path) -> Seen:
    async with cdp.page_session(port) as page:
        await cdp.navigate(page, f"{base}/?token={TOKEN}&refresh=1")
        first = await cdp.poll(page, PROBE, lambda p: p["state"] == "ready" and p["traces"] >= 1
                               and p["decisions"] >= 1 and p["positions"] >= 1, timeout=120)
        later = await cdp.poll(page, PROBE, lambda p: p["points"] > first["points"], timeout=120)
        # The page is 1400 px wide (the window); its height is what it needs.
        live_shot = await cdp.screenshot(page, shots / "dashboard_live.png", later["width"], later["height"])
        await cdp.evaluate(page, f"""(() => {{ const s = document.getElementById('run-picker');
            s.value = {kill_run!r}; s.dispatchEvent(new Event('change')); }})()""")
        picked = await cdp.poll(page, PROBE, lambda p: p["run"] == kill_run and len(p["alerts"]) >= 1
                                and p["status"] == "completed", timeout=120)
        kill_shot = await cdp.screenshot(page, shots / "dashboard_kill.png", picked["width"], picked["height"])
        return Seen(first, later, picked, cdp.errors(page.events), cdp.requests(page.events), [live_shot, kill_shot])


@pytest.fixture(scope="module")
def seen(live: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Seen:
    url, _ = live
    shots = tmp_path_factory.mktemp("serve_shots")
    with serving(create_app(url, TOKEN)) as base, cdp.chromium() as port:
        result = asyncio.run(_look(port, base, journal().ids["kill"], shots))
    keep = os.environ.get("BOT_SERVE_SHOTS")  # to look at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for p in result.shots:
            shutil.copy(p, Path(keep) / p.name)
    return result


def test_dashboard_follows_the_running_run(seen: Seen, live: tuple[str, str]) -> None:
    first = seen.first
    assert first["run"] == live[1] and first["status"] == "running"
    assert first["options"] == 1 + 5  # "follow" and the journal's five runs
    assert first["plotly"], "plotly.js did not load from /static"
    assert first["traces"] >= 1 and first["points"] >= 40
    assert first["positions"] == 1 and first["decisions"] >= 1


def test_decisions_show_their_why(seen: Seen) -> None:
    why = [w for w in seen.first["why"] if w != "–"]
    assert why and all("fast SMA" in w and "slow SMA" in w for w in why if "warm-up" not in w)


def test_dashboard_refreshes_itself(seen: Seen) -> None:
    assert seen.later["points"] > seen.first["points"]
    assert seen.later["refreshes"] > seen.first["refreshes"] >= 1


def test_picked_run_shows_its_kill_switch_alert(seen: Seen) -> None:
    assert any("kill switch max_drawdown" in a for a in seen.picked["alerts"])


def test_no_javascript_error_and_nothing_from_elsewhere(seen: Seen) -> None:
    assert seen.errors == [] and seen.first["errors"] == [] and seen.picked["errors"] == []
    base = seen.requests[0].split("/?")[0]
    assert all(u.startswith((base + "/", "data:", "blob:")) for u in seen.requests), seen.requests


def test_screenshots(seen: Seen) -> None:
    for shot in seen.shots:
        w, h = png_size(shot)
        assert w == 1400 and h > 700 and shot.stat().st_size > 30_000
