"""The picture behind ``bot journal explain ID --png FILE``: candles above the model's attribution.

Candles come from ``--data``, else from the run's own data file, else the closes stored in the
journal's equity curve; when none is available the picture says so instead of failing. The x axis
counts bars relative to the decision bar (0), so candles and attribution line up step by step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bot.domain import timeframe_ms
from bot.errors import BotError, ConfigError
from bot.explanation import Attribution, attribution_of, method_name
from bot.feeds.replay import load_candles
from bot.summary import RunMarket, run_markets
from bot.timeutil import ms_to_iso
from storage import queries as q

DEFAULT_SPAN = 48  # bars drawn when the explanation stores no window


def _num(v: Any) -> float | None:
    """A finite float, or None for anything that is not one (explanations may be partial)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def market_of(info: dict[str, Any]) -> RunMarket | None:
    """The decision's market of its run (a multi-market run's timeframe column is a list)."""
    sym = info["decision"].get("symbol")
    markets = run_markets(info["run"]) if info["run"] else []
    return next((m for m in markets if m.symbol == sym), markets[0] if len(markets) == 1 else None)


def data_file(run: dict[str, Any], symbol: str | None) -> str | None:
    """The run's data file for ``symbol``: a multi-market backtest journals one per market, ';'-joined."""
    files = str(run.get("data_source") or "").split(";")
    symbols = q.run_symbols(run)
    if len(files) == len(symbols) > 1 and symbol in symbols:
        return files[symbols.index(symbol)]
    return files[0] or None


def window_candles(info: dict[str, Any], engine: Any, data: str | None, t0: int, t1: int,
             bar_ms: int) -> tuple[str, dict[str, np.ndarray] | None]:
    """(source label, OHLC arrays over [t0, t1]) or (reason, None)."""
    run, d = info["run"], info["decision"]
    market = market_of(info)
    path = data or data_file(run, d.get("symbol"))
    if path and Path(path).is_file():
        try:
            c = load_candles(path, symbol=d.get("symbol") or "?", timeframe=market.timeframe if market else "1h",
                             bar_ms=bar_ms, start_ms=t0, end_ms=t1 + bar_ms)
            return Path(path).name, {"time": c.time, "open": c.open, "high": c.high, "low": c.low,
                                     "close": c.close}
        except BotError:
            pass
    rows = [r for r in q.equity(engine, d["run_id"], symbol=d.get("symbol")) if t0 <= r["time"] <= t1] \
        if d.get("run_id") else []
    if rows:
        t = np.array([r["time"] for r in rows], dtype=np.int64)
        c = np.array([r["price"] for r in rows], dtype=float)
        return "journal closes", {"time": t, "close": c}
    return "no candles available (pass --data FILE)", None


def write_png(info: dict[str, Any], path: Path, engine: Any, data: str | None = None) -> None:
    """Draw candles (top) and the explanation's attribution (bottom) into ``path``."""
    import matplotlib  # noqa: PLC0415 - headless, imported only for --png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    d, expl = info["decision"], info["decision"]["explanation"]
    market = market_of(info)
    bar_ms = market.bar_ms if market else timeframe_ms("1h")
    t_dec = int(d["bar_time"])
    a = attribution_of(expl, t_dec)
    times = a.times if a and a.times else [t for t, _ in a.sparse_steps] if a else []
    t0 = min(times) if times else t_dec - (DEFAULT_SPAN - 1) * bar_ms
    t1 = max([t_dec] + [int(f["time"]) for f in info["fills"]])  # fills land on a later bar's open
    source, ohlc = window_candles(info, engine, data, t0, min(t1, t_dec + 24 * bar_ms), bar_ms)

    def x(t: Any) -> np.ndarray:
        return (np.asarray(t, dtype=np.int64) - t_dec) / bar_ms

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5),
                                      gridspec_kw={"height_ratios": [3, 2]})
    if ohlc is None:
        top.text(0.5, 0.5, source, ha="center", va="center", transform=top.transAxes)
    elif "open" in ohlc:
        xs = x(ohlc["time"])
        up = ohlc["close"] >= ohlc["open"]
        colors = np.where(up, "#26a69a", "#ef5350")
        top.vlines(xs, ohlc["low"], ohlc["high"], colors=colors, linewidth=0.8)
        body_lo = np.minimum(ohlc["open"], ohlc["close"])
        body_h = np.maximum(np.abs(ohlc["close"] - ohlc["open"]), 1e-9 * ohlc["close"])
        top.bar(xs, body_h, bottom=body_lo, width=0.7, color=colors)
    else:
        top.plot(x(ohlc["time"]), ohlc["close"], color="#455a64")
    for f in info["fills"]:
        buy = str(f.get("side", "")).lower() == "buy"
        top.scatter(x(int(f["time"])), float(f["price"]), marker="^" if buy else "v",
                    color="green" if buy else "red", s=60, zorder=3)
    raw = expl.get("predicted_closes")
    closes = [c for c in (_num(v) for v in raw) if c is not None] if isinstance(raw, list) else []
    if closes:
        top.plot(np.arange(1, len(closes) + 1), closes, "o--", color="#7e57c2", label="predicted closes")
        top.legend(loc="upper left")
    fast, slow = _num(expl.get("fast_sma")), _num(expl.get("slow_sma"))
    if fast is not None and slow is not None:
        top.axhline(fast, color="orange", lw=0.8, label="fast SMA")
        top.axhline(slow, color="purple", lw=0.8, label="slow SMA")
        top.legend(loc="upper left")
    top.axvline(0, color="grey", ls=":", lw=1)
    top.set_ylabel(f"price ({source})")
    probs = expl.get("probs")
    ptxt = ", ".join(f"{k} {_num(v):.2f}" for k, v in probs.items()
                     if _num(v) is not None) if isinstance(probs, dict) else ""
    top.set_title(f"{d['id']}  {ms_to_iso(t_dec)}  {expl.get('kind', '')} {expl.get('signal', '')} "
                  f"target {d.get('target')}  {ptxt}".strip(), fontsize=9)
    top.set_xlabel("bars relative to the decision bar (0); fills drawn at the bar they filled on")
    if _attribution_panel(bottom, expl, a, x):
        bottom.set_xlim(top.get_xlim())
        bottom.axvline(0, color="grey", ls=":", lw=1)
        bottom.set_xlabel("bars relative to the decision bar (0)")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _attribution_panel(ax: Any, expl: dict[str, Any], a: Attribution | None, x: Any) -> bool:
    """Draw the lower panel; True when its x axis is the candles' (bars relative to the decision)."""
    from bot.report.story import toward_text  # noqa: PLC0415

    if a is not None and (a.steps or a.sparse_steps):
        if a.steps:
            xs = x(a.times) if a.times else np.arange(-len(a.steps) + 1, 1)
            vs = np.asarray(a.steps)
        else:
            xs, vs = x([t for t, _ in a.sparse_steps]), np.asarray([v for _, v in a.sparse_steps])
        if a.toward is not None:
            pos = vs >= 0
            ax.bar(xs[pos], vs[pos], width=0.8, color="#43a047", label=toward_text(a.toward, 1.0))
            ax.bar(xs[~pos], vs[~pos], width=0.8, color="#e53935", label=toward_text(a.toward, -1.0))
            ax.axhline(0, color="grey", lw=0.6)
            ax.legend(loc="upper left", fontsize=8)
        else:
            ax.bar(xs, vs, width=0.8, color="#1e88e5", label="weight (unsigned)")
            ax.legend(loc="upper left", fontsize=8)
        what = f" of {a.target}" if a.target else ""
        ax.set_ylabel("attribution")
        ax.set_title(f"{method_name(a.method)}{what}" + (" (old journal: top steps only)" if not a.steps else ""),
                     fontsize=9)
        return True
    lp = expl.get("level_probs")
    if isinstance(lp, list) and lp:
        ax.bar(np.arange(len(lp)), [_num(v) or 0.0 for v in lp], width=0.8, color="#7e57c2")
        ax.set_xlabel("position level")
        ax.set_ylabel("probability")
        ax.set_title("position level distribution", fontsize=9)
        return False
    ax.text(0.5, 0.5, "no attribution in this explanation", ha="center", va="center", transform=ax.transAxes)
    return False
