"""``bot journal ...``: ask the journal what happened, and why."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import typer

from bot.cli.common import (
    ConfigOpt,
    DbOpt,
    FormatOpt,
    SetOpt,
    dumps,
    emit,
    load,
    print_in_sample,
    print_markets,
    print_na_note,
)
from bot.cli.tables import Col
from bot.report.reasons import generic_reasons, reasons, reasons_for
from bot.summary import check_symbol, journal_summary
from bot.units import format_metric
from storage import queries as q
from storage.db import open_database

app = typer.Typer(help="Query runs, decisions, orders, fills, trades and explanations.", no_args_is_help=True)

RunOpt = typer.Option("latest", "--run", "-r", help="Run id, or 'latest'.")
LimitOpt = typer.Option(None, "--limit", "-n", help="Show at most N rows (the last N).")
SymbolOpt = typer.Option(None, "--symbol", "-s", help="Only this market of a multi-market run.")


WideOpt = typer.Option(False, "--wide", "-w",
                       help="Table: every column and whole ids (default: a table that fits 100 columns).")

RUN_COLS = [Col("id", kind="run"), Col("mode"), Col("status"), Col("markets", kind="num", wide=True),
            Col("strategy", width=18), Col("symbol", width=18), Col("timeframe", "tf", width=8),
            Col("bars", kind="num", wide=True), Col("trades", kind="num"), Col("total_return", "return", "metric"),
            Col("started_at", "started", "time"), Col("finished_at", "finished", "time", wide=True),
            Col("host", width=16, wide=True), Col("pid", kind="num", wide=True), Col("error", wide=True)]
DECISION_COLS = [Col("id", kind="id"), Col("bar_time", "bar", "time"), Col("target", kind="num"),
                 Col("confidence", "conf", "num"), Col("price", kind="num"), Col("status"),
                 Col("model_id", "model", wide=True), Col("why", width=40), Col("explanation", kind="json", wide=True),
                 Col("error", wide=True)]
ORDER_COLS = [Col("id", kind="id"), Col("decision_id", "decision", "id"), Col("side"), Col("order_type", "type"),
              Col("qty", kind="num"), Col("price", "limit", "num", wide=True), Col("status"),
              Col("filled_qty", "filled", "num"), Col("avg_fill_price", "avg price", "num"),
              Col("exchange_order_id", "exchange id", wide=True), Col("reject_reason", "reject reason", wide=True),
              Col("adopted", wide=True), Col("exit_reason", "exit by", wide=True),
              Col("created_time", "created", "time"),
              Col("updated_time", "updated", "time", wide=True)]
FILL_COLS = [Col("exec_id", "exec", "id"), Col("order_id", "order", "id"), Col("side"), Col("qty", kind="num"),
             Col("price", kind="num"), Col("fee", kind="num"), Col("fee_currency", "coin"),
             Col("reason"), Col("is_maker", "maker", wide=True), Col("time", kind="time")]
TRADE_COLS = [Col("id", kind="id"), Col("direction", "side"), Col("qty", kind="num", wide=True),
              Col("entry_time", "entry", "time"), Col("exit_time", "exit", "time"),
              Col("entry_price", "entry px", "num"), Col("exit_price", "exit px", "num"),
              Col("gross_pnl", "gross PnL", "metric", wide=True), Col("fees", kind="metric", wide=True),
              Col("net_pnl", "net PnL", "metric"), Col("return_pct", "return", "metric"),
              Col("exit_reason", "why", "exit"), Col("bars_held", "bars", "num", wide=True),
              Col("entry_decision_id", "entry decision", "id", wide=True),
              Col("exit_decision_id", "exit decision", "id", wide=True)]
EQUITY_COLS = [Col("time", kind="time"), Col("equity", kind="metric"), Col("cash", kind="metric"),
               Col("position", kind="num"), Col("price", kind="num")]
EVENT_COLS = [Col("time", kind="time"), Col("kind"), Col("payload", kind="json", width=60)]


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


def _cols(r: dict, cols: list[Col]) -> list[Col]:
    """A multi-market run's rows say which market they are of (one-market output is unchanged);
    to fit 100 columns, its trades' exit reason is then shown with ``--wide`` only."""
    if len(q.run_symbols(r)) < 2:
        return cols
    return [cols[0], Col("symbol"), *(replace(c, wide=True) if c.key == "exit_reason" else c for c in cols[1:])]


def _title(what: str, r: dict, sym: str | None) -> str:
    return f"{what} of run {r['id']}" + (f" ({sym})" if sym else "")


def _listing(what: str, query, cols: list[Col], run: str, fmt: str, limit: int | None,  # type: ignore[no-untyped-def]
             symbol: str | None, wide: bool, config: Path | None, set_: list[str] | None, db: str | None) -> None:
    engine = _db(config, set_, db)
    r, rows, sym = _rows(engine, run, symbol, query)
    rows = _tail(rows, limit)
    if fmt == "table" and any(c.key == "why" for c in cols):
        for d in rows:
            expl = d.get("explanation") if isinstance(d.get("explanation"), dict) else {}
            d["why"] = "; ".join(reasons(expl, 2, reasons_for(expl.get("kind")) or generic_reasons))
    elif fmt != "table":  # the one-line reading is the table's; JSON and CSV carry the explanation
        cols = [c for c in cols if c.key != "why"]
    emit(rows, fmt, _cols(r, cols), _title(what, r, sym), wide=wide, run_id=r["id"])


@app.command("runs")
def runs(fmt: str = FormatOpt, limit: int = typer.Option(50, "--limit", "-n", help="Show the newest N runs."),
         wide: bool = WideOpt,
         config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Runs, newest first (total_return: a fraction in JSON and CSV)."""
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
    emit(rows, fmt, RUN_COLS, "runs", wide=wide)


@app.command("decisions")
def decisions(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
              wide: bool = WideOpt,
              config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Decisions with their explanations (probabilities, attribution...); the table says why in a line."""
    _listing("decisions", q.decisions, DECISION_COLS, run, fmt, limit, symbol, wide, config, set_, db)


@app.command("orders")
def orders(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
           wide: bool = WideOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Orders, each with the decision that caused it."""
    _listing("orders", q.orders, ORDER_COLS, run, fmt, limit, symbol, wide, config, set_, db)


@app.command("fills")
def fills(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
          wide: bool = WideOpt,
          config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Executions, keyed by the venue's execution id."""
    _listing("fills", q.fills, FILL_COLS, run, fmt, limit, symbol, wide, config, set_, db)


@app.command("trades")
def trades(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
           wide: bool = WideOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Round-trip trades with entry and exit decisions (return_pct: a fraction in JSON and CSV)."""
    _listing("trades", q.trades, TRADE_COLS, run, fmt, limit, symbol, wide, config, set_, db)


@app.command("events")
def events(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, wide: bool = WideOpt,
           kind: str | None = typer.Option(None, "--kind", help="Only events of this kind (e.g. model_swap)."),
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Kill switches, rejections, data gaps, feed problems, model swaps (retraining)."""
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    emit(_tail(q.events(engine, r["id"], kind), limit), fmt, EVENT_COLS, f"events of run {r['id']}", wide=wide,
         run_id=r["id"])


@app.command("equity")
def equity(run: str = RunOpt, fmt: str = FormatOpt, limit: int | None = LimitOpt, symbol: str | None = SymbolOpt,
           wide: bool = WideOpt,
           config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Equity marks at each bar close: the portfolio curve, or (--symbol) one market's bars.

    Each row's equity and cash are the portfolio's; position and price are its market's.
    """
    _listing("equity", q.equity, EQUITY_COLS, run, fmt, limit, symbol, wide, config, set_, db)


@app.command("summary")
def summary(run: str = RunOpt, fmt: str = FormatOpt, symbol: str | None = SymbolOpt, wide: bool = WideOpt,
            config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt, db: str | None = DbOpt) -> None:
    """Performance summary recomputed from the journal: a multi-market run's portfolio and its markets.

    The table shows returns, drawdown, exposure and win rate in percent, as `bot backtest` does;
    JSON and CSV give them as fractions (0.05 = 5 %). A figure the run cannot support is n/a
    (JSON null): annualised figures of a run under 30 days, win rate without a closed trade.
    """
    engine = _db(config, set_, db)
    r = q.resolve_run(engine, run)
    s = journal_summary(engine, r, symbol=symbol)
    if fmt == "json":
        sys.stdout.write(dumps(s) + "\n")
        return
    markets = s.pop("markets", None)
    title = f"run {r['id']}" + (f" ({s['symbol']})" if symbol else " (portfolio)" if markets else "")
    if fmt == "table":
        emit([{"metric": k, "value": format_metric(k, v)} for k, v in s.items()], fmt,
             [Col("metric"), Col("value", kind="num")], title, wide=True)
        print_na_note(s)
        print_in_sample(s)
    else:
        emit([{"metric": k, "value": v} for k, v in s.items()], fmt, [Col("metric"), Col("value")], title)
    if markets:
        if fmt == "csv":
            sys.stdout.write("\n")
            emit(markets, fmt)
        else:
            print_markets(markets, wide=wide)


# Later parts add journal sub-commands (explain, report, prune) from their own modules.
for _mod in ("bot.cli.journal_explain", "bot.cli.journal_report", "bot.cli.journal_prune"):
    try:
        __import__(_mod, fromlist=["register"]).register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != _mod:
            raise
