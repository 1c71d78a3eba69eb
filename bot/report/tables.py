"""HTML tables of the report: summary metrics, trades, events, each value escaped.

Every metric cell carries ``data-key`` and ``data-value`` (the exact JSON value of
``bot journal summary --format json``), so a reader or a test can check the page against the CLI.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from bot.report.data import ReportData
from bot.report.reasons import fmt_time
from bot.units import format_metric

LABELS = {
    "run_id": "run", "mode": "mode", "status": "status", "strategy": "strategy", "symbol": "symbol",
    "timeframe": "timeframe", "model_id": "model", "candles": "candles", "start": "first bar", "end": "last bar",
    "bars": "bars", "initial_equity": "initial equity", "final_equity": "final equity",
    "total_return": "total return", "cagr": "CAGR", "volatility": "volatility (ann.)", "sharpe": "Sharpe",
    "sortino": "Sortino", "max_drawdown": "max drawdown", "exposure_time": "time in market",
    "buy_and_hold_return": "buy & hold", "n_trades": "trades", "win_rate": "win rate",
    "profit_factor": "profit factor", "avg_trade_pnl": "avg trade PnL", "fees": "fees paid",
    "decisions": "decisions", "orders": "orders", "fills": "fills", "elapsed_s": "elapsed (s)",
    "candles_per_s": "candles / s", "allocation": "allocation", "net_pnl": "net PnL", "realized_pnl": "realised PnL",
    "open_position": "open position", "funding_paid": "funding paid",
}
HEADLINE = ["total_return", "buy_and_hold_return", "sharpe", "max_drawdown", "n_trades", "win_rate"]
MAX_TRADE_ROWS = 1000
MAX_EVENT_ROWS = 300


def fmt_metric(key: str, v: Any) -> str:
    """The CLI's unit for every figure (:func:`bot.units.format_metric`): percent, n/a for None."""
    return format_metric(key, v)


def tone(key: str, v: Any) -> str:
    if not isinstance(v, int | float) or v is None:
        return ""
    if key in ("total_return", "buy_and_hold_return", "cagr", "sharpe", "sortino", "avg_trade_pnl", "net_pnl"):
        return "pos" if v > 0 else "neg" if v < 0 else ""
    if key == "max_drawdown":
        return "neg" if v > 0 else ""
    return ""


def _cell(key: str, v: Any) -> str:
    t = tone(key, v)
    return (f'<td class="num {t}" data-key="{escape(key)}" '
            f'data-value="{escape(json.dumps(v, default=str))}">{escape(fmt_metric(key, v))}</td>')


def headline_cards(summary: dict[str, Any], keys: list[str] = HEADLINE) -> str:
    out = []
    for k in keys:
        v = summary.get(k)
        out.append(f'<div class="card"><div class="card-label">{escape(LABELS.get(k, k))}</div>'
                   f'<div class="card-value {tone(k, v)}">{escape(fmt_metric(k, v))}</div></div>')
    return '<div class="cards">' + "".join(out) + "</div>"


def metrics_table(summary: dict[str, Any], table_id: str = "metrics-table") -> str:
    """Every key of the journal summary, in its order, two columns of label/value pairs."""
    items = [(k, v) for k, v in summary.items() if k != "markets"]
    half = (len(items) + 1) // 2
    rows = []
    for i in range(half):
        cells = []
        for k, v in (items[i], items[i + half] if i + half < len(items) else (None, None)):
            if k is None:
                cells.append("<th></th><td></td>")
            else:
                cells.append(f"<th>{escape(LABELS.get(k, k))}</th>{_cell(k, v)}")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="metrics" id="{escape(table_id)}">' + "".join(rows) + "</table>"


def trades_table(d: ReportData, table_id: str = "trades-table") -> str:
    tr = d.trades
    if tr.empty:
        return '<p class="empty">No closed trades in this run.</p>'
    note = ""
    if len(tr) > MAX_TRADE_ROWS:
        note = f'<p class="note">Showing the last {MAX_TRADE_ROWS:,} of {len(tr):,} trades.</p>'
        tr = tr.iloc[-MAX_TRADE_ROWS:]
    head = ("<tr><th>#</th><th>side</th><th>entry (UTC)</th><th>exit (UTC)</th><th>bars</th><th>qty</th>"
            "<th>entry</th><th>exit</th><th>net PnL</th><th>return</th><th>fees</th><th>why it entered</th></tr>")
    rows = []
    for i, r in zip(tr.index, tr.itertuples(index=False), strict=True):
        dec = d.decision_by_id.get(r.entry_decision_id) if r.entry_decision_id else None
        why = "; ".join(d.why(dec, 2)) if dec else ""
        cls = "pos" if r.net_pnl > 0 else "neg" if r.net_pnl < 0 else ""
        rows.append(
            f"<tr><td>{i + 1}</td><td>{escape(r.direction)}</td><td>{fmt_time(r.entry_time)}</td>"
            f"<td>{fmt_time(r.exit_time)}</td><td class='num'>{r.bars_held}</td><td class='num'>{r.qty:g}</td>"
            f"<td class='num'>{r.entry_price:,.2f}</td><td class='num'>{r.exit_price:,.2f}</td>"
            f"<td class='num {cls}'>{r.net_pnl:,.2f}</td><td class='num {cls}'>{r.return_pct * 100:+.2f}%</td>"
            f"<td class='num'>{r.fees:,.2f}</td><td class='why'>{escape(why)}</td></tr>")
    return (note + f'<div class="scroll"><table class="list" id="{escape(table_id)}">' + head + "".join(rows)
            + "</table></div>")


def events_table(d: ReportData) -> str:
    ev = d.events[-MAX_EVENT_ROWS:]
    rows = "".join(
        f"<tr><td>{fmt_time(e['time'])}</td><td>{escape(str(e['kind']))}</td>"
        f"<td class='why'>{escape(json.dumps(e.get('payload'), default=str)[:300])}</td></tr>" for e in ev)
    return ('<div class="scroll"><table class="list" id="events-table"><tr><th>time (UTC)</th><th>event</th>'
            "<th>details</th></tr>" + rows + "</table></div>")


MARKET_COLUMNS = [("symbol", "market"), ("strategy", "strategy"), ("timeframe", "tf"), ("allocation", "allocation"),
                  ("candles", "bars"), ("n_trades", "trades"), ("win_rate", "win rate"), ("net_pnl", "net PnL"),
                  ("fees", "fees"), ("exposure_time", "exposure"), ("buy_and_hold_return", "buy & hold"),
                  ("open_position", "position")]


def markets_table(lines: list[dict[str, Any]]) -> str:
    """A multi-market run's line per market; each cell carries its summary key and JSON value."""
    head = "".join(f"<th>{escape(label)}</th>" for _, label in MARKET_COLUMNS)
    rows = []
    for ln in lines:
        cells = []
        for k, _ in MARKET_COLUMNS:
            v = ln.get(k)
            if k == "allocation" and isinstance(v, int | float):
                text, cls = f"{v * 100:.0f}%", "num"
            elif isinstance(v, str):
                text, cls = v, ""
            else:
                text, cls = fmt_metric(k, v), f"num {tone(k, v)}"
            cells.append(f'<td class="{cls}" data-key="{escape(k)}" '
                         f'data-value="{escape(json.dumps(v, default=str))}">{escape(text)}</td>')
        rows.append(f'<tr data-market="{escape(str(ln.get("symbol")))}">' + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table class="list" id="markets-table"><tr>' + head + "</tr>" + "".join(rows)
            + "</table></div>")
