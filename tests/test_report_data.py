"""The report's numbers: the summary table is `bot journal summary`, the charts agree with it,
and every run state (zero trades, one trade, interrupted, failed, paper) yields a report."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from html import unescape

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.report.analysis import buy_and_hold, decimate_idx, drawdown, monthly_returns
from bot.report.data import fill_actions, load_report_data
from bot.report.models import MAX_HEATMAP_COLUMNS, calibration, dsc_view, rollout_view, sizer_view, sma_view
from bot.report.reasons import reasons
from storage import queries as q
from storage.db import open_database
from tests.test_report_support import Runs, journal_runs, report_for

CELL = re.compile(r'data-key="([^"]+)" data-value="([^"]*)"')


@pytest.fixture(scope="module")
def runs() -> Runs:
    return journal_runs()


@pytest.fixture(scope="module")
def db(runs: Runs):  # type: ignore[no-untyped-def]
    return open_database(runs.url)


def data_of(db, runs: Runs, key: str):  # type: ignore[no-untyped-def]
    return load_report_data(db, q.resolve_run(db, runs.ids[key]))


def cli_summary(runs: Runs, run_id: str) -> dict:
    res = CliRunner().invoke(app, ["journal", "summary", "--run", run_id, "--format", "json", "--db", runs.url])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("key", ["rollout", "sma", "zero_trades", "one_trade", "interrupted", "failed",
                                 "failed_at_start", "paper"])
def test_summary_table_equals_journal_summary_cli(runs: Runs, key: str) -> None:
    page = report_for(key).html.read_text()
    table = page[page.index('id="metrics-table"'):]
    table = table[:table.index("</table>")]
    shown = {k: json.loads(unescape(v)) for k, v in CELL.findall(table)}
    expected = cli_summary(runs, runs.ids[key])
    assert shown == expected  # every metric, same value, nothing recomputed differently


def test_charts_agree_with_the_summary(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    for key in ("rollout", "gru_sizer", "one_trade", "paper"):
        d = data_of(db, runs, key)
        s = d.summary
        eq = d.equity["equity"].to_numpy()
        assert buy_and_hold(d)[-1] / d.initial_cash - 1 == pytest.approx(s["buy_and_hold_return"], rel=1e-12)
        assert drawdown(eq, d.initial_cash).max() == pytest.approx(s["max_drawdown"], abs=1e-12)
        months = monthly_returns(d)
        cells = months[list(range(1, 13))].to_numpy().ravel()
        compounded = np.prod(1 + cells[np.isfinite(cells)]) - 1
        assert compounded == pytest.approx(s["total_return"], rel=1e-9, abs=1e-12)
        years = np.prod(1 + months["year"].to_numpy()) - 1
        assert years == pytest.approx(s["total_return"], rel=1e-9, abs=1e-12)
        assert len(d.trades) == s["n_trades"] and len(d.fills) == s["fills"]


def test_monthly_returns_by_hand(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    d = data_of(db, runs, "rollout")
    eq = d.equity.set_index("dt")["equity"]
    jan = eq[(eq.index.year == 2024) & (eq.index.month == 1)].iloc[-1]
    feb = eq[(eq.index.year == 2024) & (eq.index.month == 2)].iloc[-1]
    m = monthly_returns(d)
    assert m.loc[2024, 1] == pytest.approx(jan / d.initial_cash - 1)
    assert m.loc[2024, 2] == pytest.approx(feb / jan - 1)
    assert np.isnan(m.loc[2024, 6])  # no bars in June: an empty cell, not 0%


def test_run_states_each_get_a_report(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    want = {"zero_trades": ("completed", 0), "one_trade": ("completed", 1), "interrupted": ("interrupted", None),
            "failed": ("failed", None), "failed_at_start": ("failed", 0), "paper": ("completed", None)}
    for key, (status, n_trades) in want.items():
        d = data_of(db, runs, key)
        assert d.run["status"] == status
        if n_trades is not None:
            assert len(d.trades) == n_trades
        page = report_for(key).html.read_text()
        for sec in ("summary", "equity", "price", "monthly", "trades", "run"):
            assert f'<section id="{sec}"' in page, (key, sec)
        if status == "failed":
            assert 'class="alert"' in page and "Boom" in page  # the journaled error is shown
    assert data_of(db, runs, "interrupted").summary["candles"] == 300
    empty = data_of(db, runs, "failed_at_start")
    assert not empty.has_bars and report_for("failed_at_start").figures == []
    assert "No bars were journaled" in report_for("failed_at_start").html.read_text()
    assert "No closed trades" in report_for("zero_trades").html.read_text()


def test_one_trade_markers_point_at_their_decisions(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    d = data_of(db, runs, "one_trade")
    assert list(d.fills["action"]) == ["entry", "exit"]
    t = d.trades.iloc[0]
    assert list(d.fills["decision_id"]) == [t.entry_decision_id, t.exit_decision_id]
    entry = d.decision_by_id[t.entry_decision_id]
    assert entry["target"] == 1.0 and reasons(entry["explanation"])[0].startswith("long: p(up) 0.70")


def test_fill_actions_table() -> None:
    D = Decimal
    cases = [
        (["Buy", "Sell"], [D(1), D(1)], ["entry", "exit"]),
        (["Buy", "Buy", "Sell", "Sell"], [D(1), D(1), D(1), D(1)], ["entry", "add", "reduce", "exit"]),
        (["Sell", "Buy", "Sell"], [D("0.5"), D(1), D("0.5")], ["entry", "flip", "exit"]),
    ]
    for sides, qtys, expected in cases:
        assert fill_actions(sides, qtys) == expected


def test_rollout_winners_and_losers_by_hand(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    d = data_of(db, runs, "rollout")
    v = rollout_view(d)
    assert v is not None
    wins = [d.decision_by_id[t.entry_decision_id]["explanation"]["attribution"]
            for t in d.trades.itertuples() if t.net_pnl > 0]
    losses = [d.decision_by_id[t.entry_decision_id]["explanation"]["attribution"]
              for t in d.trades.itertuples() if t.net_pnl < 0]
    assert wins and losses
    np.testing.assert_allclose(v.win_mean, np.mean(wins, axis=0))
    np.testing.assert_allclose(v.loss_mean, np.mean(losses, axis=0))
    # The stored weights sum to 1 within the codec's 8-bit bound (storage/explain_codec.py).
    assert v.win_mean.sum() == pytest.approx(1.0, abs=1e-3) and list(v.lags[-2:]) == [-1, 0]
    # The heatmap averages consecutive decisions into at most MAX_HEATMAP_COLUMNS columns.
    attr = np.array([r["explanation"]["attribution"] for r in d.decisions])
    assert len(attr) > MAX_HEATMAP_COLUMNS and v.heat.shape == (MAX_HEATMAP_COLUMNS, 16)
    edges = np.linspace(0, len(attr), MAX_HEATMAP_COLUMNS + 1).astype(int)
    np.testing.assert_allclose(v.heat[0], attr[: edges[1]].mean(axis=0))
    np.testing.assert_allclose(v.heat[-1], attr[edges[-2]:].mean(axis=0))


def test_dsc_calibration_uses_the_next_bar(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    d = data_of(db, runs, "dsc")
    v = dsc_view(d)
    assert v is not None and [c.label for c in v.curves] == ["up", "down"]
    px = dict(zip(d.equity["time"], d.equity["price"], strict=True))
    times = list(d.equity["time"])
    nxt = {t: px[times[i + 1]] for i, t in enumerate(times[:-1])}
    scored = [r for r in d.decisions if r["bar_time"] in nxt]
    assert v.n_scored == len(scored)
    p_up = np.array([r["explanation"]["probs"]["up"] for r in scored])
    went_up = np.array([float(nxt[r["bar_time"]] > px[r["bar_time"]]) for r in scored])
    up = v.curves[0]
    assert up.count.sum() == len(scored)
    assert up.brier == pytest.approx(float(np.mean((p_up - went_up) ** 2)))
    # Equal-count bins: every bin's realised frequency, weighted by its count, is the overall one.
    assert float(np.sum(up.realised * up.count) / up.count.sum()) == pytest.approx(went_up.mean())
    assert len(up.count) == 10 and up.count.max() - up.count.min() <= 2 and np.all(np.diff(up.predicted) > 0)
    assert sum(len(x) for x in v.confidence.values()) == len(d.decisions)


def test_calibration_bins() -> None:
    """Equal-count bins (quantiles of the predictions), each at its mean predicted probability."""
    pred = np.array([0.05, 0.05, 0.55, 0.55, 0.95, 1.0])
    hit = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    c = calibration(pred, hit, "up", bins=3)
    np.testing.assert_allclose(c.predicted, [0.05, 0.55, 0.975])
    np.testing.assert_allclose(c.realised, [0.5, 1.0, 0.5])
    assert list(c.count) == [2, 2, 2]


def test_sizer_and_sma_views(runs: Runs, db) -> None:  # type: ignore[no-untyped-def]
    g = sizer_view(data_of(db, runs, "gru_sizer"))
    assert g is not None and set(np.unique(g.level)) <= set(range(11)) and len(set(g.level)) > 2
    d = data_of(db, runs, "sma")
    s = sma_view(d)
    assert s is not None and (s.fast_n, s.slow_n) == (10, 30)
    # The SMAs recomputed from the journal equal the values the strategy journaled at each crossover
    # (the journal keeps an explanation's scalars to 9 significant digits: storage/explain_codec.py).
    at = {t: i for i, t in enumerate(d.equity["dt"])}
    idx = [at[t] for t in s.cross_dt]
    np.testing.assert_allclose(s.fast[idx], s.cross_fast, rtol=1e-8)
    np.testing.assert_allclose(s.slow[idx], s.cross_slow, rtol=1e-8)


def test_reasons_follow_the_contract_and_survive_garbage() -> None:
    assert reasons({"kind": "sma", "fast_sma": 2.0, "slow_sma": 1.0, "rule": "fast > slow -> long"}) == [
        "fast SMA 2.00 > slow SMA 1.00", "rule: fast > slow -> long"]
    r = reasons({"kind": "rollout", "probs": {"down": 0.1, "flat": 0.2, "up": 0.7}, "signal": "long",
                 "regime": "momentum", "recent_share": 0.5, "top_steps": [{"time": 0, "weight": 0.3}]})
    assert r == ["long: p(up) 0.70 · p(flat) 0.20 · p(down) 0.10", "regime momentum, recent share 50%",
                 "attends to: 01-01 00:00 (0.30)"]
    g = reasons({"kind": "gru_sizer", "level": 7, "level_probs": [0.0] * 7 + [0.9] + [0.0] * 3,
                 "regime": "bull", "predicted_path": [0.001, 0.002]})
    assert g == ["level 7/10 (p 0.90)", "regime bull", "predicted path: +0.10% → +0.20%"]
    assert reasons({"kill_switch": "max drawdown"}) == ["kill switch: max drawdown"]
    assert reasons({"kind": "dsc", "probs": "nonsense", "top_features": [1, None]}) == []
    assert reasons(None) == [] and reasons({"kind": "rollout", "top_steps": 5}) == []


def test_decimation_keeps_every_extreme() -> None:
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=50_000))
    idx = decimate_idx(y, 1000)
    assert len(idx) <= 1002 and idx[0] == 0 and idx[-1] == len(y) - 1
    assert y[idx].max() == y.max() and y[idx].min() == y.min()
    assert list(decimate_idx(y[:10], 1000)) == list(range(10))


def test_busy_runs_mark_only_position_changes(runs: Runs, db, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from bot.report import analysis

    d = data_of(db, runs, "rollout")
    assert len(analysis.marker_fills(d)) == len(d.fills)
    monkeypatch.setattr(analysis, "MAX_MARKERS", 10)
    marked = analysis.marker_fills(d)
    assert 0 < len(marked) < len(d.fills) and set(marked["action"]) <= {"entry", "exit", "flip"}
    assert len(marked) >= 2 * len(d.trades) - 1  # every round trip keeps its entry and exit
