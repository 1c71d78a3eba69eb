"""A run's summary recomputed from the journal alone (any mode, finished or not)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from bot.domain import timeframe_ms
from bot.metrics import compute_metrics
from bot.timeutil import ms_to_iso
from storage import queries as q


def journal_summary(db: Engine, run: dict[str, Any]) -> dict[str, Any]:
    rid = run["id"]
    eq = q.equity(db, rid)
    trades = q.trades(db, rid)
    m = compute_metrics(
        equity=[r["equity"] for r in eq], positions=[r["position"] for r in eq],
        prices=[r["price"] for r in eq], trade_pnls=[t["net_pnl"] for t in trades],
        fees=q.total_fees(db, rid), initial_cash=float(run["initial_cash"]),
        bar_ms=timeframe_ms(run["timeframe"]),
    )
    stored = run.get("summary") or {}
    return {
        "run_id": rid,
        "mode": run["mode"],
        "status": run["status"],
        "strategy": run["strategy"],
        "symbol": run["symbol"],
        "timeframe": run["timeframe"],
        "model_id": run.get("model_id"),
        "candles": len(eq),
        "start": ms_to_iso(eq[0]["time"]) if eq else None,
        "end": ms_to_iso(eq[-1]["time"]) if eq else None,
        **m,
        "decisions": q.count(db, "decisions", rid),
        "orders": q.count(db, "orders", rid),
        "fills": q.count(db, "fills", rid),
        "elapsed_s": stored.get("elapsed_s"),
        "candles_per_s": stored.get("candles_per_s"),
    }
