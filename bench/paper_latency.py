"""Paper-mode latency: closed bar arriving at the bot -> order reaching the simulated broker, with
the deferred explanation's own latency beside it, for sma, dsc, rollout and gru_sizer.

Runs the real paper path in-process against the local Bybit simulator (accelerated clock, bars
over the public WebSocket): feed -> bars -> engine -> strategy -> risk -> broker, then the
decision's deferred explanation part (``Decision.deferred``: the attribution) and the bar's
journal commit. The arrival time is taken when the WebSocket message reaches the feed (before
JSON parsing); the order time when ``SimulatedBroker.submit`` is entered; "explained" when the
engine has journaled the completed explanation (``Engine.explain_pending`` returned), and the
explanation's own time is that call's duration. Bars fetched over REST (warm-up) are not counted.

Checkpoints (BTCUSDT 1h): ``--checkpoint KIND=PATH``, else ``checkpoints/KIND_BTCUSDT_1h.pt`` (what
``bot train`` writes), else ``checkpoints/bench/KIND_BTCUSDT_1h.pt``, trained by this script on
first use: the default model size, 1 epoch on at most 2,000 windows (latency depends on the size,
not on how well it was trained). The table says which was used. Thresholds are 0 so that the
models trade often (an order needs a change of target).

Usage: python bench/paper_latency.py [--bars N] [--bar-ms MS] [--only sma,dsc] [--checkpoint dsc=PATH]
Targets (issue 17): bar -> order p50 <= 1 ms, p99 <= 5 ms for dsc, rollout and gru_sizer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
FILE = DATA / "bybit_BTCUSDT_1h.csv.gz"

from bot import app as core  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.feeds.bybit import BybitFeed  # noqa: E402
from bot.live import WARMUP_MARGIN, RunOptions  # noqa: E402
from bot.timeutil import ms_to_iso  # noqa: E402
from broker.bybit_sim import SimConfig, SimServer  # noqa: E402
from broker.simulated import SimulatedBroker  # noqa: E402

#: Per strategy: the --set overrides of the run (thresholds 0: trade often).
RUNS: dict[str, list[str]] = {
    "sma": ["strategy.name=sma", "strategy.params.fast=2", "strategy.params.slow=5"],
    "dsc": ["strategy.name=dsc", "strategy.params.prob_threshold=0.0"],
    "rollout": ["strategy.name=rollout", "strategy.params.prob_threshold=0.0"],
    "gru_sizer": ["strategy.name=gru_sizer"],
}
#: What a checkpoint trained by this script is trained with (default model size, brief training).
TRAIN: dict[str, list[str]] = {
    kind: ["strategy.params.train.epochs=1", "strategy.params.train.max_train_samples=2000"]
    for kind in ("dsc", "rollout", "gru_sizer")
}
TRAIN["gru_sizer"] = [*TRAIN["gru_sizer"], "strategy.params.train2.epochs=1"]


def checkpoint_for(kind: str, given: dict[str, str]) -> tuple[str | None, str]:
    """(checkpoint path, where it came from) for ``kind``; trains a bench model if there is none."""
    if kind == "sma":
        return None, "-"
    if kind in given:
        return given[kind], "given"
    default = ROOT / "checkpoints" / f"{kind}_BTCUSDT_1h.pt"
    if default.exists():
        return str(default), "bot train's default"
    cached = ROOT / "checkpoints" / "bench" / f"{kind}_BTCUSDT_1h.pt"
    if cached.exists():
        return str(cached), "bench model (1 epoch), cached"
    from bot.cli.models import train_command

    print(f"training a {kind} bench model into {cached} (default size, 1 epoch; once)...", flush=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [f"strategy.name={kind}", "logging.level=error", *TRAIN[kind]])
    t0 = time.perf_counter()
    train_command(cfg, str(FILE), str(cached), progress=False)
    return str(cached), f"bench model (1 epoch), trained now in {time.perf_counter() - t0:.0f} s"


class Probe:
    """Stamps taken inside the run: orders at the broker, bars done, explanations journaled."""

    def __init__(self) -> None:
        self.submits: list[tuple[int, float]] = []
        self.decided: list[tuple[int, float]] = []
        self.explained: list[tuple[int, float, float]] = []  # (bar, start, end) of each completing call
        self.feeds: list[BybitFeed] = []
        # An engine without deferred explanations (a revision before issue 17) explains inline.
        self._orig = (SimulatedBroker.submit, Engine.decide, getattr(Engine, "explain_pending", None))

    def __enter__(self) -> Probe:
        submit, decide, explain = self._orig

        def submit_(broker: SimulatedBroker, req: Any, now_ms: int) -> Any:
            self.submits.append((int(str(req.decision_id).rsplit("-", 1)[1]), time.perf_counter()))
            return submit(broker, req, now_ms)

        def decide_(engine: Engine, trade: bool = True) -> None:
            decide(engine, trade)
            self.decided.append((engine.bars.last_time(), time.perf_counter()))

        def explain_(engine: Engine) -> int:
            t0 = time.perf_counter()
            n = explain(engine) if explain is not None else 0
            if n:
                self.explained.append((engine.bars.last_time(), t0, time.perf_counter()))
            return n

        SimulatedBroker.submit, Engine.decide, Engine.explain_pending = submit_, decide_, explain_  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        SimulatedBroker.submit, Engine.decide, Engine.explain_pending = self._orig  # type: ignore[method-assign]

    def feed(self, *args: Any, **kw: Any) -> BybitFeed:
        self.feeds.append(BybitFeed(*args, **kw))
        return self.feeds[-1]


async def measure(name: str, n_bars: int, bar_ms: float, checkpoint: str | None) -> dict[str, Any]:
    # The bench models are trained on this file: latency does not depend on which bars they see.
    sets = [*RUNS[name], "strategy.allow_in_sample=true"]
    probe_data = core.load_data(load_config(None, []), str(FILE))
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        base = load_config(None, [*sets, f"storage.url={db}", "logging.level=error"])
        w = max(int(core.build_strategy(base, checkpoint).warmup), 1) + WARMUP_MARGIN
        a_i = max(w + 10, 1000)
        a, b = int(probe_data.time[a_i]), int(probe_data.time[a_i + n_bars])
        with Probe() as probe:
            async with SimServer(SimConfig(data=[str(FILE)], bar_ms=bar_ms, start=a)) as sim:
                cfg = load_config(None, [*sets, f"storage.url={db}", "logging.level=error",
                                         f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}"])
                sim.state.clock.pause()  # the market waits until the bot is subscribed: every bar is live

                async def go_live() -> None:
                    while not probe.feeds or probe.feeds[0]._ws is None:  # noqa: SLF001
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.2)
                    sim.state.clock.resume()

                starter = asyncio.create_task(go_live())
                summary = await core.paper(cfg, checkpoint, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
                                           options=RunOptions(feed_factory=probe.feed))
                starter.cancel()
    arr = {t: p for (sym, t), p in probe.feeds[0].arrivals.items() if sym == "BTCUSDT" and t >= a}

    def since_arrival(stamps: list[tuple[int, float]]) -> np.ndarray:
        return np.array([(p - arr[t]) * 1000 for t, p in stamps if t in arr])

    own = np.array([(end - start) * 1000 for t, start, end in probe.explained if t in arr])
    return {"strategy": name, "bars": summary["candles"], "orders": since_arrival(probe.submits),
            "decided": since_arrival(probe.decided), "explain_own": own,
            "explained": since_arrival([(t, end) for t, _, end in probe.explained])}


def pct(x: np.ndarray, q: float) -> str:
    return f"{np.percentile(x, q):.3f}" if len(x) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=300)
    ap.add_argument("--bar-ms", type=float, default=40.0, help="simulator milliseconds per 1h bar")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated strategies")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="KIND=PATH")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    bad = [n for n in names if n not in RUNS]
    given = dict(c.split("=", 1) for c in args.checkpoint if "=" in c)
    if bad or len(given) != len(args.checkpoint):
        ap.error(f"--only takes {', '.join(RUNS)}; --checkpoint takes KIND=PATH")
    import torch

    from bot.logs import configure

    torch.set_num_threads(1)
    configure("error")
    sources = {n: checkpoint_for(n, given) for n in names}
    load = os.getloadavg()[0]
    rows = [asyncio.run(measure(n, args.bars, args.bar_ms, sources[n][0])) for n in names]
    print(f"paper latency, {args.bars} bars at one bar per {args.bar_ms:g} ms on the local Bybit simulator; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__} (1 thread); load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| strategy | checkpoint | bars | orders | bar -> order p50 | p99 | max | bar -> decided p50 | p99 "
          "| explanation own p50 | p99 | bar -> explained p50 | p99 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, n in zip(rows, names, strict=True):
        o, d, e, x = r["orders"], r["decided"], r["explain_own"], r["explained"]
        print(f"| {n} | {sources[n][1]} | {r['bars']} | {len(o)} | {pct(o, 50)} | {pct(o, 99)} | {pct(o, 100)} "
              f"| {pct(d, 50)} | {pct(d, 99)} | {pct(e, 50)} | {pct(e, 99)} | {pct(x, 50)} | {pct(x, 99)} |")
    print("(ms; decided: the engine done with the bar's decision and order; explained: the deferred "
          "explanation journaled, before the bar's commit)")


if __name__ == "__main__":
    main()
