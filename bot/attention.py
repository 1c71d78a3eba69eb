"""Attention statistics of a run, read from the journal: what the model looked at when it won or lost.

Works on any run whose decisions carry a window attribution (the explanation contract's
``attribution.steps``, or an old journal's ``attribution`` list + ``times``); other runs yield an
empty section. Signed attributions are shown as signed shares (+ = toward what ``toward`` says).
Profiles are indexed by steps before the decision bar, oldest first, so windows of one run line up step by step.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from bot.explanation import attribution_of
from bot.regime_view import regime_label
from storage import queries as q

BLOCKS = " ▁▂▃▄▅▆▇█"


def window_attribution(expl: dict[str, Any] | None, bar_time: Any = None) -> tuple[list[int], list[float]] | None:
    """(times, values) of a stored window attribution (the contract's ``attribution.steps``, or an old
    journal's ``attribution`` list + ``times``), or None when absent or malformed. Signed values are
    scaled to shares of their absolute sum, so windows of one run compare."""
    a = attribution_of(expl, bar_time)
    if a is None or not a.steps:
        return None
    w = a.steps
    if a.signed:
        total = sum(abs(x) for x in w)
        w = [x / total for x in w] if total > 0 else w
    return a.times, w


def toward_of(expl: dict[str, Any] | None) -> str | None:
    """What a positive value of the decision's attribution pushes toward (None: unsigned weights)."""
    a = attribution_of(expl)
    return a.toward if a is not None else None


def _profile(rows: list[list[float]], n: int) -> list[float] | None:
    """Mean attribution per step over windows right-aligned to length ``n`` (missing steps skipped)."""
    if not rows:
        return None
    m = np.full((len(rows), n), np.nan)
    for i, r in enumerate(rows):
        k = min(len(r), n)
        m[i, n - k:] = r[-k:]
    with np.errstate(invalid="ignore"):
        prof = np.nanmean(m, axis=0)
    return [float(x) if np.isfinite(x) else 0.0 for x in prof]


def attention_section(db: Engine, run_id: str) -> dict[str, Any]:
    """Mean attribution profile of winning vs losing trades (by entry decision) and the regime mix."""
    decisions = q.decisions(db, run_id)
    by_id: dict[str, dict[str, Any]] = {}
    regimes: Counter[str] = Counter()
    n = 0
    toward: str | None = None
    for d in decisions:
        expl = d.get("explanation")
        wa = window_attribution(expl, d.get("bar_time"))
        if wa is None:
            continue
        by_id[d["id"]] = d
        n = max(n, len(wa[1]))
        toward = toward or toward_of(expl)
        regimes[regime_label(expl) or "unknown"] += 1
    if not by_id:
        return {}
    win, lose = [], []
    win_regimes: Counter[str] = Counter()
    lose_regimes: Counter[str] = Counter()
    for t in q.trades(db, run_id):
        d = by_id.get(t.get("entry_decision_id") or "")
        if d is None:
            continue
        wa = window_attribution(d["explanation"], d.get("bar_time"))
        assert wa is not None
        regime = regime_label(d["explanation"]) or "unknown"
        if float(t["net_pnl"]) > 0:
            win.append(wa[1])
            win_regimes[regime] += 1
        else:
            lose.append(wa[1])
            lose_regimes[regime] += 1
    return {
        "window": n,
        "toward": toward,
        "decisions": sum(regimes.values()),
        "winning_trades": len(win),
        "losing_trades": len(lose),
        "profile_winning": _profile(win, n),
        "profile_losing": _profile(lose, n),
        "profile_all": _profile([window_attribution(d["explanation"], d.get("bar_time"))[1]  # type: ignore[index]
                                 for d in by_id.values()], n),
        "regime_mix": dict(regimes),
        "regime_mix_winning": dict(win_regimes),
        "regime_mix_losing": dict(lose_regimes),
    }


def _bins(profile: list[float] | None, n_bins: int) -> list[float] | None:
    if profile is None:
        return None
    return [float(sum(c)) for c in np.array_split(np.asarray(profile), n_bins)]


def sparkline(values: list[float]) -> str:
    """Block heights by |value| (signed profiles: the sign is in the table's numbers)."""
    top = max((abs(v) for v in values), default=0.0)
    if top <= 0:
        return " " * len(values)
    return "".join(BLOCKS[min(8, int(round(abs(v) / top * 8)))] for v in values)


def print_attention_section(console: Console, section: dict[str, Any], n_bins: int = 8) -> None:
    """Two rich tables: attribution mass per window segment (winners vs losers), and the regime mix."""
    if not section:
        return
    n = section["window"]
    edges = [len(c) for c in np.array_split(np.arange(n), n_bins)]
    toward = section.get("toward")
    what = (f"signed share of attribution, + = toward {toward}" if toward else "share of attribution")
    table = Table(title=f"attention: {what} per window segment ({n} steps, oldest first)")
    table.add_column("steps ago")
    for col in ("winning trades", "losing trades", "all decisions"):
        table.add_column(col, justify="right")
    cols = [_bins(section[k], n_bins) for k in ("profile_winning", "profile_losing", "profile_all")]
    hi = n
    for i, width in enumerate(edges):
        lo = hi - width
        row = [f"{hi}..{lo + 1}" if width > 1 else str(hi)]
        row += ["-" if c is None else f"{c[i] * 100:{'+' if toward else ''}.1f}%" for c in cols]
        table.add_row(*row)
        hi = lo
    table.add_row("profile", *["" if c is None else sparkline(c) for c in cols])
    console.print(table)
    if set(section["regime_mix"]) <= {"unknown"}:
        return  # the contract drops a regime label that says nothing: no mix to show
    mix = Table(title=f"attention: regime mix ({section['winning_trades']} winning, "
                      f"{section['losing_trades']} losing trades)")
    mix.add_column("regime")
    for col in ("decisions", "winning entries", "losing entries"):
        mix.add_column(col, justify="right")
    keys = ("regime_mix", "regime_mix_winning", "regime_mix_losing")
    totals = [sum(section[k].values()) or 1 for k in keys]
    for regime in sorted({r for k in keys for r in section[k]}):
        mix.add_row(regime, *[f"{section[k].get(regime, 0)} ({section[k].get(regime, 0) / tot * 100:.0f}%)"
                              for k, tot in zip(keys, totals, strict=True)])
    console.print(mix)


def print_run_attention(console: Console, db: Engine, run_id: str) -> None:
    """The rollout strategy's post-backtest section (its spec's ``summary_section``)."""
    print_attention_section(console, attention_section(db, run_id))
