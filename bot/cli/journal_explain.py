"""``bot journal explain ID``: why did the bot do this? One decision, what it caused, and why.

Accepts a decision id, a client order id or an exchange order id. Prints the decision, its class
or level probabilities, the orders and fills it caused, and the model's attribution as a bar chart
over the window. Works for every explanation kind of docs/explanations.md and shows whatever keys
are present, with the strategy's reasons (its spec's, else generic ones) as "why"; ``--png`` draws
the candles above the attribution (matplotlib, headless).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.table import Table
from rich.text import Text

from bot.cli import explain_png
from bot.cli.common import ConfigOpt, DbOpt, SetOpt, console, dumps, load, with_iso
from bot.cli.explain_view import render_attribution
from bot.domain import timeframe_ms
from bot.errors import ConfigError
from bot.explanation import attribution_of
from bot.report.reasons import decision_reasons_fn, reasons
from bot.report.story import story
from bot.summary import check_symbol
from bot.timeutil import ms_to_iso
from storage import queries as q
from storage.db import open_database

BAR_WIDTH = 40
#: Keys the sections below render; anything else is listed under "other".
_SHOWN = {"kind", "probs", "confidence", "signal", "attribution", "times", "top_steps", "regime",
          "recent_share", "head_fusion", "top_features", "feature_scores", "method", "level",
          "level_probs", "predicted_path", "predicted_closes", "fast_sma", "slow_sma", "rule"}


def gather(db: Any, ident: str, symbol: str | None = None) -> dict[str, Any]:
    """The decision behind ``ident`` with its run, orders and fills (StorageError if unknown).

    ``symbol``: the decision must be of that market (ConfigError if its run did not trade it, or
    the decision is another market's).
    """
    decision = q.find_decision(db, ident)
    orders = q.orders_for_decision(db, decision["id"])
    fills = q.fills_for_orders(db, [o["id"] for o in orders])
    try:
        run = q.resolve_run(db, decision["run_id"])
    except Exception:  # noqa: BLE001 - a decision without its run still explains itself
        run = {}
    if symbol is not None:
        symbol = check_symbol(run, symbol) if run else symbol.upper()
        if decision.get("symbol") != symbol:
            raise ConfigError(f"decision {decision['id']} is of {decision.get('symbol')}, not {symbol}")
    expl = decision.get("explanation")
    decision["explanation"] = expl if isinstance(expl, dict) else {}
    return {"decision": decision, "run": run, "orders": orders, "fills": fills}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def _fmt(v: Any) -> str:
    f = _num(v) if not isinstance(v, bool | str) else None
    if f is None:
        return "-" if v is None else str(v)
    return f"{f:.6g}"


def _bar(value: float, top: float) -> str:
    if top <= 0:
        return ""
    n = int(round(abs(value) / top * BAR_WIDTH))
    return ("[green]" if value >= 0 else "[red]") + "█" * n + "[/]"


def bar_table(title: str, rows: list[tuple[str, float]], pct: bool = False, mark: set[str] | None = None) -> Table:
    """A horizontal bar chart as a rich table (label, value, bar); ``mark`` stars chosen labels."""
    table = Table(title=title, show_edge=False, pad_edge=False)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("")
    top = max((abs(v) for _, v in rows), default=0.0)
    for label, v in rows:
        star = " *" if mark and label in mark else ""
        table.add_row(label + star, f"{v * 100:.1f}%" if pct else f"{v:.4g}", _bar(v, top))
    return table


def _probs(expl: dict[str, Any]) -> list[tuple[str, float]]:
    p = expl.get("probs")
    if isinstance(p, dict):
        return [(str(k), f) for k, v in p.items() if (f := _num(v)) is not None]
    return []


def _level_probs(expl: dict[str, Any]) -> list[tuple[str, float]]:
    lp = expl.get("level_probs")
    if isinstance(lp, list):
        return [(f"level {i}", f) for i, v in enumerate(lp) if (f := _num(v)) is not None]
    return []


def _time_label(t: Any) -> str:
    try:
        return ms_to_iso(int(t))[:16].replace("T", " ")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(t)


def window_of(info: dict[str, Any], engine: Any, data: str | None) -> dict[str, np.ndarray] | None:
    """The candles of the decision's window (the run's data file, else the journaled closes), or None."""
    d = info["decision"]
    bar_time = _num(d.get("bar_time"))
    if bar_time is None:
        return None
    a = attribution_of(d["explanation"], int(bar_time))
    market = explain_png.market_of(info)
    bar_ms = market.bar_ms if market else timeframe_ms("1h")
    t0 = min(a.times) if a and a.times else int(bar_time) - (explain_png.DEFAULT_SPAN - 1) * bar_ms
    if a and a.sparse_steps:
        t0 = min(t0, a.sparse_steps[0][0])
    return explain_png.window_candles(info, engine, data, t0 - bar_ms, int(bar_time), bar_ms)[1]


def render(info: dict[str, Any], candles: dict[str, np.ndarray] | None = None) -> None:
    """Print the explanation of one decision in the terminal: the story first, then the details."""
    d, run, expl = info["decision"], info["run"], info["decision"]["explanation"]
    console.print(Text(" ".join(story(d, info["orders"], info["fills"], candles)), style="bold"))
    head = Table(title=f"decision {d['id']}", show_header=False)
    head.add_column("key")
    head.add_column("value")
    for label, value in (("run", f"{d.get('run_id')} ({run.get('mode', '?')}, {run.get('strategy', '?')})"),
                         ("bar", _time_label(d.get("bar_time"))), ("symbol", d.get("symbol")),
                         ("status", d.get("status")), ("target", _fmt(d.get("target"))),
                         ("confidence", _fmt(d.get("confidence"))), ("price", _fmt(d.get("price"))),
                         ("model", d.get("model_id")), ("explanation kind", expl.get("kind")),
                         ("signal", expl.get("signal")), ("regime", expl.get("regime")),
                         ("recent share", _fmt(expl.get("recent_share")) if "recent_share" in expl else None),
                         ("head fusion", expl.get("head_fusion")),
                         ("method", expl.get("method") if isinstance(expl.get("method"), str) else None),
                         ("level", expl.get("level")),
                         ("fast / slow SMA", f"{_fmt(expl['fast_sma'])} / {_fmt(expl.get('slow_sma'))}"
                          if "fast_sma" in expl else None), ("error", d.get("error"))):
        if value is not None:
            head.add_row(label, str(value))
    if why := reasons(expl, 5, decision_reasons_fn(run, expl)):
        head.add_row("why", "\n".join(why))
    console.print(head)
    if not expl:
        console.print("[dim]this decision carries no explanation[/dim]")
    if probs := _probs(expl):
        console.print(bar_table("class probabilities", probs, pct=True))
    if levels := _level_probs(expl):
        console.print(bar_table("position level distribution", levels, pct=True))
    render_attribution(console, d, candles)
    for key, title in (("predicted_path", "predicted returns"), ("predicted_closes", "predicted closes")):
        vals = expl.get(key)
        if isinstance(vals, list) and vals:
            console.print(f"{title}: " + ", ".join(_fmt(v) for v in vals))
    other = {k: v for k, v in expl.items() if k not in _SHOWN}
    if other:
        console.print("other: " + dumps(other).replace("\n", " "))
    _records("orders caused", info["orders"], [
        ("id", "id"), ("side", "side"), ("type", "order_type"), ("qty", "qty"), ("status", "status"),
        ("filled", "filled_qty"), ("avg price", "avg_fill_price"), ("reject reason", "reject_reason")])
    _records("fills", info["fills"], [
        ("exec id", "exec_id"), ("order", "order_id"), ("side", "side"), ("qty", "qty"),
        ("price", "price"), ("fee", "fee"), ("fee in", "fee_currency"), ("time", "time")])


def _records(title: str, rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> None:
    table = Table(title=title)
    for label, _ in cols:
        table.add_column(label, no_wrap=label in ("id", "order", "exec id"))
    for r in rows:
        table.add_row(*[_time_label(r.get(k)) if k == "time" else _fmt(r.get(k)) for _, k in cols])
    console.print(table)
    if not rows:
        console.print(f"[dim](no {title.split()[0]})[/dim]")


def register(journal_app: typer.Typer) -> None:
    @journal_app.command("explain")
    def explain(
        ident: str = typer.Argument(..., help="Decision id, client order id or exchange order id."),
        png: Path | None = typer.Option(None, "--png", help="Also write a picture: candles above the attribution."),
        data: str | None = typer.Option(None, "--data", "-d",
                                        help="Candle file for --png (default: the run's own data file)."),
        symbol: str | None = typer.Option(None, "--symbol", "-s",
                                          help="Refuse a decision that is not of this market."),
        method: str | None = typer.Option(None, "--method", "-m",
                                          help="Recompute the attribution with this method (the strategy's "
                                               "explain_with; e.g. signed_grad_x_input, rollout)."),
        fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Why did the bot do this? The decision, its probabilities, orders, fills and attribution."""
        if fmt not in ("table", "json"):
            raise ConfigError(f"unknown --format {fmt!r}: expected table or json")
        cfg = load(config, set_, db=db)
        engine = open_database(cfg.storage.url)
        info = gather(engine, ident, symbol)
        if method is not None:
            from bot.cli.explain_method import recompute  # noqa: PLC0415 - builds the strategy (torch) only when asked

            expl = info["decision"]["explanation"]
            stored = attribution_of(expl)
            info["decision"]["explanation"] = {**expl, "attribution": recompute(info, method, data)}
            if fmt != "json":
                console.print(f"[dim]attribution recomputed with --method {method} (stored: "
                              f"{stored.method if stored else 'none'})[/dim]")
        if fmt == "json":  # times as ISO-8601 UTC, like every journal command's JSON
            sys.stdout.write(dumps({
                "decision": with_iso(info["decision"], "bar_time"),
                "run": with_iso(info["run"], "first_bar", "last_bar"),
                "orders": [with_iso(o, "created_time", "updated_time") for o in info["orders"]],
                "fills": [with_iso(f, "time") for f in info["fills"]],
            }) + "\n")
        else:
            render(info, window_of(info, engine, data))
        if png is not None:
            from bot.cli.explain_png import write_png  # noqa: PLC0415 - matplotlib only when asked

            write_png(info, png, engine, data)
            if fmt != "json":
                console.print(f"picture: {png}")
