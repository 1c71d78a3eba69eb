"""Run observers (bot/observe.py) see what the journal holds, when it holds it: every committed
row once, after its commit; one bar_done per bar; the run's end. One that raises is logged and the
run goes on, journaled in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from bot import app as core
from bot.config import load_config
from bot.observe import Committed, RunObserver
from storage import queries as q
from tests.helpers import ScriptedStrategy, make_data

ROWS = [(100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i) for i in range(12)]
SCRIPT = {3: 1.0, 6: 0.0, 8: -0.5, 10: 0.0}


class Recorder(RunObserver):
    def __init__(self, db: Any) -> None:
        self.db = db
        self.calls: list[str] = []
        self.fills: list[dict[str, Any]] = []
        self.kinds: list[str] = []
        self.seen_in_db: list[bool] = []
        self.took: list[float] = []
        self.run_id = ""

    def started(self, runner: Any) -> None:
        self.calls.append("started")
        self.run_id = runner.journal.run_id

    def committed(self, rows: Committed) -> None:
        assert rows.run_id == self.run_id
        self.fills += rows.fills
        self.kinds += [e["kind"] for e in rows.events]
        ids = {f["exec_id"] for f in q.fills(self.db, rows.run_id)}
        self.seen_in_db += [f["exec_id"] in ids for f in rows.fills]  # already committed

    def bar_done(self, runner: Any, took_s: float) -> None:
        self.took.append(took_s)

    def finished(self, runner: Any, status: str) -> None:
        self.calls.append(f"finished:{status}")


class Broken(RunObserver):
    def committed(self, rows: Committed) -> None:
        raise RuntimeError("observer bug")

    def bar_done(self, runner: Any, took_s: float) -> None:
        raise RuntimeError("observer bug")


async def test_observers_see_committed_rows_and_failures_never_stop_the_run(tmp_path: Path) -> None:
    cfg = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'o.db'}"])
    db = core.open_journal_db(cfg.storage.url)
    rec = Recorder(db)
    with capture_logs() as logs:
        s = await core.paper_replay(cfg, [core.MarketData(make_data(ROWS), ScriptedStrategy(SCRIPT), 0)], db,
                                    observers=[Broken(), rec])
    run_id = s["run_id"]
    assert rec.calls == ["started", "finished:completed"]
    journal_fills = q.fills(db, run_id)
    assert len(journal_fills) == 4
    assert sorted(f["exec_id"] for f in rec.fills) == sorted(f["exec_id"] for f in journal_fills)
    assert rec.seen_in_db and all(rec.seen_in_db)
    assert sorted(rec.kinds) == sorted(e["kind"] for e in q.events(db, run_id))
    assert len(rec.took) == len(ROWS) and all(t >= 0 for t in rec.took)
    failed = [x for x in logs if x.get("event") == "observer_failed"]
    assert failed and {x["observer"] for x in failed} == {"Broken"}
    assert q.resolve_run(db, run_id)["status"] == "completed"
