"""report.html in a real headless Chromium: every chart renders, no JavaScript error, every
section is there, nothing is fetched from the network, and a screenshot comes out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_report_cdp import PageResult, check_pages
from tests.test_report_support import journal_runs, png_size, report_for

#: Every strategy kind (the interrupted run is the gru_sizer one) and every edge case. Each page
#: costs a few seconds of plotly.js parsing; failed-with-bars and paper runs share these code
#: paths and are checked statically in test_report_data.
KEYS = ["rollout", "dsc", "sma", "zero_trades", "one_trade", "interrupted", "failed_at_start"]
SHOOT = {"rollout", "failed_at_start"}
KIND = {"rollout": "rollout", "dsc": "dsc", "gru_sizer": "gru_sizer", "sma": "sma", "zero_trades": "rollout",
        "one_trade": "dsc", "interrupted": "gru_sizer", "failed": "rollout", "failed_at_start": "rollout",
        "paper": "dsc"}  # failed_at_start: a rollout run that died before its first bar
FIGURES = {"rollout": ["fig-rollout-attribution", "fig-rollout-heatmap"], "dsc": ["fig-dsc"],
           "gru_sizer": ["fig-gru-sizer"], "sma": ["fig-sma"]}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PageResult]:
    journal_runs()
    shots = tmp_path_factory.mktemp("screenshots")
    return check_pages({k: report_for(k).html for k in KEYS}, shots, SHOOT)


@pytest.mark.parametrize("key", KEYS)
def test_report_renders_in_chromium(pages: dict[str, PageResult], key: str) -> None:
    page = pages[key]
    assert page.errors == []
    assert page.probe["plotly"], "plotly.js did not load from the page itself"
    # Offline: the page loads only itself (plotly.js is inline), no CDN, no fonts, no images.
    assert all(u.startswith(("file://", "data:", "about:")) for u in page.requests), page.requests
    kind = KIND[key]
    sections = ["summary", "equity", "price", "monthly", "trades", f"model-{kind}", "run"]
    assert [s for s in page.probe["sections"] if s != "events"] == sections
    figures = [] if key == "failed_at_start" else ["fig-equity", "fig-price", "fig-monthly", *FIGURES[kind]]
    assert page.probe["manifest"]["figures"] == figures
    for f in page.probe["figs"]:
        assert f["rendered"] and f["traces"] >= 1 and f["drawn"] >= 1, f
    if key in SHOOT:
        assert page.screenshot is not None
        w, h = png_size(page.screenshot)
        assert (w, h) == (page.probe["width"], min(page.probe["height"], 12000)) and h > 800


def test_trade_markers_carry_the_decision(pages: dict[str, PageResult]) -> None:
    """The price chart of the one-trade run has one buy and one sell marker with hover text."""
    import json
    import re

    html = report_for("one_trade").html.read_text()
    m = re.search(r'Plotly\.newPlot\(\s*"fig-price",\s*(\[.*?\]),\s*\{', html, re.S)
    assert m is not None
    traces = json.loads(m.group(1))
    markers = {t["name"]: t for t in traces if t.get("mode") == "markers"}
    assert set(markers) == {"buy (1)", "sell (1)"}
    hover = markers["buy (1)"]["text"][0]
    assert "Buy entry" in hover and "decision bar" in hover and "confidence 0.70" in hover and "p(up) 0.70" in hover
    assert "Sell exit" in markers["sell (1)"]["text"][0]
    assert pages["one_trade"].errors == []


def test_screenshot_kept_for_inspection(pages: dict[str, PageResult]) -> None:
    """The rollout report's screenshot is a real, full-page PNG (kept under $BOT_REPORT_SHOTS if set)."""
    import os
    import shutil

    shot = pages["rollout"].screenshot
    assert shot is not None and shot.stat().st_size > 50_000
    keep = os.environ.get("BOT_REPORT_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for k, p in pages.items():
            if p.screenshot is not None:
                shutil.copy(p.screenshot, Path(keep) / f"{k}.png")
