"""The chaos scenario: a real ``bot run --mode live`` on the local simulator under faults, killed
with SIGKILL again and again and resumed each time, then run to a fixed end; afterwards the
journal is compared with the venue's account.

One module for the bench (``bench/live_chaos.py``, 100 kills) and the test
(``tests/test_live_chaos.py``, about 10): :func:`run_scenario` plays a :class:`Scenario` and
returns an :class:`Outcome`, one row of the table :func:`table` prints. Nothing here asserts; the
test asserts on the outcome. Kills land at random moments (a seeded RNG draws each delay from the
process's start, so some hit the start-up) or at points of the order life cycle: the venue has
just accepted an order and its answer has not left (``accept``), or has just executed one and not
pushed the fill (``fill``); a life-cycle kill that no order reaches in time is made by the timer.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot import app as core
from bot.domain import Side, fee_in_base, held_change
from bot.timeutil import ms_to_iso
from broker.bybit_sim import FaultConfig, PublicMarketModule, SimConfig
from broker.bybit_sim.account import Account, AccountConfig
from broker.bybit_sim.private import PrivateModule, account_of
from broker.bybit_sim.private_rest import PrivateFaults
from broker.bybit_sim.testing import sim_thread
from storage import queries as q
from storage.db import has_journal, make_engine

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "CHAOSKEY0123456789", "CHAOSSECRET0123456789abcdefghijklm"
KILL_POINTS = ("random", "accept", "fill")
#: What a life-cycle kill waits for its point before the timer kills instead.
POINT_WAIT_S = 20.0


@dataclass(frozen=True)
class Scenario:
    """What to run: the market, the faults, how many kills and when. Defaults: the issue's mix."""

    data: Path
    category: str = "linear"          # linear (BTCUSDT perpetual) or spot
    kills: int = 100
    seed: int = 1
    http_error_rate: float = 0.05     # REST answered 502/503 before reaching the venue
    lost_ack_rate: float = 0.10       # creates accepted, then answered 502
    ws_drop_every: int = 40           # every WebSocket (public and private) closed every N confirmed bars
    #: Partial fills (the simulator's AccountConfig): every fill in up to this many executions,
    #: pushed one by one; and every ``thin_every``-th market order half filled, the rest cancelled.
    partial_fills: int = 3
    thin_every: int = 6
    bar_ms: float = 300.0             # wall ms per simulated 1h bar
    kill_after_s: tuple[float, float] = (1.0, 12.0)   # a random kill's delay after the process starts
    point_share: float = 0.5          # share of kills aimed at the accept / fill points
    final_bars: int = 40              # the last start runs until this many bars from its start
    final_timeout_s: float = 180.0


@dataclass
class Outcome:
    """One row of the table, and what went wrong in words (empty when nothing did)."""

    category: str
    kills: Counter[str] = field(default_factory=Counter)   # by how: accept, fill, timer; and start-up
    exchange_orders: int = 0
    executions: int = 0
    lost_fills: int = 0               # executions on the venue that the journal lacks
    duplicate_orders: int = 0         # extra venue orders for one decision + creates refused as duplicates
    mismatches: int = 0               # anything else where journal and venue disagree
    failures: int = 0                 # a bot that exited by itself, a final run that failed
    journal_position: Decimal = Decimal(0)
    exchange_position: Decimal = Decimal(0)
    faults: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)   # the first few of all of them, in words
    #: Where the numbers came from: the journal and the venue's account, for a second look.
    db_url: str = ""
    account: Account | None = field(default=None, repr=False)

    @property
    def clean(self) -> bool:
        return not (self.lost_fills or self.duplicate_orders or self.mismatches or self.failures) \
            and self.journal_position == self.exchange_position

    def note(self, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(what)

    def fail(self, what: str) -> None:
        self.failures += 1
        self.note(what)


def sim_modules(sc: Scenario) -> list[Any]:
    """The simulator's public and private halves with the scenario's private faults."""
    return [PublicMarketModule(),
            PrivateModule(keys={KEY: SECRET},
                          account=AccountConfig(partial_fills=sc.partial_fills, thin_every=sc.thin_every),
                          faults=PrivateFaults(lost_ack_rate=sc.lost_ack_rate))]


def bot_args(sc: Scenario, rest_url: str, ws_url: str, db_url: str) -> list[str]:
    """``bot run --mode live`` on the simulator: SMA 2/5 (it trades every few bars)."""
    args = ["run", "--mode", "live", "--strategy", "sma", "--json",
            "--set", f"exchange.rest_url={rest_url}", "--set", f"exchange.ws_url={ws_url}",
            "--set", f"storage.url={db_url}", "--set", "strategy.params.fast=2",
            "--set", "strategy.params.slow=5", "--set", "exchange.timeout_s=2", "--set", "logging.level=warning"]
    if sc.category == "spot":
        # A buy sized to all the cash at the decision close is refused whenever the price ticks
        # up before it arrives (tests/test_live_spot.py): spot buys take 95 % of the equity.
        args += ["--set", "market.category=spot", "--set", "risk.max_exposure=0.95"]
    return args


class Killer:
    """SIGKILLs the bot once per arming: at a life-cycle point (called from the simulator's
    thread) or by the timer (the harness's thread), whichever comes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.point = ""
        self.fired = threading.Event()
        self.how = ""

    def arm(self, proc: subprocess.Popen[bytes] | None, point: str = "") -> None:
        with self._lock:
            self.proc, self.point, self.how = proc, point, ""
            self.fired.clear()

    def hit(self, point: str) -> None:
        with self._lock:
            if self.proc is None or self.fired.is_set() or point not in (self.point, "timer"):
                return
            if self.proc.returncode is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.how = point
            self.fired.set()

    def hook(self, account: Account) -> None:
        """Kill from inside the venue, chained before the hooks the simulator already set."""
        on_exec = account.before_exec_push

        def before_exec(e: Any) -> None:
            self.hit("fill")
            if on_exec is not None:
                on_exec(e)

        account.on_accept = lambda o: self.hit("accept")
        account.before_exec_push = before_exec


def _starts(db_url: str) -> int | None:
    """How often the journal's run was opened (started or resumed); None: no run to resume yet
    (a first start killed before it made its run leaves none; the next start begins afresh, as
    a user would). Read only."""
    if not Path(db_url.removeprefix("sqlite:///")).exists():
        return None
    eng = make_engine(db_url)
    try:
        runs = q.list_runs(eng, limit=1) if has_journal(eng) else []
        if not runs:
            return None
        return sum(e["kind"] in ("live_start", "live_resume") for e in q.events(eng, runs[0]["id"]))
    finally:
        eng.dispose()


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET,
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "bot", *args], env=env, stdout=fh, stderr=fh, cwd=ROOT)


def _tail(log: Path, n: int = 1500) -> str:
    return log.read_text(errors="replace")[-n:]


def _one_kill(sc: Scenario, rng: random.Random, killer: Killer, base: list[str], db_url: str,
              log: Path, out: Outcome) -> None:
    """Start (or resume) the bot and kill it once, at a point or after a random delay."""
    point = rng.choice(KILL_POINTS[1:]) if rng.random() < sc.point_share else "random"
    delay = rng.uniform(*sc.kill_after_s) if point == "random" else POINT_WAIT_S
    before = _starts(db_url)
    proc = _start(base + (["--resume"] if before is not None else []), log)
    killer.arm(proc, point)
    deadline = time.monotonic() + delay
    while not killer.fired.wait(0.05):
        if proc.poll() is not None:
            killer.arm(None)  # the process is gone
            out.fail(f"the bot exited by itself (rc {proc.returncode}): {_tail(log)}")
            return
        if time.monotonic() >= deadline:
            killer.hit("timer")
    rc = proc.wait(60)
    out.kills[killer.how] += 1
    if _starts(db_url) == before:
        out.kills["start-up"] += 1  # killed before it had opened (or resumed) its run
    if rc != -signal.SIGKILL:
        out.fail(f"a kill at {killer.how} ended with rc {rc}: {_tail(log)}")


def run_scenario(sc: Scenario, workdir: Path, progress: Any = None) -> Outcome:
    """Play ``sc`` in ``workdir`` (journal and the bot's log) on a fresh simulator."""
    rng = random.Random(f"{sc.seed}-{sc.category}")
    out = Outcome(sc.category)
    db_url = f"sqlite:///{workdir / f'chaos_{sc.category}.db'}"
    log = workdir / f"chaos_{sc.category}.log"
    faults = FaultConfig(http_error_rate=sc.http_error_rate, ws_drop_every=sc.ws_drop_every, seed=sc.seed)
    t0 = time.monotonic()
    with sim_thread(SimConfig(data=[str(sc.data)], bar_ms=sc.bar_ms, history=300, faults=faults),
                    sim_modules(sc)) as sim:
        acct = account_of(sim.state)
        killer = Killer()
        killer.hook(acct)
        base = bot_args(sc, sim.rest_url, sim.ws_url, db_url)
        for i in range(sc.kills):
            _one_kill(sc, rng, killer, base, db_url, log, out)
            if progress is not None:
                progress(f"{sc.category}: kill {i + 1}/{sc.kills} ({killer.how or 'none'})")
        killer.arm(None)  # the last start runs to its end
        tf = next(iter(sim.state.markets.values())).tf_ms
        end = (sim.state.now_ms() // tf + sc.final_bars) * tf
        final = _start(base + (["--resume"] if _starts(db_url) is not None else []) + ["--to", ms_to_iso(end)], log)
        try:
            rc = final.wait(sc.final_timeout_s)
        except subprocess.TimeoutExpired:
            final.kill()
            rc = final.wait(30)
            out.fail("the final run did not finish in time")
        if rc != 0:
            out.fail(f"the final run ended with rc {rc}: {_tail(log)}")
        out.db_url, out.account = db_url, acct
        tally(out, db_url, acct)
        st = sim.state.stats
        out.faults.update({"http_5xx": st["http_5xx"], "lost_acks": st["lost_acks"],
                           "ws_dropped": st["ws_dropped"], "rejected_110072": st["reject_110072"]})
    out.wall_s = time.monotonic() - t0
    return out


#: The journal's order status for each final venue status.
FINAL = {"Filled": "filled", "Cancelled": "cancelled", "PartiallyFilledCanceled": "cancelled",
         "Rejected": "rejected", "Deactivated": "expired"}


def tally(out: Outcome, db_url: str, acct: Account) -> None:
    """Fill ``out``'s columns from the journal and the venue's account (every venue order of
    this fresh simulator is the bot's)."""
    db = core.open_journal_db(db_url)
    runs = q.list_runs(db)
    if len(runs) != 1:
        out.fail(f"{len(runs)} runs in the journal, expected one")
        if not runs:
            return
    run = runs[0]
    if run["status"] != "completed":
        out.fail(f"the run ended {run['status']}, not completed")
    journal_orders = {o["id"]: o for o in q.orders(db, run["id"])}
    journal_fills = {f["exec_id"]: f for f in q.fills(db, run["id"])}
    _orders(out, run["id"], acct, journal_orders)
    _fills(out, acct, journal_fills)
    _funding(out, acct, q.funding(db, run["id"]), int(run["last_bar"] or 0))
    out.duplicate_orders += acct.state.stats["reject_110072"]
    symbol = str(run["symbol"])
    market = acct.state.market(symbol)
    assert market is not None, symbol
    # Linear: the position; spot: the base coin's balance (a buy's fee was paid in it).
    book = acct.books.get(symbol)
    out.exchange_position = acct.coins.get(market.base, Decimal(0)) if out.category == "spot" else \
        book.size if book is not None else Decimal(0)
    out.journal_position = sum((held_change(Side(f["side"]), f["qty"], f["fee"],
                                            fee_in_base(symbol, f["fee_currency"]))
                                for f in journal_fills.values() if f["symbol"] == symbol), Decimal(0))


def _problem(out: Outcome, what: str) -> None:
    out.mismatches += 1
    out.note(what)


def _orders(out: Outcome, run_id: str, acct: Account, journal: dict[str, dict[str, Any]]) -> None:
    """Every venue order in the journal and agreeing; no journal order claimed sent that the venue
    lacks; at most one venue order per decision."""
    venue = {o.link_id: o for o in acct.orders.values()}
    out.exchange_orders = sum(link.startswith(f"{run_id}-") for link in venue)
    # A client order id is run-market-decision time-sequence: one decision, one id prefix.
    per_decision = Counter(link.rsplit("-", 1)[0] for link in venue)
    for link, o in venue.items():
        j = journal.get(link)
        if j is None:
            _problem(out, f"venue order {link} ({o.status}) is not in the journal")
            continue
        if (j["qty"], j["side"], j["filled_qty"]) != (o.qty, o.side, o.cum_qty):
            _problem(out, f"order {link}: journal {j['side']} {j['qty']} filled {j['filled_qty']}, "
                          f"venue {o.side} {o.qty} filled {o.cum_qty}")
        if o.status in FINAL and j["status"] != FINAL[o.status]:
            _problem(out, f"order {link}: journal {j['status']}, venue {o.status}")
    for cid, j in journal.items():
        if cid not in venue and j["status"] != "rejected":
            _problem(out, f"journal order {cid} ({j['status']}) never reached the venue")
    out.duplicate_orders += sum(n - 1 for n in per_decision.values())


def _funding(out: Outcome, acct: Account, rows: list[dict[str, Any]], last_bar: int) -> None:
    """Every funding settlement of the venue up to the run's last bar (settled at that bar's open
    at the latest; a later one came after the run ended) journaled once, with the venue's
    numbers (a funding execution is a ``funding`` row, not a fill)."""
    venue = [(e.order.symbol, e.time, -e.fee) for e in acct.execs if e.exec_type == "Funding" and e.time <= last_bar]
    journal = [(r["symbol"], r["time"], r["amount"]) for r in rows]
    if sorted(venue) != sorted(journal):
        _problem(out, f"funding: venue {sorted(venue)}, journal {sorted(journal)}")


def _fills(out: Outcome, acct: Account, journal: dict[str, dict[str, Any]]) -> None:
    """Every venue execution of an order in the journal with the same numbers, and nothing else there."""
    venue = {e.exec_id: e for e in acct.execs if e.exec_type == "Trade"}
    out.executions = len(venue)
    for eid, e in venue.items():
        f = journal.get(eid)
        if f is None:
            out.lost_fills += 1
            out.note(f"fill {eid} of {e.order.link_id} is not in the journal")
        elif (f["qty"], f["price"], f["fee"], f["fee_currency"], f["order_id"]) != \
                (e.qty, e.price, e.fee, e.fee_currency, e.order.link_id):
            _problem(out, f"fill {eid}: journal {f['qty']} @ {f['price']} fee {f['fee']} {f['fee_currency']}, "
                          f"venue {e.qty} @ {e.price} fee {e.fee} {e.fee_currency}")
    for eid, f in journal.items():
        if eid not in venue:
            _problem(out, f"journal fill {eid} of {f['order_id']} the venue never made")


COLUMNS = ("market", "kills (accept / fill / timer; in start-up)", "exchange orders", "executions", "lost fills",
           "duplicate orders", "other disagreements", "bot failures", "journal position", "exchange position",
           "502/503", "lost acks", "ws drops", "wall s")


def row(o: Outcome) -> list[str]:
    k = o.kills
    n = k["accept"] + k["fill"] + k["timer"]
    return [o.category, f"{n} ({k['accept']} / {k['fill']} / {k['timer']}; {k['start-up']})", str(o.exchange_orders),
            str(o.executions), str(o.lost_fills), str(o.duplicate_orders), str(o.mismatches), str(o.failures),
            _num(o.journal_position), _num(o.exchange_position), str(o.faults["http_5xx"]),
            str(o.faults["lost_acks"]), str(o.faults["ws_dropped"]), f"{o.wall_s:.0f}"]


def _num(d: Decimal) -> str:
    return f"{d.normalize():f}"


def table(outcomes: list[Outcome]) -> str:
    """The markdown table, then every problem in words."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(row(o)) + " |" for o in outcomes]
    for o in outcomes:
        lines += [f"- {o.category}: {p}" for p in o.problems]
    return "\n".join(lines)
