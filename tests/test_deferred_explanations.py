"""Orders before explanations (issue 17): a decision's deferred explanation part runs after its
order has reached the broker (the venue, live), before the market's next bar, and is in the
journal before the bar's commit; a failing part leaves an ``explanation_error`` and the trade.

The strategy is a file of the user's (``Probe`` below): it flips between long and flat every hour
and defers its ``attribution``. What happened when is observed around the real components
(brokers' ``submit``, ``bot.deferred.completed_explanation``, the journal's writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot import app as core
from bot import deferred
from bot.config import Config, load_config
from bot.domain import EXPLANATION_ERROR, EXPLANATION_PENDING
from bot.engine import Engine
from bot.live import WARMUP_MARGIN, RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit.broker import BybitBroker
from broker.bybit_sim import SimConfig, SimServer
from broker.bybit_sim.private import account_of
from broker.simulated import SimulatedBroker
from storage import queries as q
from storage.journal import Committed, Journal
from storage.records import comparable_journal
from tests.live_helpers import modules, set_keys, sim_cfg, started_frozen

H = 3_600_000
PROBE = '''
import math
from bot.domain import Decision
from strategies.base import Strategy, StrategyParams


class ProbeParams(StrategyParams):
    fail: bool = False


class Probe(Strategy):
    """Long on odd hours, flat on even ones; the attribution is deferred. With ``fail`` it raises
    on every 5th hour and returns NaN on every 7th."""

    name = "probe"
    Params = ProbeParams

    def on_bar(self, bars):
        t = bars.last_time()
        close = float(bars.last_close())  # a snapshot: the deferred part never reads the buffer
        return Decision(bars.symbol, t, float((t // 3_600_000) % 2),
                        explanation={"kind": "probe", "attribution": None, "rule": "odd hour -> long"},
                        deferred=lambda: self._explain(t, close))

    def _explain(self, t, close):
        hour = t // 3_600_000
        if self.params.fail and hour % 5 == 0:
            raise RuntimeError("attribution exploded")
        if self.params.fail and hour % 7 == 0:
            return {"attribution": math.nan}
        return {"attribution": {"bar": t, "close": close}}
'''


def probe_sets(tmp_path: Path, *extra: str) -> list[str]:
    (tmp_path / "probe.py").write_text(PROBE)
    return [f"strategy.name={tmp_path / 'probe.py'}:Probe", "logging.level=error", *extra]


def bar_of(decision_id: str | None) -> int:
    return int(str(decision_id).rsplit("-", 1)[1])


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What happened, in order: ("bar", t), ("order", t), ("explain", t), ("commit", batch)."""
    events: list[tuple[Any, ...]] = []
    decide, explain, write = Engine.decide, deferred.completed_explanation, Journal.write_batch

    def decide_(engine: Engine, trade: bool = True) -> None:
        events.append(("bar", engine.bars.last_time()))
        decide(engine, trade)

    def explain_(d: Any) -> dict[str, Any]:
        events.append(("explain", d.bar_time))
        return explain(d)

    def write_(journal: Journal, batch: Committed) -> None:
        events.append(("commit", batch))
        write(journal, batch)

    for broker in (SimulatedBroker, BybitBroker):
        def submit_(self: Any, req: Any, now_ms: int, _submit: Any = broker.submit) -> Any:
            events.append(("order", bar_of(req.decision_id)))
            return _submit(self, req, now_ms)

        monkeypatch.setattr(broker, "submit", submit_)
    monkeypatch.setattr(Engine, "decide", decide_)
    monkeypatch.setattr(deferred, "completed_explanation", explain_)
    monkeypatch.setattr(Journal, "write_batch", write_)
    return events


def check_order_of_events(events: list[tuple[Any, ...]], write_ahead: bool = False) -> int:
    """Per bar: the bar, its order (if any), then its explanation, before the next bar and before
    any commit after it; no committed decision row is pending (unless written ahead of its order,
    ``write_ahead``). Returns the number of orders."""
    bar = None
    state = ""
    orders = 0
    for ev in events:
        if ev[0] == "bar":
            assert state in ("", "explained"), f"bar {ev[1]} began before bar {bar} was explained"
            bar, state = ev[1], "bar"
        elif ev[0] == "order" and ev[1] == bar and state == "bar":
            state, orders = "ordered", orders + 1
        elif ev[0] == "explain":
            assert ev[1] == bar and state in ("bar", "ordered"), f"explanation of {ev[1]} out of turn ({state})"
            state = "explained"
        elif ev[0] == "commit" and not write_ahead:
            assert state != "bar", f"a commit between bar {bar}'s decision and its explanation"
            for row in ev[1].decisions:
                assert EXPLANATION_PENDING not in (row["explanation"] or {}), row["id"]
    return orders


def check_rows(db: Any, run_id: str, fail: bool = False) -> list[dict[str, Any]]:
    """Every journaled decision holds its completed explanation (or the error of its part)."""
    rows = q.decisions(db, run_id)
    for r in rows:
        t, e = r["bar_time"], r["explanation"]
        hour = t // H
        assert e["kind"] == "probe" and e["rule"] == "odd hour -> long" and EXPLANATION_PENDING not in e
        if fail and hour % 5 == 0:
            assert e == {"kind": "probe", "attribution": None, "rule": "odd hour -> long",
                         EXPLANATION_ERROR: "RuntimeError: attribution exploded"}
        elif fail and hour % 7 == 0:
            assert e["attribution"] is None and e[EXPLANATION_ERROR].startswith("ValueError: Out of range float")
        else:
            assert e["attribution"] == {"bar": t, "close": pytest.approx(float(r["price"]))}
            assert list(e) == ["kind", "attribution", "rule"]  # the eager part's key order
    return rows


def test_backtest_sends_each_order_before_its_explanation(tmp_path: Path, btc_1h: Path,
                                                          seen: list[tuple[Any, ...]]) -> None:
    cfg = load_config(None, probe_sets(tmp_path))
    data = core.load_data(cfg, str(btc_1h)).slice(0, 60)
    db = core.open_journal_db(f"sqlite:///{tmp_path / 'j.db'}")
    s = core.backtest(cfg, data, core.build_strategy(cfg), db, show_progress=False)
    assert check_order_of_events(seen) == s["orders"] >= 25
    assert len(check_rows(db, s["run_id"])) == 60


def test_a_failing_deferred_part_is_an_error_field_and_the_trade_stands(tmp_path: Path, btc_1h: Path) -> None:
    cfg = load_config(None, probe_sets(tmp_path, "strategy.params.fail=true"))
    data = core.load_data(cfg, str(btc_1h)).slice(0, 80)
    db = core.open_journal_db(f"sqlite:///{tmp_path / 'j.db'}")
    s = core.backtest(cfg, data, core.build_strategy(cfg), db, show_progress=False)
    rows = check_rows(db, s["run_id"], fail=True)
    failed = {r["id"] for r in rows if EXPLANATION_ERROR in r["explanation"]}
    orders = q.orders(db, s["run_id"])
    ordered = {o["decision_id"] for o in orders}
    filled = {o["decision_id"] for o in orders if o["status"] == "filled"}
    assert len(failed) >= 20 and len(failed & filled) >= 5 and not any(o["status"] == "rejected" for o in orders)
    assert all(r["status"] == "order" for r in rows if r["id"] in failed & ordered)
    # The same run without failures trades the same: an explanation never changes a trade.
    clean_cfg = load_config(None, probe_sets(tmp_path))
    clean = core.backtest(clean_cfg, data, core.build_strategy(clean_cfg), db, show_progress=False)
    assert comparable_journal(db, clean["run_id"])["orders"] == comparable_journal(db, s["run_id"])["orders"]


def _paper_cfg(sim: SimServer, db_url: str, tmp_path: Path) -> Config:
    return load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                              f"storage.url={db_url}", *probe_sets(tmp_path)])


async def test_paper_orders_first_and_commits_complete_rows(tmp_path: Path, btc_1h: Path,
                                                            seen: list[tuple[Any, ...]]) -> None:
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, n = int(probe.time[400]), 24
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=40.0, start=a - 2 * H)) as sim:
        cfg = _paper_cfg(sim, db_url, tmp_path)
        paper = await started_frozen(sim, db_url, "paper_start", core.paper(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(a + n * H)), at_ms=a)
    live_bars = [e for e in seen if e[0] == "bar" and e[1] >= a]
    assert paper["candles"] == n and len(live_bars) == n
    assert check_order_of_events(seen) == paper["orders"] >= 10
    db = core.open_journal_db(db_url)
    check_rows(db, paper["run_id"])
    # A backtest of the same bars journals the same decisions (it completes them inline).
    w = core.build_strategy(cfg).warmup + WARMUP_MARGIN
    data = core.load_data(cfg, str(btc_1h), ms_to_iso(a - w * H), ms_to_iso(a + n * H))
    bt = core.backtest(cfg, data, core.build_strategy(cfg), db, show_progress=False, history=w)
    assert comparable_journal(db, paper["run_id"])["decisions"] == comparable_journal(db, bt["run_id"])["decisions"]


async def test_live_order_reaches_the_venue_before_the_explanation_is_computed(
        tmp_path: Path, btc_1h: Path, seen: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, n = int(probe.time[400]), 16
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    at_venue: dict[int, bool] = {}
    explain = deferred.completed_explanation

    async with SimServer(sim_cfg(btc_1h, 300.0, start=a - 3 * H), modules()) as sim:
        acct = account_of(sim.state)

        def explain_(d: Any) -> dict[str, Any]:
            at_venue[d.bar_time] = any(link.endswith(f"-{d.bar_time}-0") for link in acct.by_link)
            return explain(d)

        monkeypatch.setattr(deferred, "completed_explanation", explain_)
        cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                 f"storage.url={db_url}", "exchange.timeout_s=2", *probe_sets(tmp_path)])
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(a + n * H),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=a)
    db = core.open_journal_db(db_url)
    ordered = {bar_of(o["decision_id"]) for o in q.orders(db, live["run_id"])}
    assert live["candles"] == n and len(ordered) >= 6
    assert check_order_of_events(seen, write_ahead=True) == len(ordered)
    assert all(at_venue[t] for t in ordered), {t: at_venue.get(t) for t in ordered}
    assert not any(at_venue[t] for t in at_venue.keys() - ordered)  # the probe tells the two apart
    check_rows(db, live["run_id"])
    # Write-ahead: each decision row was committed with its eager part (pending) before its order
    # left, and its completed explanation followed in an update.
    commits = [e[1] for e in seen if e[0] == "commit"]
    pending = {r["id"] for b in commits for r in b.decisions if EXPLANATION_PENDING in (r["explanation"] or {})}
    updated = {did for b in commits for did, v in b.decision_updates.items() if "explanation" in v}
    assert {bar_of(i) for i in pending} >= ordered and pending == updated
