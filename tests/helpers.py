"""Small builders shared by tests: candle data from rows, a scripted strategy, CLI error checks."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bot.bars import Bars
from bot.candles import CandleData, find_gaps
from bot.domain import Decision
from strategies.base import Strategy, StrategyContext, StrategyParams

HOUR = 3_600_000
T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z, on the hourly grid


def make_data(rows: list[tuple[float, float, float, float]], symbol: str = "BTCUSDT",
              volume: float = 1.0, t0: int = T0, bar_ms: int = HOUR) -> CandleData:
    """CandleData from (open, high, low, close) rows on a regular grid."""
    arr = np.asarray(rows, dtype=np.float64)
    t = t0 + np.arange(len(rows), dtype=np.int64) * bar_ms
    return CandleData(symbol, "1h", t, arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(),
                      arr[:, 3].copy(), np.full(len(rows), volume), "test", find_gaps(t, bar_ms))


def random_walk(n: int, seed: int = 0, start: float = 100.0) -> CandleData:
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([start], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, n))
    return make_data(list(zip(open_, high, low, close, strict=True)))


class ScriptedStrategy(Strategy):
    """Returns the scripted target at given bar indices; raises where the script says 'boom'. A
    (target, stop price, take-profit price) tuple gives the decision its own protective levels."""

    name = "scripted"
    Params = StrategyParams

    def __init__(self, script: dict[int, Any], long_only: bool = False) -> None:
        super().__init__(StrategyParams(), StrategyContext("BTCUSDT", "1h", long_only))
        self.script = script

    def on_bar(self, bars: Bars) -> Decision | None:
        i = bars.n - 1
        if i not in self.script:
            return None
        v = self.script[i]
        if v == "boom":
            raise RuntimeError("model exploded")
        if isinstance(v, tuple):
            target, stop, tp = v
            return Decision(bars.symbol, bars.last_time(), float(target), stop_price=stop, take_profit_price=tp,
                            explanation={"kind": "scripted", "i": i})
        return Decision(bars.symbol, bars.last_time(), float(v), explanation={"kind": "scripted", "i": i})


def drive(strategy: Strategy, data: CandleData, precompute: bool) -> Iterator[tuple[Bars, Decision | None]]:
    """Run ``strategy`` over ``data`` as the engine does (the batch path first if asked, then
    on_start and one on_bar per revealed bar), yielding the bars and each bar's decision."""
    if precompute:
        strategy.precompute(data)
    bars = Bars.preloaded(data.symbol, data.timeframe, data.time, data.open, data.high, data.low, data.close,
                          data.volume)
    strategy.on_start(bars)
    while bars.advance():
        d = strategy.on_bar(bars)
        yield bars, None if d is None else d.completed()  # the engine completes it before the next bar


def scratch_journal(prefix: str) -> tuple[Path, str]:
    """A fresh directory, removed when the test process exits, and the URL of a SQLite journal in
    it: for journals built once per process and shared by many tests."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, True)
    return root, f"sqlite:///{root / 'journal.db'}"


def one_line_error(r: Any, match: str) -> None:
    """A CLI result (``bot_cli``'s or a subprocess's) that failed as users should see it: exit 2,
    one ``error:`` line on stderr containing ``match``, no traceback."""
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in r.stderr


@contextmanager
def clock_held_until_subscribed(sim: Any, timeout: float = 180.0) -> Iterator[None]:
    """Freeze the simulator's market clock until one more kline subscription arrives (the bot
    started or resumed inside the block is on the stream), then let it run: a slow start-up on a
    loaded machine takes no bars from the run. After ``timeout`` s the clock runs anyway."""
    target = sim.state.stats["kline_subscriptions"] + 1
    sim.state.clock.pause()
    done = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + timeout
        while sim.state.stats["kline_subscriptions"] < target and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        sim.state.clock.resume()

    thread = threading.Thread(target=release, name="release-clock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
