"""``bot journal ...``: ask the journal what happened, and why."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from bot.cli.common import ConfigOpt, DbOpt, FormatOpt, SetOpt, dumps, emit, load, print_markets
from bot.summary import check_symbol, journal_summary
from storage import queries as q
from storage.db import open_database

app = typer.Typer(help="Query runs, decisions, orders, fills, trades and explanations.", no_args_is_help=True)

RunOpt = typer.Option("latest", "--run", "-r", help="Run id, or 'latest'.")
LimitOpt = typer.Option(None, "--limit", "-n", help="Show at most N rows (the last N).")
SymbolOpt = typer.Option(None, "--symbol", "-s", help="Only this market of a multi-market run.")


def _db(config: Path | None, set_: list[str] | None, db: str | None):  # type: ignore[no-untyped-def]
    cfg = load(config, set_, db=db)
    return open_database(cfg.storage.url)


def _tail(rows: list, limit: int | None) -> list:
    return rows[-limit:] if limit else rows


def _rows(engine, run: str, symbol: str | None, query):  # type: ignore[no-untyped-def]
    """(run row, its rows of one kind, filtered to ``symbol``; ConfigError if it did not trade it)."""
    r = q.resolve_run(engine, run)
    sym = check_symbol(r, symbol)
    return r, query(engine, r["id"], symbol=sym), sym


def _cols(r: dict, cols: list[str]) -> list[str]:
    """A multi-market run's rows say which market they are of (one-market output is unchanged)."""
    return [cols[0], "symbol", *cols[1:]] if len(q.run_symbols(r)) > 1 else cols


def _title(what: str, r: dict, sym: str | None) -> str:
    return f"{what} of run {r['id']}" + (f" ({sym})" if sym else "")


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
        r["markets"] = len(q.run_symbols(r))
        if fmt == "table":  # a list of markets wraps at its commas
            for k in ("strategy", "symbol", "timeframe"):
                r[k] = ", ".join(str(r.get(k) or "").split(","))
    emit(rows, fmt, ["id", "mode", "status", "markets", "strategy", "symbol", "timeframe", "bars", "trades",
                     "total_return", "started_at", "finished_at", "error"], "runs")


@app.command("decisions")
def decisions(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
              config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Decisions with their explanations (probabilities, attribution...)."""
    engine = _db(config, set_, db)
    r, rows, sym = _rows(engine, run, symbol, q.decisions)
    cols = ["id", "bar_time", "target", "confidence", "price", "status", "model_id", "explanation", "error"]
    emit(_tail(rows, limit), fmt, _cols(r, cols), _title("decisions", r, sym))


@app.command("orders")
def orders(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Orders, each with the decision that caused it."""
    engine = _db(config, set_, db)
    r, rows, sym = _rows(engine, run, symbol, q.orders)
    cols = ["id", "decision_id", "side", "order_type", "qty", "price", "status", "filled_qty", "avg_fill_price",
            "exchange_order_id", "reject_reason", "adopted", "created_time"]
    emit(_tail(rows, limit), fmt, _cols(r, cols), _title("orders", r, sym))


@app.command("fills")
def fills(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
          config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Executions, keyed by the venue's execution id."""
    engine = _db(config, set_, db)
    r, rows, sym = _rows(engine, run, symbol, q.fills)
    cols = ["exec_id", "order_id", "side", "qty", "price", "fee", "fee_currency", "is_maker", "time"]
    emit(_tail(rows, limit), fmt, _cols(r, cols), _title("fills", r, sym))


@app.command("trades")
def trades(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Round-trip trades with entry and exit decisions."""
    engine = _db(config, set_, db)
    r, rows, sym = _rows(engine, run, symbol, q.trades)
    cols = ["id", "direction", "qty", "entry_time", "exit_time", "entry_price", "exit_price", "gross_pnl", "fees",
            "net_pnl", "return_pct", "bars_held", "entry_decision_id", "exit_decision_id"]
    emit(_tail(rows, limit), fmt, _cols(r, cols), _title("trades", r, sym))


@app.command("events")
def events(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Kill switches, rejections, data gaps, feed problems."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    emit(_tail(q.events(engine, r["id"]), limit), fmt, ["time", "kind", "payload"], f"events of run {r['id']}")


@app.command("equity")
def equity(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Equity marks at each bar close: the portfolio curve, or (--symbol) one market's bars.

    Each row's equity and cash are the portfolio's; position and price are its market's.
    """
    engine = _db(config, set_, db)
    r, rows, sym = _rows(engine, run, symbol, q.equity)
    emit(_tail(rows, limit), fmt, _cols(r, ["time", "equity", "cash", "position", "price"]),
         _title("equity", r, sym))


@app.command("summary")
def summary(run: str = RunOpt, fmt: str = FormatOpt, symbol: str | None = SymbolOpt,
            config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Performance summary recomputed from the journal: a multi-market run's portfolio and its markets."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    s = journal_summary(engine, r, symbol=symbol)
    if fmt == "json":
        sys.stdout.write(dumps(s) + "\n")
        return
    markets = s.pop("markets", None)
    title = f"run {r['id']}" + (f" ({s['symbol']})" if symbol else " (portfolio)" if markets else "")
    emit([{"metric": k, "value": v} for k, v in s.items()], fmt, ["metric", "value"], title)
    if markets:
        if fmt == "csv":
            sys.stdout.write("\n")
            emit(markets, fmt)
        else:
            print_markets(markets)


# Later parts add journal sub-commands (explain, report) from their own modules.
for _mod in ("bot.cli.journal_explain", "bot.cli.journal_report"):
    try:
        __import__(_mod, fromlist=["register"]).register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != _mod:
            raise
