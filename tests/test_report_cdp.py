"""The report's browser check (no tests here), on the shared Chromium driver of tests/cdp.py.

One fresh browser opens each report, waits until plotly has drawn every figure the page's
manifest lists, collects JavaScript exceptions, console errors and every request the page makes,
and takes full-page screenshots where asked.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import cdp

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


async def _check(port: int, pages: dict[str, Path], shots: Path, shoot: set[str]) -> dict[str, PageResult]:
    results: dict[str, PageResult] = {}
    async with cdp.page_session(port) as page:
        stage = shots / "report.html"
        for key, html in pages.items():
            # Each report is opened from one fixed URL: Chromium then reuses its compiled code for
            # the (identical) inline plotly.js, which makes later pages several times faster.
            shutil.copyfile(html, stage)
            await cdp.navigate(page, stage.resolve().as_uri())
            # plotly draws right after load; wait until all did
            probe = await cdp.poll(page, PROBE, lambda p: all(f["rendered"] for f in p["figs"]))
            path = None
            if key in shoot:  # full page; costly in software rendering, so only where asked
                path = await cdp.screenshot(page, shots / f"screenshot_{key}.png", probe["width"],
                                            min(probe["height"], 12000))
            results[key] = PageResult(probe, cdp.errors(page.events), cdp.requests(page.events), path)
    return results


def check_pages(pages: dict[str, Path], shots: Path, shoot: set[str]) -> dict[str, PageResult]:
    """Open each report in one fresh headless Chromium; probe, collect JS errors, screenshot ``shoot``."""
    with cdp.chromium() as port:
        return asyncio.run(_check(port, pages, shots, shoot))
