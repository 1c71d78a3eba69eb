"""What the API computes from journal rows: positions, alerts, a drawable equity curve, decisions
with their one-line "why". Reads go through storage (queries, pages); nothing here writes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from bot.api.encode import iso_ms, row
from bot.domain import Side, fee_in_base, held_change
from bot.report.reasons import decision_reasons_fn, reasons
from bot.report.story import first_sentence
from bot.summary import replay_fills, run_markets
from storage import pages
from storage import queries as q

# -- equity ---------------------------------------------------------------------------------------


def downsample(rows: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most ``max_points`` rows that draw like all of them: the first and the last, and between
    them the lowest and the highest equity of each stretch (so no drawdown is smoothed away)."""
    n = len(rows)
    if n <= max_points:
        return rows
    buckets = max(1, (max_points - 2) // 2)
    edges = [1 + (n - 2) * i // buckets for i in range(buckets + 1)]
    out = [rows[0]]
    for a, b in zip(edges, edges[1:], strict=False):
        if a >= b:
            continue
        lo = min(range(a, b), key=lambda i: rows[i]["equity"])
        hi = max(range(a, b), key=lambda i: rows[i]["equity"])
        out.extend(rows[i] for i in sorted({lo, hi}))
    out.append(rows[-1])
    return out


# -- positions ------------------------------------------------------------------------------------


def positions(db: Engine, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each market's position now: the quantity of its latest equity mark plus the fills since
    that bar closed, with entry price, realised PnL and fees replayed from its fills."""
    markets = run_markets(run)
    marks = pages.last_marks(db, run["id"], [m.symbol for m in markets])
    working = pages.working_orders(db, run["id"])
    out = []
    for m in markets:
        fills = q.fills(db, run["id"], symbol=m.symbol)
        book = replay_fills(fills)
        mark = marks.get(m.symbol)
        if mark is None:
            qty, price = book.qty, None
        else:
            closed = mark["time"] + m.bar_ms
            after = sum((_held(f) for f in fills if f["time"] >= closed), Decimal(0))
            qty, price = (Decimal(repr(float(mark["position"]))) + after).normalize(), float(mark["price"])
        unrealised = float(qty * (Decimal(repr(price)) - book.avg_price)) if qty and price and book.avg_price else 0.0
        out.append({
            "symbol": m.symbol, "timeframe": m.timeframe, "strategy": m.strategy,
            "side": "long" if qty > 0 else "short" if qty < 0 else "flat", "qty": qty,
            "avg_entry_price": book.avg_price if qty else None,
            "mark_price": price, "mark_time": mark["time"] if mark else None,
            "notional": float(qty) * price if price is not None else None,
            "unrealized_pnl": unrealised, "realized_pnl": book.realized, "fees": book.fees,
            "working_orders": sum(1 for o in working if o["symbol"] == m.symbol),
        })
    return [row(p) for p in out]


def _held(f: dict[str, Any]) -> Decimal:
    return held_change(Side(f["side"]), Decimal(str(f["qty"])), Decimal(str(f["fee"])),
                       fee_in_base(f["symbol"], f["fee_currency"]))


# -- decisions ------------------------------------------------------------------------------------


def decision(run: dict[str, Any], d: dict[str, Any], explanation: bool = False) -> dict[str, Any]:
    """A decision row with its reasons (the lines ``bot journal explain`` shows) and a one-line ``why``."""
    expl = d.get("explanation") if isinstance(d.get("explanation"), dict) else {}
    lines = reasons(expl, 3, decision_reasons_fn(run, expl)) if expl else []
    out = row({k: v for k, v in d.items() if explanation or k != "explanation"})
    # A model decision in the explanation contract's shape says it in a sentence (journal explain's
    # first); others (sma, plugins, old journals) keep their reasons lines.
    contract = isinstance(expl.get("rule"), dict) or isinstance(expl.get("attribution"), dict)
    why = first_sentence({**d, "explanation": expl}) if contract else " · ".join(lines)
    if not why:
        why = d.get("error") or {"no_trade": "no target (warm-up)", "catch_up": "catch-up bar: never traded"}.get(
            str(d.get("status")), "")
    return {**out, "why": why, "reasons": lines}


# -- alerts ---------------------------------------------------------------------------------------

#: Event kinds a trader is warned of, and how loudly (``reconcile`` only when it found trouble).
ALERT_KINDS: dict[str, str] = {
    "kill_switch": "bad", "order_rejected": "bad", "reconcile_mismatch": "bad", "resume_mismatch": "bad",
    "order_blocked": "warn", "feed_stale": "warn", "feed_gap": "warn", "feed_reconnect": "warn",
    "data_gaps": "warn", "reconcile": "warn", "reconcile_periodic": "warn", "order_adopted": "warn",
    "fills_recovered": "warn", "feature_drift": "warn", "in_sample": "warn", "other_market": "warn",
}


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _pct(v: Any) -> str:
    f = _num(v)
    return "?" if f is None else f"{f:.1%}"


def _reconcile(p: dict[str, Any]) -> tuple[str, str] | None:
    sym = p.get("symbol") or ""
    venue, journal = _num(p.get("position_venue")), _num(p.get("position_journal"))
    if venue is not None and journal is not None and venue != journal and not p.get("dust"):
        return "bad", f"{sym}: reconcile found the venue holding {p.get('position_venue')}, the journal " \
                      f"{p.get('position_journal')}"
    repaired = {"fills added": p.get("fills_added") or 0, "orders adopted": len(p.get("adopted") or []),
                "orders resolved": len(p.get("resolved") or []), "orders updated": len(p.get("updated") or [])}
    done = [f"{n} {what}" for what, n in repaired.items() if n]
    return ("warn", f"{sym}: reconcile repaired the journal: " + ", ".join(done)) if done else None


def _kill(p: dict[str, Any]) -> str:
    if "notional" in p:
        detail = f"notional {_num(p['notional']) or 0:,.0f} (limit {_num(p.get('limit')) or 0:,.0f})"
    else:
        key = "drawdown" if "drawdown" in p else "daily_loss"
        detail = f"{key.replace('_', ' ')} {_pct(p.get(key))} (limit {_pct(p.get('limit'))})"
    return f"kill switch {p.get('reason')}: {detail}, {p.get('action') or 'flatten'}"


def _message(kind: str, p: dict[str, Any]) -> str:
    sym = f"{p['symbol']}: " if p.get("symbol") else ""
    if kind == "kill_switch":
        return _kill(p)
    if kind in ("order_rejected", "order_blocked"):
        what = "rejected" if kind == "order_rejected" else "blocked by risk"
        return f"order {p.get('order_id') or p.get('decision_id') or ''} {what}: {p.get('reason') or '?'}"
    if kind == "feed_stale":
        return f"{sym}feed stale, {(_num(p.get('behind_ms')) or 0) / 1000:,.0f} s behind"
    if kind == "feed_gap":
        after = iso_ms(int(p["after"])) if isinstance(p.get("after"), int) else "?"
        return f"{sym}{p.get('missing_bars')} bars missing after {after}"
    if kind == "feed_reconnect":
        return f"feed reconnecting: {p.get('error') or '?'}"
    if kind == "data_gaps":
        filler = f", {p['filler_dropped']} filler candles dropped" if p.get("filler_dropped") else ""
        return f"{sym}{p.get('count')} gaps in the data, {p.get('missing_bars')} bars missing{filler}"
    if kind == "feature_drift":
        worst = ", ".join(str(w.get("feature")) for w in p.get("worst") or [] if isinstance(w, dict))
        return f"{sym}feature drift: {p.get('drifting')} features far from the training statistics ({worst})"
    if kind == "in_sample":
        return f"{sym}{p.get('bars')} traded bars lie in the checkpoint's fitted range ({p.get('fitted')}): in-sample"
    if kind == "other_market":
        return (f"{sym}checkpoint fitted on {p.get('fitted_symbol')} {p.get('fitted_timeframe')}, the market is "
                f"{p.get('symbol')} {p.get('timeframe')} (allowed)")
    if kind == "reconcile_periodic":
        return f"{sym}periodic reconcile: {p.get('fills_recovered') or 0} fills recovered, books resynced"
    if kind == "reconcile_mismatch":
        return f"paper wallet holds {p.get('broker_qty')}, the engine marked {p.get('engine_qty')}"
    if kind == "resume_mismatch":
        return f"{sym}{p.get('bars')} bars decided differently after the resume"
    if kind == "order_adopted":
        return f"venue order {p.get('order_id')} adopted ({p.get('status')})"
    if kind == "fills_recovered":
        return f"{p.get('count')} fills recovered from the venue"
    return kind


def alert(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event as an alert (time, kind, severity, message), or None when it is no trouble."""
    kind = str(event.get("kind"))
    if kind not in ALERT_KINDS:
        return None
    p = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    if kind == "reconcile":
        found = _reconcile(p)
        if found is None:
            return None
        severity, message = found
    else:
        severity, message = ALERT_KINDS[kind], _message(kind, p)
    return row({"id": event.get("id"), "time": event.get("time"), "kind": kind, "severity": severity,
                "symbol": p.get("symbol"), "message": message, "payload": p})


def alerts(db: Engine, run_id: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """The run's alerts, newest first: alert-kind events scanned a chunk at a time."""
    out: list[dict[str, Any]] = []
    skipped, at, chunk = 0, 0, 500
    while len(out) < limit:
        events, total = pages.page(db, "events", run_id, limit=chunk, offset=at, kinds=ALERT_KINDS)
        for e in events:
            a = alert(e)
            if a is None:
                continue
            if skipped < offset:
                skipped += 1
            elif len(out) < limit:
                out.append(a)
        at += chunk
        if at >= total:
            break
    return out
