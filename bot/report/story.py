"""A decision told in one or two sentences a trader reads: what was done, the rule, where the weight was.

"Bought 0.12 BTC at 64,210: p(up) = 0.56 >= 0.50. Most weight on the candles of 14:00 and 09:00
(both sharp down moves) and on rsi_14 and volume_ratio (pushing toward up)." Built from the
decision, its orders and fills, the contract's ``rule`` and ``attribution`` (bot.explanation) and,
when available, the candles of the window (what those candles did). ``bot journal explain``
prints it; the dashboard shows :func:`first_sentence`. Malformed parts give a shorter story.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from bot.domain import base_coin
from bot.explanation import Attribution, attribution_of, num, opposite, rule_condition, rule_of

#: Candles in the story sentence, and features.
TOP = 2


@dataclass(frozen=True, slots=True)
class Move:
    """What one candle did: its return (close vs open, else vs the previous close) and range."""

    ret: float
    range: float | None
    word: str        # "sharp down move", "up move", "small up move", "flat candle"

    def numbers(self) -> str:
        rng = f", range {self.range * 100:.1f} %" if self.range is not None else ""
        return f"{self.ret * 100:+.1f} %{rng}"


def _qty(v: Any) -> str:
    try:
        d = Decimal(str(v)).normalize()
    except (InvalidOperation, ValueError):
        return str(v)
    return format(d, "f")


def price_text(p: float) -> str:
    return f"{p:,.0f}" if p >= 1000 else f"{p:,.2f}" if p >= 1 else f"{p:.4g}"


def clock(t: int, ref: int | None) -> str:
    """``14:00`` on the decision's UTC day, ``Mar 02 14:00`` on another."""
    dt = datetime.fromtimestamp(t / 1000, tz=UTC)
    same = ref is not None and datetime.fromtimestamp(ref / 1000, tz=UTC).date() == dt.date()
    return dt.strftime("%H:%M" if same else "%b %d %H:%M")


# -- what was done ------------------------------------------------------------------------------
def _filled(fills: list[dict[str, Any]], side: str) -> tuple[float, float] | None:
    rows = [(q, p) for f in fills if str(f.get("side", "")).lower() == side
            and (q := num(f.get("qty"))) is not None and (p := num(f.get("price"))) is not None]
    qty = sum(q for q, _ in rows)
    return (qty, sum(q * p for q, p in rows) / qty) if qty > 0 else None


def action(decision: dict[str, Any], orders: list[dict[str, Any]] | None = None,
           fills: list[dict[str, Any]] | None = None) -> str:
    """``Bought 0.12 BTC at 64,210``, ``Stayed flat``, ...; orders/fills None: said from the target."""
    base = base_coin(str(decision.get("symbol") or "?USDT"))
    parts = []
    for side, verb in (("buy", "Bought"), ("sell", "Sold")):
        if got := _filled(fills or [], side):
            parts.append(f"{verb if not parts else verb.lower()} {_qty(round(got[0], 10))} {base} "
                         f"at {price_text(got[1])}")
    if parts:
        return " and ".join(parts)
    status, target = str(decision.get("status") or ""), num(decision.get("target"))
    if orders:
        o = orders[0]
        verb = "buy" if str(o.get("side", "")).lower() == "buy" else "sell"
        why = f": {o['reject_reason']}" if o.get("reject_reason") else ""
        return f"Tried to {verb} {_qty(o.get('qty'))} {base} (order {o.get('status', '?')}{why})"
    if status == "error":
        return "Failed (no trade)"
    if target is None:
        return "No trade" + (" (warm-up)" if status == "no_trade" else "")
    side = "long" if target > 0 else "short" if target < 0 else "flat"
    size = f" {abs(target) * 100:.0f} % of equity" if target else ""
    if status in ("blocked", "frozen"):
        return f"Wanted {side}{size}, {'blocked by risk' if status == 'blocked' else 'frozen by a kill switch'}"
    if orders is None and status != "hold":
        return f"Target {side}{size}"
    return f"Stayed {side}" if not target else f"Held {side}{size}"


def _old_rule(expl: dict[str, Any]) -> str | None:
    """What old explanations said instead of a rule: the signal and class or level probabilities."""
    p = expl.get("probs")
    if isinstance(p, dict):
        probs = ", ".join(f"p({k}) = {v:.2f}" for k in ("up", "flat", "down") if (v := num(p.get(k))) is not None)
        sig = expl.get("signal")
        return ", ".join(x for x in (f"signal {sig}" if isinstance(sig, str) else "", probs) if x) or None
    if (lv := num(expl.get("level"))) is not None:
        return f"level {lv:.0f} of 10"
    return None


def first_sentence(decision: dict[str, Any], orders: list[dict[str, Any]] | None = None,
                   fills: list[dict[str, Any]] | None = None) -> str:
    """What was done and the rule that made it: ``Bought 0.12 BTC at 64,210: p(up) = 0.56 >= 0.50.``"""
    expl = decision.get("explanation") if isinstance(decision.get("explanation"), dict) else {}
    rule = rule_of(expl)
    why = rule_condition(rule["text"]) if rule else _old_rule(expl)
    if why is None and decision.get("status") == "error" and decision.get("error"):
        why = str(decision["error"]).splitlines()[0]
    head = action(decision, orders, fills)
    return f"{head}: {why}." if why else f"{head}."


# -- where the weight was -----------------------------------------------------------------------
def candle_moves(candles: dict[str, np.ndarray] | None, times: list[int]) -> dict[int, Move]:
    """What each candle at ``times`` did, judged against the typical move of those candles."""
    if not candles or "close" not in candles or not times:
        return {}
    t = np.asarray(candles["time"], dtype=np.int64)
    close = np.asarray(candles["close"], dtype=float)
    raw: dict[int, tuple[float, float | None]] = {}
    for when in times:
        i = int(np.searchsorted(t, when))
        if i >= len(t) or t[i] != when:
            continue
        if "open" in candles and candles["open"][i] > 0:
            o = float(candles["open"][i])
            raw[when] = (close[i] / o - 1, (float(candles["high"][i]) - float(candles["low"][i])) / o)
        elif i > 0 and close[i - 1] > 0:
            raw[when] = (close[i] / close[i - 1] - 1, None)
    if not raw:
        return {}
    # "sharp" against the typical candle of what was loaded (the window), not just the named ones
    if "open" in candles:
        o = np.asarray(candles["open"], dtype=float)
        every = np.abs(close[o > 0] / o[o > 0] - 1)
    else:
        every = np.abs(np.diff(close) / close[:-1]) if len(close) > 1 else np.zeros(0)
    typical = float(np.median(every)) if len(every) else float(np.median([abs(r) for r, _ in raw.values()]))
    out = {}
    for when, (r, rng) in raw.items():
        if r == 0:
            word = "flat candle"
        else:
            size = "sharp " if typical > 0 and abs(r) >= 2 * typical else \
                "small " if abs(r) < 0.5 * typical else ""
            word = f"{size}{'up' if r > 0 else 'down'} move"
        out[when] = Move(r, rng, word)
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _moves_text(moves: list[Move | None]) -> str:
    known = [m for m in moves if m is not None]
    if not known or len(known) < len(moves):
        return ""
    words = [m.word for m in known]
    if len(set(words)) == 1 and len(words) > 1:
        return f" ({'both' if len(words) == 2 else 'all'} {words[0]}s)"
    return f" ({_and([_a(w) for w in words])})"


def toward_text(toward: str, value: float) -> str:
    where = toward if value >= 0 else opposite(toward)
    return f"toward {'a ' if where.endswith('position') else ''}{where}"


def _features_text(a: Attribution) -> str:
    if not a.features:
        return ""
    top = sorted(a.features.items(), key=lambda kv: -abs(kv[1]))[:TOP]
    top = [(k, v) for k, v in top if v != 0]
    if not top:
        return ""
    if a.toward is None:
        return _and([k for k, _ in top])
    pushes = {toward_text(a.toward, v) for _, v in top}
    if len(pushes) == 1:
        return f"{_and([k for k, _ in top])} (pushing {pushes.pop()})"
    return _and([f"{k} (pushing {toward_text(a.toward, v)})" for k, v in top])


def top_older(a: Attribution, bar_time: int | None) -> list[tuple[int, float]]:
    """(time, value) of the most weighted older steps (never the newest bar), largest |value| first."""
    if a.steps and a.times:
        pairs = list(zip(a.times[:-1], a.steps[:-1], strict=True))
    else:
        pairs = [(t, v) for t, v in a.sparse_steps if t != bar_time]
    return [(t, v) for t, v in sorted(pairs, key=lambda p: -abs(p[1]))[:TOP] if v != 0]


def weight_sentence(a: Attribution, bar_time: int | None, moves: dict[int, Move]) -> str | None:
    """``Most weight on the candles of 14:00 and 09:00 (both sharp down moves) and on rsi_14 ...``"""
    steps = top_older(a, bar_time)
    feats = _features_text(a)
    bits = []
    if steps:
        times = [t for t, _ in steps]
        bits.append(f"the candle{'s' if len(times) > 1 else ''} of {_and([clock(t, bar_time) for t in times])}"
                    + _moves_text([moves.get(t) for t in times]))
    if feats:
        bits.append(feats)
    if not bits:
        return None
    return "Most weight on " + " and on ".join(bits) + "."


def newest_sentence(a: Attribution, bar_time: int | None, moves: dict[int, Move]) -> str | None:
    """The newest bar's share of the weight, said apart (it is where recent-bar methods pile up)."""
    if len(a.steps) < 2:
        return None
    total = sum(abs(v) for v in a.steps)
    if total <= 0:
        return None
    t = a.times[-1] if a.times else bar_time
    when = clock(t, bar_time) if t is not None else "the decision bar"
    move = moves.get(t) if t is not None else None
    what = f", {move.word} {move.ret * 100:+.1f} %" if move else ""
    sign = f", pushing {toward_text(a.toward, a.steps[-1])}" if a.toward and a.steps[-1] else ""
    return f"The newest candle ({when}{what}) carries {abs(a.steps[-1]) / total * 100:.0f} % of the weight{sign}."


def story(decision: dict[str, Any], orders: list[dict[str, Any]] | None, fills: list[dict[str, Any]] | None,
          candles: dict[str, np.ndarray] | None = None) -> list[str]:
    """The sentences opening ``bot journal explain``: what and why, where the weight was, the newest bar."""
    out = [first_sentence(decision, orders, fills)]
    bar_time = int(t) if (t := num(decision.get("bar_time"))) is not None else None
    a = attribution_of(decision.get("explanation"), bar_time)
    if a is None:
        return out
    times = [tm for tm, _ in top_older(a, bar_time)] + ([a.times[-1]] if a.times else [])
    moves = candle_moves(candles, sorted(set(a.times) | set(times)))
    out += [s for s in (weight_sentence(a, bar_time, moves), newest_sentence(a, bar_time, moves)) if s]
    return out
