"""Continue an unfinished paper or live run from the journal, counting nothing twice.

A paper run journals one transaction per closed bar and a live run writes each decision and
order intent ahead, so after a crash (even ``kill -9``) the journal holds every bar up to some
bar k and nothing after it. Resuming finds that run, rebuilds its bar buffer (the same warm-up
start, every processed bar) and hands the runner a :class:`~bot.runner.Resume`: the run's
snapshot (storage.records), from which the broker and the engine restore themselves. The bar
loop then continues with bar k+1, whose rows carry the same deterministic ids (decision, client
order, execution ids) an uninterrupted run would have written.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine as DBEngine

from bot.config import Config
from bot.domain import Candle
from bot.errors import StorageError
from bot.runner import Resume
from storage.journal import Journal
from storage.records import find_resumable, run_snapshot, start_payload

#: Config sections the current invocation decides (where the venue is, where the journal is,
#: how to log, what alerts); everything else is the run's own.
CURRENT_SECTIONS = ("exchange", "storage", "logging", "alerts")


@dataclass(frozen=True)
class MarketStart:
    """How one market's buffer began: what the ``<mode>_start`` event recorded for it."""

    warmup_start: int
    warmup_bars: int
    first_open: int
    start_qty: Decimal


@dataclass
class ResumePlan:
    cfg: Config
    resume: Resume
    start: dict[str, Any]
    markets: dict[str, MarketStart]

    @property
    def run_id(self) -> str:
        return self.resume.journal.run_id

    @property
    def stop_at_ms(self) -> int | None:
        v = self.start.get("stop_at")
        return int(v) if v is not None else None


def market_starts(start: dict[str, Any], symbols: list[str]) -> dict[str, MarketStart]:
    """Per-market starts of a start payload (``markets``: by symbol; a one-market run's sit at the top)."""
    per = start.get("markets") or {symbols[0]: start}
    missing = [s for s in symbols if s not in per]
    if missing:
        raise StorageError(f"the run's start event has no warm-up for {', '.join(missing)}: it cannot be resumed")
    return {s: MarketStart(int(per[s]["warmup_start"]), int(per[s]["warmup_bars"]), int(per[s]["first_open"]),
                           Decimal(str(per[s].get("start_qty", "0")))) for s in symbols}


def start_entry(warmup: list[Candle], first_open: int, start_qty: Decimal = Decimal(0)) -> dict[str, Any]:
    """One market's part of a start payload (see :func:`market_starts`)."""
    return {"warmup_start": warmup[0].open_time if warmup else first_open, "warmup_bars": len(warmup),
            "first_open": first_open, "start_qty": format(start_qty, "f")}


def plan(db: DBEngine, current: Config, run_id: str | None, mode: str) -> ResumePlan:
    """Everything needed to continue a ``mode`` run (the latest unfinished one, or ``run_id``)."""
    run = find_resumable(db, run_id, mode, f"{mode}_start")
    start = start_payload(db, run["id"], f"{mode}_start")
    tree = dict(run["config"])
    tree.update({k: getattr(current, k).model_dump(mode="json") for k in CURRENT_SECTIONS})
    cfg = Config.model_validate(tree)
    snap = run_snapshot(db, run["id"])
    markets = market_starts(start, cfg.symbols)
    resume = Resume(journal=Journal(db, run["id"], cfg.storage.batch_size), snapshot=snap,
                    warmup_bars={s: m.warmup_bars for s, m in markets.items()},
                    first_open=min(m.first_open for m in markets.values()))
    return ResumePlan(cfg=cfg, resume=resume, start=start, markets=markets)


def last_processed(p: ResumePlan, symbol: str, tf_ms: int) -> int:
    """Open time of the newest bar ``symbol`` processed (the bar before its first, if none)."""
    last = p.resume.snapshot.for_symbol(symbol).last_bar
    return last if last is not None else p.markets[symbol].first_open - tf_ms


def check_bars(p: ResumePlan, symbol: str, bars: list[Candle], tf_ms: int) -> None:
    """The rebuilt buffer must be the first process's: same warm-up start, no hole."""
    last = last_processed(p, symbol, tf_ms)
    first = p.markets[symbol].warmup_start
    n = (last - first) // tf_ms + 1
    times = [c.open_time for c in bars]
    if not bars or times[0] != first or times[-1] != last or len(times) != n:
        raise StorageError(f"cannot rebuild run {p.run_id}: the exchange returned {len(times)} of the "
                           f"{n} {symbol} bars from {first} to {last}")
