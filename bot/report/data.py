"""Load one run from the journal into plain arrays and frames for the report.

Everything comes from the journal alone (storage.queries), so a report can be built for any run
of any mode, finished, interrupted, failed or still running. The summary metrics are
:func:`bot.summary.journal_summary`'s, unchanged: the report shows the same numbers as
``bot journal summary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from bot.domain import timeframe_ms
from bot.report.reasons import reasons
from bot.report.section import ReportSection
from bot.report.sections import for_run
from bot.summary import RunMarket, journal_summary, run_markets
from storage import queries as q
from strategies.spec import ReasonsFn


@dataclass(slots=True)
class ReportData:
    """One run, ready to plot. Times are UTC milliseconds (``*_time``) and naive UTC timestamps (``dt``)."""

    run: dict[str, Any]
    summary: dict[str, Any]
    #: One row per journaled bar: time, dt, equity, cash, position, price (the bar's close).
    equity: pd.DataFrame
    #: Closed round trips, oldest first, with entry/exit timestamps.
    trades: pd.DataFrame
    #: Executions with the order's decision and what the fill did to the position.
    fills: pd.DataFrame
    #: Decision rows (bar_time, target, confidence, status, explanation, error, price), oldest first.
    decisions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    #: The run's strategy's report section (its spec's, else the generic one).
    section: ReportSection
    #: The run's strategy's reasons: explanation -> a few lines.
    explain: ReasonsFn
    decision_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Why the generic section stands in for the strategy's own, or "".
    section_note: str = ""
    #: The market these rows are of (its strategy's params, timeframe, allocation), if known.
    market: RunMarket | None = None

    @property
    def run_id(self) -> str:
        return str(self.run["id"])

    @property
    def bar_ms(self) -> int:
        return self.market.bar_ms if self.market else timeframe_ms(self.run["timeframe"])

    @property
    def initial_cash(self) -> float:
        return float(self.run["initial_cash"])

    @property
    def has_bars(self) -> bool:
        return not self.equity.empty

    def why(self, decision: dict[str, Any], limit: int = 3) -> list[str]:
        """Up to ``limit`` lines from the decision's explanation, by the run's strategy's reasons."""
        return reasons(decision.get("explanation"), limit, self.explain)


def to_dt(ms: Any) -> pd.DatetimeIndex | pd.Timestamp:
    """Epoch milliseconds (scalar or array) -> timestamps in UTC, stored naive.

    Naive datetime64 (not tz-aware objects) keeps arrays numeric: plotly and matplotlib take them
    without copying one Python object per bar.
    """
    return pd.to_datetime(ms, unit="ms")


def _equity_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["time", "equity", "cash", "position", "price"]
    df = pd.DataFrame(rows, columns=["run_id", *cols])[cols] if rows else pd.DataFrame(columns=cols)
    df = df.astype({"time": "int64", "equity": "float64", "cash": "float64", "position": "float64",
                    "price": "float64"})
    df["dt"] = to_dt(df["time"].to_numpy())
    return df.reset_index(drop=True)


def _trades_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["id", "direction", "qty", "entry_time", "exit_time", "entry_price", "exit_price", "gross_pnl",
            "fees", "net_pnl", "return_pct", "bars_held", "entry_decision_id", "exit_decision_id"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    for c in ("qty", "entry_price", "exit_price", "gross_pnl", "fees", "net_pnl", "return_pct"):
        df[c] = df[c].astype("float64")
    df["entry_time"] = df["entry_time"].astype("int64")
    df["exit_time"] = df["exit_time"].astype("int64")
    df["entry_dt"] = to_dt(df["entry_time"].to_numpy())
    df["exit_dt"] = to_dt(df["exit_time"].to_numpy())
    return df


def fill_actions(sides: list[str], qtys: list[Decimal]) -> list[str]:
    """What each fill did to the position, replayed from flat: entry, add, reduce, exit or flip."""
    pos = Decimal(0)
    out: list[str] = []
    for side, qty in zip(sides, qtys, strict=True):
        new = pos + (qty if side == "Buy" else -qty)
        if pos == 0:
            out.append("entry")
        elif new == 0:
            out.append("exit")
        elif (pos > 0) != (new > 0):
            out.append("flip")
        elif abs(new) > abs(pos):
            out.append("add")
        else:
            out.append("reduce")
        pos = new
    return out


def _fills_frame(fills: list[dict[str, Any]], orders: list[dict[str, Any]]) -> pd.DataFrame:
    decision_of = {o["id"]: o.get("decision_id") for o in orders}
    cols = ["exec_id", "order_id", "decision_id", "side", "qty", "price", "fee", "time", "action"]
    rows = [{
        "exec_id": f["exec_id"], "order_id": f["order_id"], "decision_id": decision_of.get(f["order_id"]),
        "side": f["side"], "qty": f["qty"], "price": f["price"], "fee": f["fee"], "time": int(f["time"]),
    } for f in fills]
    actions = fill_actions([r["side"] for r in rows], [Decimal(r["qty"]) for r in rows])
    for r, a in zip(rows, actions, strict=True):
        r["action"] = a
    df = pd.DataFrame(rows, columns=cols)
    for c in ("qty", "price", "fee"):
        df[c] = df[c].astype("float64")
    df["time"] = df["time"].astype("int64")
    df["dt"] = to_dt(df["time"].to_numpy())
    return df


def load_report_data(db: Engine, run: dict[str, Any]) -> ReportData:
    """Everything the report shows about ``run`` (a row from :func:`storage.queries.resolve_run`)."""
    markets = run_markets(run)
    return _load(db, run, journal_summary(db, run), markets[0] if len(markets) == 1 else None, None)


def load_market_data(db: Engine, run: dict[str, Any], market: RunMarket, line: dict[str, Any]) -> ReportData:
    """One market of a multi-market run: its rows only, ``line`` (its summary line) as the summary.

    ``run`` is the run's row with its ``symbol``, ``timeframe`` and ``strategy`` set to this
    market's, so titles and sections read as the market's own. Equity is still the portfolio's.
    """
    own = {**run, "symbol": market.symbol, "timeframe": market.timeframe, "strategy": market.strategy}
    return _load(db, own, line, market, market.symbol)


def _load(db: Engine, run: dict[str, Any], summary: dict[str, Any], market: RunMarket | None,
          symbol: str | None) -> ReportData:
    rid = run["id"]
    decisions = q.decisions(db, rid, symbol=symbol)
    for d in decisions:
        if not isinstance(d.get("explanation"), dict):
            d["explanation"] = {}
    strategy = for_run(str(run["strategy"]), decisions)
    return ReportData(
        run=run,
        summary=summary,
        equity=_equity_frame(q.equity(db, rid, symbol=symbol)),
        trades=_trades_frame(q.trades(db, rid, symbol=symbol)),
        fills=_fills_frame(q.fills(db, rid, symbol=symbol), q.orders(db, rid, symbol=symbol)),
        decisions=decisions,
        events=q.events(db, rid) if symbol is None else [],
        section=strategy.section,
        explain=strategy.reasons,
        decision_by_id={d["id"]: d for d in decisions},
        section_note=strategy.note,
        market=market,
    )


def close_after(equity: pd.DataFrame, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(close at each bar time, close of the next journaled bar); NaN where unknown."""
    t = equity["time"].to_numpy()
    px = equity["price"].to_numpy()
    idx = np.searchsorted(t, times)
    ok = (idx < len(t)) & (t[np.minimum(idx, len(t) - 1)] == times) if len(t) else np.zeros(len(times), bool)
    now = np.full(len(times), np.nan)
    nxt = np.full(len(times), np.nan)
    now[ok] = px[idx[ok]]
    has_next = ok & (idx + 1 < len(t))
    nxt[has_next] = px[idx[has_next] + 1]
    return now, nxt
