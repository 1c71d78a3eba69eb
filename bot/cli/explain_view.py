"""The terminal view of ``bot journal explain``: the story, signed attribution bars with a legend,
the method and its faithfulness, and the rule in words (bot.explanation reads the contract)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bot.explanation import Attribution, attribution_of, faithfulness_words, num, opposite, rule_of, rule_words
from bot.report.story import candle_moves, top_older, toward_text

BAR_WIDTH = 40
UP, DOWN, PLAIN = "green", "red", "blue"


def _bar(value: float, top: float, signed: bool) -> str:
    if top <= 0:
        return ""
    n = int(round(abs(value) / top * BAR_WIDTH))
    colour = (UP if value >= 0 else DOWN) if signed else PLAIN
    return f"[{colour}]" + "█" * n + "[/]"


def legend(a: Attribution) -> str:
    """``█ toward up  █ toward down``, or what unsigned weights mean."""
    if a.toward is None:
        return f"[{PLAIN}]█[/] weight (unsigned: how much each input counted, not which way)"
    return f"[{UP}]█[/] {toward_text(a.toward, 1.0)}   [{DOWN}]█[/] {toward_text(a.toward, -1.0)}"


def signed_table(title: str, rows: list[tuple[str, float, str]], signed: bool, pct: bool = False) -> Table:
    """Label, value, bar (green/red by sign when ``signed``), note."""
    table = Table(title=title, show_edge=False, pad_edge=False)
    for col, just in (("", "left"), ("value", "right"), ("", "left"), ("", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    top = max((abs(v) for _, v, _ in rows), default=0.0)
    for label, v, note in rows:
        shown = f"{v * 100:.1f}%" if pct else f"{v:+.4g}" if signed else f"{v:.4g}"
        table.add_row(label, shown, _bar(v, top, signed), note)
    return table


def _time_label(t: int) -> str:
    from bot.report.reasons import fmt_time  # noqa: PLC0415 - a tiny helper, kept where it lives

    return fmt_time(t)


def render_attribution(console: Console, d: dict[str, Any], candles: dict[str, np.ndarray] | None) -> None:
    """Signed step and feature bars with their legend, then the method's faithfulness and the rule."""
    expl = d["explanation"]
    bar_time = int(t) if (t := num(d.get("bar_time"))) is not None else None
    a = attribution_of(expl, bar_time)
    if a is not None:
        _steps(console, a, bar_time, candles)
        if a.features:
            rows = sorted(a.features.items(), key=lambda kv: -abs(kv[1]))
            what = f" of {a.target}" if a.target else ""
            console.print(signed_table(f"features{what} (summed over the window, largest first)",
                                       [(k, v, "") for k, v in rows], a.signed))
        console.print("legend: " + legend(a))
        if a.signed and a.toward:
            console.print(f"[dim]a positive value pushes toward {a.toward}, a negative one toward "
                          f"{opposite(a.toward)}[/dim]")
        console.print("method: " + faithfulness_words(a))
    if rule := rule_of(expl):
        console.print("rule: " + rule_words(rule))


def _steps(console: Console, a: Attribution, bar_time: int | None, candles: dict[str, np.ndarray] | None) -> None:
    top = {t for t, _ in top_older(a, bar_time)}
    if a.steps:
        n = len(a.steps)
        times = a.times or []
        moves = candle_moves(candles, times)
        rows = []
        for i, v in enumerate(a.steps):
            t = times[i] if times else None
            label = _time_label(t) if t is not None else f"t-{n - 1 - i}"
            note = " ".join(x for x in ("*" if t in top else "", "newest" if i == n - 1 else "",
                                        moves[t].numbers() if t in moves else "") if x)
            rows.append((label, v, note))
        pct = a.toward is None and a.method == "rollout"
        console.print(signed_table(f"{'attribution' if a.signed else 'weight'} over the window ({n} steps, "
                                   "oldest first; * = most weight among older steps)", rows, a.signed, pct=pct))
    elif a.sparse_steps:
        console.print(signed_table("top time steps (the full window attribution is not stored for this decision)",
                                   [(_time_label(t), v, "") for t, v in a.sparse_steps], a.signed))
