"""Shared pieces of the report tests (no tests here): contract strategies, real journal runs,
a PNG header reader (the browser driver is tests/test_report_cdp.py).

The strategies below are small test Strategy subclasses whose explanations follow
docs/explanations.md exactly; they run through the real engine (bot.app.run_backtest /
run_paper) into a real SQLite journal, so the report reads real runs, not mocks.
"""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot import app as core
from bot.bars import Bars
from bot.candles import CandleData
from bot.config import Config, StorageConfig, StrategyConfig
from bot.domain import Decision, timeframe_ms
from bot.feeds.replay import load_candles
from bot.timeutil import parse_date
from storage.db import open_database
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.sma import SMACrossover, SMAParams
from tests.helpers import scratch_journal

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
BTC_1H = DATA_DIR / "bybit_BTCUSDT_1h.csv.gz"


# -- contract-shaped strategies -------------------------------------------------------------------
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-x)))


class ContractStrategy(Strategy):
    """A deterministic momentum rule that explains itself in the contract shape of ``kind``.

    The journal names a run after ``Strategy.name``, so each instance takes its kind's name.
    """

    name = "contract"
    Params = StrategyParams

    def __init__(self, ctx: StrategyContext, kind: str, window: int = 16, flat_only: bool = False) -> None:
        super().__init__(StrategyParams(), ctx)
        self.name = kind  # type: ignore[misc]
        self.kind = kind
        self.window = window
        self.flat_only = flat_only
        self.held = 0.0

    @property
    def warmup(self) -> int:
        return self.window + 1

    @property
    def model_id(self) -> str | None:
        return f"test-{self.kind}"

    def on_bar(self, bars: Bars) -> Decision | None:
        c = bars.close
        if len(c) < self.window + 1:
            return None
        rets = np.diff(np.log(c[-(self.window + 1):]))
        times = [int(t) for t in bars.time[-self.window:]]
        mom = float(rets[-4:].sum())
        p_up = _sigmoid(mom * 300)
        p_flat = 0.2
        up, down = p_up * (1 - p_flat), (1 - p_up) * (1 - p_flat)
        probs = {"down": down, "flat": p_flat, "up": up}
        signal = "long" if up > 0.5 else "flat" if up > 0.3 else "short"
        conf = max(probs.values())
        if not self.flat_only:
            self.held = 1.0 if up > 0.5 else 0.0 if up < 0.35 else self.held
        expl = getattr(self, f"_{self.kind}")(rets, times, probs, signal, conf, float(c[-1]))
        target = expl["level"] / 10 if self.kind == "gru_sizer" and not self.flat_only else self.held
        return Decision(bars.symbol, bars.last_time(), target, confidence=conf, model_id=self.model_id,
                        explanation=expl)

    def _rollout(self, rets, times, probs, signal, conf, close):  # type: ignore[no-untyped-def]
        w = np.abs(rets) + 1e-4
        w = w / w.sum()
        top = np.argsort(-w)[:5]
        return {"kind": "rollout", "probs": probs, "confidence": conf, "signal": signal,
                "attribution": [float(x) for x in w], "times": times,
                "top_steps": [{"time": times[i], "weight": float(w[i])} for i in top],
                "regime": "momentum" if abs(rets[-4:].sum()) > 0.004 else "mixed",
                "recent_share": float(w[-self.window // 4:].sum()), "head_fusion": "mean"}

    def _dsc(self, rets, times, probs, signal, conf, close):  # type: ignore[no-untyped-def]
        scores = {"ret_1": float(rets[-1] * 50), "ret_4": float(rets[-4:].sum() * 20),
                  "vol_16": float(rets.std() * 30), "range": 0.01}
        top = sorted(scores, key=lambda k: -abs(scores[k]))[:3]
        steps = np.argsort(-np.abs(rets))[:3]
        return {"kind": "dsc", "probs": probs, "confidence": conf, "signal": signal,
                "top_features": [{"feature": k, "score": scores[k]} for k in top],
                "top_steps": [{"time": times[i], "score": float(abs(rets[i]))} for i in steps],
                "feature_scores": scores, "method": "input_x_gradient"}

    def _gru_sizer(self, rets, times, probs, signal, conf, close):  # type: ignore[no-untyped-def]
        level = int(np.clip(round(probs["up"] / 0.8 * 10), 0, 10))
        logits = -0.8 * (np.arange(11) - level) ** 2
        lp = np.exp(logits) / np.exp(logits).sum()
        path = [float(rets[-4:].mean() * k) for k in (1, 2, 3)]
        return {"kind": "gru_sizer", "level": level, "level_probs": [float(x) for x in lp],
                "predicted_path": path, "predicted_closes": [close * (1 + r) for r in path],
                "regime": "bull" if level >= 7 else "bear" if level <= 3 else "sideways"}


class OneTrade(Strategy):
    """Long from bar ``enter`` to bar ``exit`` (counted from the first decision): one round trip."""

    name = "dsc"
    Params = StrategyParams

    def __init__(self, ctx: StrategyContext, enter: int = 5, exit_: int = 40) -> None:
        super().__init__(StrategyParams(), ctx)
        self.i = -1
        self.enter, self.exit = enter, exit_

    def on_bar(self, bars: Bars) -> Decision | None:
        self.i += 1
        if self.i not in (self.enter, self.exit):
            return None
        target = 1.0 if self.i == self.enter else 0.0
        p = 0.7 if target else 0.2
        return Decision(bars.symbol, bars.last_time(), target, confidence=max(p, 1 - p), explanation={
            "kind": "dsc", "probs": {"down": (1 - p) * 0.7, "flat": (1 - p) * 0.3, "up": p}, "confidence": 0.7,
            "signal": "long" if target else "flat", "top_features": [{"feature": "ret_4", "score": 0.4}],
            "top_steps": [{"time": int(bars.last_time()), "score": 0.5}], "feature_scores": {"ret_4": 0.4},
            "method": "occlusion"})


class Boom(BaseException):
    """Escapes the engine's per-strategy guard, so the run ends as failed (like a crash)."""


class Crashes(ContractStrategy):
    """Crashes after ``after`` bars (``after=-1``: before the first bar, nothing journaled)."""

    def __init__(self, ctx: StrategyContext, after: int) -> None:
        super().__init__(ctx, "rollout")
        self.after, self.seen = after, 0

    def on_start(self, bars: Bars) -> None:
        if self.after < 0:
            raise Boom("simulated crash at start")

    def on_bar(self, bars: Bars) -> Decision | None:
        self.seen += 1
        if self.seen > self.after:
            raise Boom("simulated crash")
        return super().on_bar(bars)


# -- real runs in one journal --------------------------------------------------------------------
@dataclass(slots=True)
class Runs:
    url: str
    root: Path
    ids: dict[str, str] = field(default_factory=dict)


def config(url: str, name: str, **params: Any) -> Config:
    return Config(strategy=StrategyConfig(name=name, params=params), storage=StorageConfig(url=url))


def candles(start: str = "2024-01-10", end: str = "2024-03-08") -> CandleData:
    if not BTC_1H.exists():
        pytest.fail(f"real market data not found at {BTC_1H} (set BOT_DATA_DIR)")
    return load_candles(BTC_1H, symbol="BTCUSDT", timeframe="1h", bar_ms=timeframe_ms("1h"),
                        start_ms=parse_date(start), end_ms=parse_date(end))


def _ctx(cfg: Config) -> StrategyContext:
    return core.strategy_context(cfg)


_RUNS: Runs | None = None


def journal_runs() -> Runs:
    """Every kind of run the report must handle, journaled once per test process."""
    global _RUNS
    if _RUNS is not None:
        return _RUNS
    root, url = scratch_journal("report_tests_")
    db = open_database(url)
    data = candles()
    runs = Runs(url, root)

    def bt(key: str, cfg: Config, strategy: Strategy, **kw: Any) -> None:
        try:
            s = core.backtest(cfg, data, strategy, db, show_progress=False, **kw)
            runs.ids[key] = s["run_id"]
        except Boom:
            from storage import queries as q

            runs.ids[key] = q.resolve_run(db, "latest")["id"]

    for kind in ("rollout", "dsc", "gru_sizer"):
        cfg = config(url, kind)
        bt(kind, cfg, ContractStrategy(_ctx(cfg), kind))
    cfg = config(url, "sma", fast=10, slow=30)
    bt("sma", cfg, SMACrossover(SMAParams(fast=10, slow=30), _ctx(cfg)))
    cfg = config(url, "rollout")
    bt("zero_trades", cfg, ContractStrategy(_ctx(cfg), "rollout", flat_only=True))
    cfg = config(url, "dsc")
    bt("one_trade", cfg, OneTrade(_ctx(cfg)))
    cfg = config(url, "gru_sizer")
    bt("interrupted", cfg, ContractStrategy(_ctx(cfg), "gru_sizer"), stop_after=300)
    cfg = config(url, "rollout")
    bt("failed", cfg, Crashes(_ctx(cfg), after=200))
    bt("failed_at_start", cfg, Crashes(_ctx(cfg), after=-1))
    cfg = config(url, "dsc")
    market = core.MarketData(data.slice(0, 400), ContractStrategy(_ctx(cfg), "dsc"))
    paper = asyncio.run(core.paper_replay(cfg, [market], db))
    runs.ids["paper"] = paper["run_id"]
    _RUNS = runs
    return runs


_REPORTS: dict[str, Any] = {}


def report_for(key: str) -> Any:
    """report.html (no PNGs) of one of :func:`journal_runs`, written once per test process."""
    if key not in _REPORTS:
        from bot.report import write_report

        runs = journal_runs()
        _REPORTS[key] = write_report(open_database(runs.url), runs.ids[key], runs.root / "reports" / key, png=False)
    return _REPORTS[key]


# -- PNG -----------------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk; fails on anything else."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])
