"""``bot journal explain`` reads as sentences a trader understands (issue 14): exact format for a dsc,
a rollout and a gru_sizer decision in the explanation contract's shape, and for old-shape decisions;
signed bars with their legend, the method's faithfulness, the rule in words, --png, the dashboard's why."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bot.api.app import create_app
from bot.cli import app
from tests.explain_fixtures import build, write_candles
from tests.serve_helpers import serving

runner = CliRunner()

STORIES = {
    "dsc": "Bought 0.12 BTC at 64,210: p(up) = 0.56 >= 0.50. Most weight on the candles of 14:00 and 09:00 "
           "(both sharp down moves) and on rsi_14 and volume_ratio (pushing toward up). The newest candle "
           "(15:00, up move +0.1 %) carries 13 % of the weight, pushing toward up.",
    "rollout": "Stayed flat: p(up) = 0.41 < 0.50. Most weight on the candles of 14:00 and 09:00 (both sharp "
               "down moves). The newest candle (15:00, up move +0.1 %) carries 32 % of the weight.",
    "gru_sizer": "Sold 0.05 BTC at 64,180: level 6 of 10 -> 60 % of equity. Most weight on the candles of "
                 "14:00 and 09:00 (both sharp down moves) and on ret_1 (pushing toward a smaller position) and "
                 "rsi_14 (pushing toward a larger position). The newest candle (15:00, up move +0.1 %) carries "
                 "8 % of the weight, pushing toward a smaller position.",
    # Journals written before the contract: what they hold, read without a crash.
    "old_rollout": "Bought 0.25 BTC at 40,010: signal long, p(up) = 0.50, p(flat) = 0.30, p(down) = 0.20. Most "
                   "weight on the candles of 14:00 and 09:00 (both sharp down moves). The newest candle (15:00, "
                   "up move +0.1 %) carries 27 % of the weight.",
    "old_dsc": "Held short 100 % of equity: signal short, p(up) = 0.10, p(flat) = 0.30, p(down) = 0.60. Most "
               "weight on the candle of 09:00 (a sharp down move) and on ret_1 and vol_24.",
}
METHOD_LINES = {
    "dsc": "method: signed gradient x input; on 2,000 validation windows masking its top 5 older candles moved "
           "p(up) - p(down) 3.1x more than random (0.0093 vs 0.003); masking the newest bar alone: 0.012; "
           "rank 1 among the methods tested",
    "rollout": "method: gradient-weighted attention rollout; on 2,000 validation windows masking its top 5 older "
               "candles moved p(predicted class) 3.1x more than random",
    "gru_sizer": "method: signed gradient x input; on 2,000 validation windows masking its top 5 older candles "
                 "moved expected level 3.1x more than random",
    "old_rollout": "method: attention rollout; no faithfulness score stored (a decision journaled before it was "
                   "measured)",
}
LEGENDS = {"dsc": "legend: █ toward up █ toward down",
           "gru_sizer": "legend: █ toward a larger position █ toward a smaller position",
           "rollout": "legend: █ weight (unsigned: how much each input counted, not which way)"}
RULES = {"dsc": "rule: p(up) = 0.56 >= 0.50 -> long (threshold 0.50)",
         "gru_sizer": "rule: level 6 of 10 -> 60 % of equity (level 6, max exposure 1 x equity)"}


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("story")
    return build(f"sqlite:///{d / 'journal.db'}", write_candles(d / "bybit_BTCUSDT_1h.csv"))


def explain(ids: dict[str, str], *args: str) -> str:
    res = runner.invoke(app, ["journal", "explain", *args, "--db", ids["url"]], terminal_width=200)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("kind", list(STORIES))
def test_explain_opens_with_the_story(ids: dict[str, str], kind: str) -> None:
    out = explain(ids, ids[kind])
    first = out.split(f"decision {ids[kind]}")[0]  # everything above the decision's table
    assert flat(first) == STORIES[kind]


@pytest.mark.parametrize("kind", list(METHOD_LINES))
def test_method_faithfulness_legend_and_rule(ids: dict[str, str], kind: str) -> None:
    out = flat(explain(ids, ids[kind]))
    assert METHOD_LINES[kind] in out
    if kind in LEGENDS:
        assert LEGENDS[kind] in out
    if kind in RULES:
        assert RULES[kind] in out


def test_signed_bars_carry_their_sign_and_the_candle(ids: dict[str, str]) -> None:
    lines = explain(ids, ids["dsc"]).splitlines()
    nine = next(ln for ln in lines if ln.startswith("2024-03-02 09:00"))
    fourteen = next(ln for ln in lines if ln.startswith("2024-03-02 14:00"))
    newest = next(ln for ln in lines if ln.startswith("2024-03-02 15:00"))
    assert "-0.04" in nine and "* -2.5 %, range" in nine  # pushes toward down; a sharp down candle
    assert "+0.05" in fourteen and "* -3.0 %, range" in fourteen
    assert "+0.02" in newest and "newest +0.1 %" in newest
    feats = [ln for ln in lines if ln.split(" ")[0] in ("rsi_14", "volume_ratio", "ret_1")]
    assert [ln.split()[0] for ln in feats] == ["rsi_14", "volume_ratio", "ret_1"]  # largest |value| first
    assert "-0.004" in feats[-1]


def test_explain_with_styles_colours_bars_by_sign(ids: dict[str, str]) -> None:
    from rich.console import Console

    from bot.cli.explain_view import render_attribution
    from bot.cli.journal_explain import gather
    from storage.db import open_database

    console = Console(record=True, width=200, color_system="truecolor")
    render_attribution(console, gather(open_database(ids["url"]), ids["dsc"])["decision"], None)
    html = console.export_html()
    assert "#008000" in html and "#800000" in html  # green bars (toward up) and red ones (toward down)


@pytest.mark.parametrize("kind", list(STORIES))
def test_png_for_contract_and_old_decisions(ids: dict[str, str], tmp_path: Path, kind: str) -> None:
    png = tmp_path / f"{kind}.png"
    explain(ids, ids[kind], "--png", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_dashboard_why_is_the_first_sentence(ids: dict[str, str]) -> None:
    with serving(create_app(ids["url"])) as base, httpx.Client(base_url=base, timeout=120) as client:
        run = ids["dsc"].rsplit("-", 1)[0]
        items = client.get(f"/api/runs/{run}/decisions", params={"limit": 50}).json()["items"]
    why = {d["id"]: d["why"] for d in items}
    assert why[ids["dsc"]] == "Target long 100 % of equity: p(up) = 0.56 >= 0.50."
    assert why[ids["rollout"]] == "Stayed flat: p(up) = 0.41 < 0.50."
    assert why[ids["gru_sizer"]] == "Target long 60 % of equity: level 6 of 10 -> 60 % of equity."
    assert why[ids["old_rollout"]].startswith("long: p(up) 0.50")  # old journals: their reasons, as before
