"""Journal rows -> short human messages (title + body) for alerts (bot/alerts.py).

Every message is built from rows the journal has committed (fills, trades, events, equity
marks) and from nothing else, so it can only say what the journal says; bot/alerts.py still
passes its text through a redactor before it leaves the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.timeutil import ms_to_iso

#: Fills listed one per line in a fill message; more are counted.
MAX_FILL_LINES = 10


@dataclass(frozen=True, slots=True)
class Message:
    """One alert: its kind (the rate limit's key), a title, a body, a level (apprise's notify
    type: info, success, warning, failure) and how many journal items it tells of."""

    kind: str
    title: str
    body: str
    level: str = "info"
    items: int = 1

    def with_held(self, held: int, noun: str) -> Message:
        """This message, telling too of ``held`` earlier items the rate limit kept back."""
        if not held:
            return self
        return Message(self.kind, self.title, f"{self.body}\n+{held} earlier {noun} not alerted (rate limit)",
                       self.level, self.items)


#: What a held-back item of each kind is called in a message.
NOUNS = {"fill": "fills", "kill_switch": "kill switch alerts", "order_rejected": "rejections",
         "feed_stale": "stale-feed alerts", "reconcile": "reconciliation alerts", "daily_summary": "daily summaries"}


def num(v: Any) -> str:
    """A Decimal (or number) as the journal holds it, without exponent or float noise."""
    if isinstance(v, Decimal):
        return format(v.normalize(), "f")
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def money(v: float | Decimal) -> str:
    return f"{float(v):,.2f}"


def _head(run_id: str, mode: str) -> str:
    return f"run {run_id} ({mode})"


def fill_line(f: dict[str, Any]) -> str:
    return (f"{str(f['side']).lower()} {num(f['qty'])} {f['symbol']} @ {num(f['price'])}"
            f" (fee {num(f['fee'])}{' ' + f['fee_currency'] if f.get('fee_currency') else ''})")


def fills_message(run_id: str, mode: str, fills: list[dict[str, Any]], reasons: dict[str, str]) -> Message:
    """The fills of one committed batch; ``reasons`` maps an order id to why it was sent."""
    first = fills[0]
    if len(fills) == 1:
        title = f"Fill: {str(first['side']).lower()} {num(first['qty'])} {first['symbol']} @ {num(first['price'])}"
    else:
        symbols = ", ".join(dict.fromkeys(f["symbol"] for f in fills))
        title = f"{len(fills)} fills: {symbols}"
    lines = [_head(run_id, mode)]
    for f in fills[:MAX_FILL_LINES]:
        why = reasons.get(f["order_id"])
        lines.append(f"{fill_line(f)} at {ms_to_iso(int(f['time']))}, order {f['order_id']}"
                     + (f", {why}" if why else ""))
    if len(fills) > MAX_FILL_LINES:
        lines.append(f"and {len(fills) - MAX_FILL_LINES} more fills")
    return Message("fill", title, "\n".join(lines), "info", items=len(fills))


def _kill(run_id: str, mode: str, e: dict[str, Any], p: dict[str, Any]) -> Message:
    extra = ", ".join(f"{k} {num(v)}" for k, v in p.items() if k not in ("reason", "equity", "action"))
    action = "positions closed" if p.get("action") == "flatten" else "positions kept, trading frozen"
    body = [_head(run_id, mode), f"reason: {p.get('reason')}", f"equity: {money(p.get('equity') or 0)}",
            f"action: {p.get('action')} ({action})", f"time: {ms_to_iso(int(e['time']))}"]
    if extra:
        body.append(f"detail: {extra}")
    return Message("kill_switch", f"Kill switch: {p.get('reason')}", "\n".join(body), "failure")


def _rejected(run_id: str, mode: str, e: dict[str, Any], p: dict[str, Any],
              orders: dict[str, dict[str, Any]]) -> Message:
    oid = str(p.get("order_id"))
    o = orders.get(oid)
    what = f"{str(o['side']).lower()} {num(o['qty'])} {o['symbol']}" if o else oid
    body = [_head(run_id, mode), f"order: {oid}"]
    if o:
        body += [f"symbol: {o['symbol']}", f"side: {str(o['side']).lower()}", f"qty: {num(o['qty'])}"]
    body += [f"reason: {p.get('reason') or 'not given'}", f"time: {ms_to_iso(int(e['time']))}"]
    return Message("order_rejected", f"Order rejected: {what}", "\n".join(body), "warning")


def _stale(run_id: str, mode: str, e: dict[str, Any], p: dict[str, Any]) -> Message:
    behind = int(p.get("behind_ms") or 0)
    last = p.get("last_bar")
    body = [_head(run_id, mode), f"symbol: {p.get('symbol')}",
            f"last bar: {ms_to_iso(int(last)) if last is not None else 'none yet'}",
            f"behind: {behind / 60_000:.1f} min"]
    return Message("feed_stale", f"Feed stale: {p.get('symbol')} {behind / 60_000:.0f} min behind",
                   "\n".join(body), "warning")


def reconcile_trouble(kind: str, p: dict[str, Any]) -> bool:
    """A start-up reconciliation that found something (a position difference, orders adopted from
    the venue or resolved as never sent); every periodic one is journaled only when it did."""
    if kind == "reconcile_periodic":
        return True
    return bool(p.get("position_venue") != p.get("position_journal") or p.get("adopted") or p.get("resolved"))


def _reconcile(run_id: str, mode: str, e: dict[str, Any], p: dict[str, Any]) -> Message:
    sym = p.get("symbol")
    body = [_head(run_id, mode), f"symbol: {sym}"]
    if e["kind"] == "reconcile":
        body.append(f"position: venue {p.get('position_venue')}, journal {p.get('position_journal')}")
        for key in ("dust", "adopted", "resolved"):
            if p.get(key):
                v = p[key]
                body.append(f"{key}: {', '.join(v) if isinstance(v, list) else v}")
        title = f"Reconciliation: {sym} differs from the venue"
    else:
        if "qty_books" in p:
            body.append(f"position: books {p['qty_books']}, venue {p['qty_venue']} (resynced to the venue)")
            body.append(f"cash: books {p['cash_books']}, venue {p['cash_venue']}")
        if p.get("fills_recovered"):
            body.append(f"fills recovered from the venue: {p['fills_recovered']}")
        title = f"Reconciliation: {sym} books resynced" if "qty_books" in p else f"Reconciliation: {sym} missed fills"
    body.append(f"time: {ms_to_iso(int(e['time']))}")
    return Message("reconcile", title, "\n".join(body), "failure" if "qty_books" in p else "warning")


def decision_reason(d: dict[str, Any]) -> str:
    """Why a decision's order went out, in a few words (its target, or the kill switch)."""
    why = (d.get("explanation") or {}).get("kill_switch") if isinstance(d.get("explanation"), dict) else None
    if why:
        return f"kill switch ({why})"
    conf = d.get("confidence")
    target = f"target {float(d.get('target') or 0):+.2f}"
    return target if conf is None else f"{target}, confidence {float(conf):.2f}"


def event_message(run_id: str, mode: str, e: dict[str, Any], orders: dict[str, dict[str, Any]]) -> Message | None:
    """The message of a journaled event, or None when the event is not one that alerts."""
    kind, p = e["kind"], e.get("payload") or {}
    if kind == "kill_switch":
        return _kill(run_id, mode, e, p)
    if kind == "order_rejected":
        return _rejected(run_id, mode, e, p, orders)
    if kind == "feed_stale":
        return _stale(run_id, mode, e, p)
    if kind in ("reconcile", "reconcile_periodic") and reconcile_trouble(kind, p):
        return _reconcile(run_id, mode, e, p)
    return None


@dataclass
class Tally:
    """What a span of the run did, from its committed rows: fills, trades, their net PnL, the
    last equity mark."""

    fills: int = 0
    trades: int = 0
    net_pnl: Decimal = Decimal(0)
    equity: float | None = None
    equity_time: int = -1


def daily_message(run_id: str, mode: str, day_ms: int, t: Tally, start_equity: float | None) -> Message:
    day = ms_to_iso(day_ms)[:10]
    body = [_head(run_id, mode)]
    if t.equity is not None:
        body.append(f"equity: {money(t.equity)}")
        if start_equity:
            pnl = t.equity - start_equity
            body.append(f"day's PnL: {pnl:+,.2f} ({pnl / start_equity:+.2%})")
    body += [f"fills: {t.fills}", f"trades closed: {t.trades} (net {t.net_pnl:+,.2f})"]
    return Message("daily_summary", f"Daily summary {day}", "\n".join(body), "info")


def run_end_message(run_id: str, mode: str, status: str, total: Tally, initial: float | None,
                    held: dict[str, int]) -> Message:
    """``initial``: the run's starting cash, or None for a resumed run (whose counts start at the resume)."""
    body = [_head(run_id, mode), f"status: {status}"]
    if total.equity is not None:
        body.append(f"equity: {money(total.equity)}")
        if initial:
            body.append(f"return: {total.equity / initial - 1:+.2%} on {money(initial)}")
    since = "" if initial else " since the resume"
    body += [f"fills{since}: {total.fills}", f"trades closed{since}: {total.trades} (net {total.net_pnl:+,.2f})"]
    if held:
        body.append("not alerted (rate limit): " + ", ".join(f"{n} {NOUNS.get(k, k)}" for k, n in held.items()))
    level = "success" if status == "completed" else "warning" if status in ("stopped", "interrupted") else "failure"
    return Message("run_end", f"Run {run_id} {status}", "\n".join(body), level)
