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
from typing import Any

from sqlalchemy import Engine as DBEngine

from bot.config import Config
from bot.domain import Candle
from bot.errors import StorageError
from bot.runner import Resume
from storage.journal import Journal
from storage.records import find_resumable, run_snapshot, start_payload

#: Config sections the current invocation decides (where the venue is, where the journal is,
#: how to log); everything else is the run's own.
CURRENT_SECTIONS = ("exchange", "storage", "logging")


@dataclass
class ResumePlan:
    cfg: Config
    resume: Resume
    start: dict[str, Any]
    warmup_start: int

    @property
    def run_id(self) -> str:
        return self.resume.journal.run_id

    @property
    def last_bar(self) -> int | None:
        return self.resume.snapshot.last_bar

    @property
    def stop_at_ms(self) -> int | None:
        v = self.start.get("stop_at")
        return int(v) if v is not None else None


def plan(db: DBEngine, current: Config, run_id: str | None, mode: str) -> ResumePlan:
    """Everything needed to continue a ``mode`` run (the latest unfinished one, or ``run_id``)."""
    run = find_resumable(db, run_id, mode, f"{mode}_start")
    start = start_payload(db, run["id"], f"{mode}_start")
    tree = dict(run["config"])
    tree.update({k: getattr(current, k).model_dump(mode="json") for k in CURRENT_SECTIONS})
    cfg = Config.model_validate(tree)
    snap = run_snapshot(db, run["id"])
    resume = Resume(journal=Journal(db, run["id"], cfg.storage.batch_size), snapshot=snap,
                    warmup_bars={cfg.market.symbol: int(start["warmup_bars"])}, first_open=int(start["first_open"]))
    return ResumePlan(cfg=cfg, resume=resume, start=start, warmup_start=int(start["warmup_start"]))


def last_processed(p: ResumePlan, tf_ms: int) -> int:
    """Open time of the newest bar the run processed (the bar before its first, if none)."""
    return p.last_bar if p.last_bar is not None else p.resume.first_open - tf_ms


def check_bars(p: ResumePlan, bars: list[Candle], tf_ms: int) -> None:
    """The rebuilt buffer must be the first process's: same warm-up start, no hole."""
    last = last_processed(p, tf_ms)
    n = (last - p.warmup_start) // tf_ms + 1
    times = [c.open_time for c in bars]
    if not bars or times[0] != p.warmup_start or times[-1] != last or len(times) != n:
        raise StorageError(f"cannot rebuild run {p.run_id}: the exchange returned {len(times)} of the "
                           f"{n} bars from {p.warmup_start} to {last}")
