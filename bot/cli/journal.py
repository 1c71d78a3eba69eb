"""``bot journal ...``: ask the journal what happened, and why."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from bot.cli.common import ConfigOpt, DbOpt, FormatOpt, SetOpt, dumps, emit, load
from bot.summary import journal_summary
from storage import queries as q
from storage.db import open_database

app = typer.Typer(help="Query runs, decisions, orders, fills, trades and explanations.", no_args_is_help=True)

RunOpt = typer.Option("latest", "--run", "-r", help="Run id, or 'latest'.")
LimitOpt = typer.Option(None, "--limit", "-n", help="Show at most N rows (the last N).")


def _db(config: Path | None, set_: list[str] | None, db: str | None):  # type: ignore[no-untyped-def]
    cfg = load(config, set_, db=db)
    return open_database(cfg.storage.url)


def _tail(rows: list, limit: int | None) -> list:
    return rows[-limit:] if limit else rows


@app.command("runs")
def runs(fmt: str = FormatOpt, limit: int = typer.Option(50, "--limit", "-n"),
         config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Runs, newest first."""
    engine = _db(config, set_, db)
    rows = q.list_runs(engine, limit)
    for r in rows:
        s = r.get("summary") or {}
        r["trades"] = s.get("n_trades")
        r["total_return"] = s.get("total_return")
    emit(rows, fmt, ["id", "mode", "status", "strategy", "symbol", "timeframe", "bars", "trades",
                     "total_return", "started_at", "finished_at", "error"], "runs")


@app.command("decisions")
def decisions(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt,
              config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Decisions with their explanations (probabilities, attribution...)."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    rows = _tail(q.decisions(engine, r["id"]), limit)
    emit(rows, fmt, ["id", "bar_time", "target", "confidence", "price", "status", "model_id",
                     "explanation", "error"], f"decisions of run {r['id']}")


@app.command("orders")
def orders(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Orders, each with the decision that caused it."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    rows = _tail(q.orders(engine, r["id"]), limit)
    emit(rows, fmt, ["id", "decision_id", "side", "order_type", "qty", "price", "status", "filled_qty",
                     "avg_fill_price", "exchange_order_id", "reject_reason", "adopted", "created_time"],
         f"orders of run {r['id']}")


@app.command("fills")
def fills(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt,
          config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Executions, keyed by the venue's execution id."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    rows = _tail(q.fills(engine, r["id"]), limit)
    emit(rows, fmt, ["exec_id", "order_id", "side", "qty", "price", "fee", "is_maker", "time"],
         f"fills of run {r['id']}")


@app.command("trades")
def trades(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Round-trip trades with entry and exit decisions."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    rows = _tail(q.trades(engine, r["id"]), limit)
    emit(rows, fmt, ["id", "direction", "qty", "entry_time", "exit_time", "entry_price", "exit_price",
                     "gross_pnl", "fees", "net_pnl", "return_pct", "bars_held", "entry_decision_id",
                     "exit_decision_id"], f"trades of run {r['id']}")


@app.command("events")
def events(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Kill switches, rejections, data gaps, feed problems."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    emit(_tail(q.events(engine, r["id"]), limit), fmt, ["time", "kind", "payload"], f"events of run {r['id']}")


@app.command("summary")
def summary(run: str = RunOpt, fmt: str = FormatOpt,
            config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Performance summary recomputed from the journal."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    s = journal_summary(engine, r)
    if fmt == "json":
        sys.stdout.write(dumps(s) + "\n")
    else:
        emit([{"metric": k, "value": v} for k, v in s.items()], fmt, ["metric", "value"], f"run {r['id']}")


# Later parts add journal sub-commands (explain, report) from their own modules.
for _mod in ("bot.cli.journal_explain", "bot.cli.journal_report"):
    try:
        __import__(_mod, fromlist=["register"]).register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != _mod:
            raise
