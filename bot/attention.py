"""Attention statistics of a run, read from the journal: what the model looked at when it won or lost.

Works on any run whose decisions carry a window attribution (``attribution`` + ``times``, the
``rollout`` explanation); other runs yield an empty section. Profiles are indexed by steps before
the decision bar, oldest first, so windows of one run line up step by step.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from storage import queries as q

BLOCKS = " ▁▂▃▄▅▆▇█"


def window_attribution(expl: dict[str, Any] | None) -> tuple[list[int], list[float]] | None:
    """(times, weights) of a stored window attribution, or None when absent or malformed."""
    if not isinstance(expl, dict):
        return None
    weights = expl.get("attribution")
    if isinstance(weights, dict):  # the explanation contract (issue 14): its steps, oldest first
        weights = weights.get("steps")
    if not isinstance(weights, list) or not weights:
        return None
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(x) for x in w):
        return None
    times = expl.get("times")
    if isinstance(times, list) and len(times) == len(w) and all(isinstance(t, int | float) for t in times):
        return [int(t) for t in times], w
    return [], w


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
    for d in decisions:
        expl = d.get("explanation")
        wa = window_attribution(expl)
        if wa is None:
            continue
        by_id[d["id"]] = d
        n = max(n, len(wa[1]))
        regimes[str(expl.get("regime", "unknown"))] += 1
    if not by_id:
        return {}
    win, lose = [], []
    win_regimes: Counter[str] = Counter()
    lose_regimes: Counter[str] = Counter()
    for t in q.trades(db, run_id):
        d = by_id.get(t.get("entry_decision_id") or "")
        if d is None:
            continue
        wa = window_attribution(d["explanation"])
        assert wa is not None
        regime = str(d["explanation"].get("regime", "unknown"))
        if float(t["net_pnl"]) > 0:
            win.append(wa[1])
            win_regimes[regime] += 1
        else:
            lose.append(wa[1])
            lose_regimes[regime] += 1
    return {
        "window": n,
        "decisions": sum(regimes.values()),
        "winning_trades": len(win),
        "losing_trades": len(lose),
        "profile_winning": _profile(win, n),
        "profile_losing": _profile(lose, n),
        "profile_all": _profile([window_attribution(d["explanation"])[1] for d in by_id.values()], n),  # type: ignore[index]
        "regime_mix": dict(regimes),
        "regime_mix_winning": dict(win_regimes),
        "regime_mix_losing": dict(lose_regimes),
    }


def _bins(profile: list[float] | None, n_bins: int) -> list[float] | None:
    if profile is None:
        return None
    return [float(sum(c)) for c in np.array_split(np.asarray(profile), n_bins)]


def sparkline(values: list[float]) -> str:
    top = max(values) if values else 0.0
    if top <= 0:
        return " " * len(values)
    return "".join(BLOCKS[min(8, int(round(v / top * 8)))] for v in values)


def print_attention_section(console: Console, section: dict[str, Any], n_bins: int = 8) -> None:
    """Two rich tables: attribution mass per window segment (winners vs losers), and the regime mix."""
    if not section:
        return
    n = section["window"]
    edges = [len(c) for c in np.array_split(np.arange(n), n_bins)]
    table = Table(title=f"attention: share of attribution per window segment ({n} steps, oldest first)")
    table.add_column("steps ago")
    for col in ("winning trades", "losing trades", "all decisions"):
        table.add_column(col, justify="right")
    cols = [_bins(section[k], n_bins) for k in ("profile_winning", "profile_losing", "profile_all")]
    hi = n
    for i, width in enumerate(edges):
        lo = hi - width
        row = [f"{hi}..{lo + 1}" if width > 1 else str(hi)]
        row += ["-" if c is None else f"{c[i] * 100:.1f}%" for c in cols]
        table.add_row(*row)
        hi = lo
    table.add_row("profile", *["" if c is None else sparkline(c) for c in cols])
    console.print(table)
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
