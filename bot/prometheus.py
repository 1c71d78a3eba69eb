"""Prometheus metrics of a paper or live run, served over HTTP (``metrics:``, ``--metrics-port``).

A :class:`PrometheusObserver` is a run observer (bot/observe.py): it counts what the journal
committed (orders, fills, events, equity marks), times each bar the runner reports, and serves
its own :class:`~prometheus_client.CollectorRegistry` (never the process-global one, so several
runs in one process keep their figures apart) with prometheus_client's HTTP server from the
run's start to its end. Labels stay small and bounded: the run's symbols, order statuses and
sides. A backtest has no observers, hence no metrics.
"""

from __future__ import annotations

import socket
import threading
import time
from decimal import Decimal
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from bot.domain import timeframe_ms
from bot.errors import ConfigError
from bot.observe import Committed, RunObserver
from storage import queries as q

log = structlog.get_logger("bot.prometheus")

#: Decision latency: 50 us (a rule strategy) to 1 s (a large model on a slow CPU).
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0)

_RECONCILE_KINDS = ("reconcile", "reconcile_periodic", "reconcile_mismatch")


def check_port(host: str, port: int) -> None:
    """One clear ConfigError when ``host:port`` cannot be listened on (in use, or no such
    address), said before the run is journaled; port 0 always finds a free one."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"metrics.host {host!r} is not an address to listen on ({exc.strerror})") from None
    try:
        # SO_REUSEADDR as the HTTP server sets it: a port held by a listener is refused, one in TIME_WAIT is not.
        with socket.create_server(addr[:2], family=family):
            pass
    except OSError as exc:
        raise ConfigError(f"metrics port {port} on {host} is not free ({exc.strerror}): choose another "
                          "--metrics-port / metrics.port (0 picks a free one)") from None


class RunMetrics:
    """The metric families of one run, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.run = Info("bot_run", "The run being served: its id, mode and strategy", registry=r)
        self.start_time = Gauge("bot_start_time_seconds", "Unix time the run (this process) started: up since",
                                registry=r)
        self.bars = Counter("bot_bars", "Bars processed (equity marks journaled)", ["symbol"], registry=r)
        self.latency = Histogram("bot_decision_latency_seconds", "Wall time from a bar group reaching the "
                                 "engines to its orders being sent", buckets=LATENCY_BUCKETS, registry=r)
        self.feed_lag = Gauge("bot_feed_lag_seconds", "Wall clock when the market's latest bar was done "
                              "minus that bar's close time", ["symbol"], registry=r)
        self.orders = Gauge("bot_orders", "The run's orders by current status", ["symbol", "status"], registry=r)
        self.fills = Counter("bot_fills", "Executions", ["symbol", "side"], registry=r)
        self.notional = Counter("bot_filled_notional", "Filled qty x price, quote currency",
                                ["symbol", "side"], registry=r)
        self.rejects = Counter("bot_order_rejects", "Orders rejected (order_rejected events)", ["symbol"],
                               registry=r)
        self.equity = Gauge("bot_equity", "Portfolio equity at the latest mark, quote currency", registry=r)
        self.cash = Gauge("bot_cash", "Cash at the latest mark, quote currency", registry=r)
        self.position = Gauge("bot_position", "Position at the market's latest mark, base currency "
                              "(negative: short)", ["symbol"], registry=r)
        self.exposure = Gauge("bot_exposure", "Position notional / portfolio equity at the market's latest mark",
                              ["symbol"], registry=r)
        self.reconnects = Counter("bot_feed_reconnects", "Market-data stream reconnects (feed_reconnect events)",
                                  registry=r)
        self.stale = Counter("bot_feed_stale", "Times the watchdog found a market's feed stale", ["symbol"],
                             registry=r)
        self.kill = Gauge("bot_kill_switch", "1 once a kill switch tripped (kill_switch event), else 0", registry=r)
        self.reconcile_ok = Gauge("bot_reconcile_ok", "Last journaled reconciliation result: 1 journal and "
                                  "venue agree, 0 mismatch", ["symbol"], registry=r)
        self.reconcile_time = Gauge("bot_reconcile_timestamp_seconds", "Unix time the last reconciliation "
                                    "result was journaled", ["symbol"], registry=r)
        self.kill.set(0)


class PrometheusObserver(RunObserver):
    """Metrics of one paper or live run, served on ``host:port`` from ``started`` to ``finished``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        #: The port asked for; after ``started``, the one listening (port 0 picks a free one).
        self.port = port
        self.registry = CollectorRegistry(auto_describe=True)
        self.m = RunMetrics(self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._orders: dict[str, tuple[str, str]] = {}  # client order id -> (symbol, status)
        self._bar_ms: dict[str, int] = {}
        self._done_bar: dict[str, int] = {}  # symbol -> open time of the last bar bar_done saw
        self._mark = -1  # close time of the mark behind bot_equity / bot_cash

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    # -- hooks -------------------------------------------------------------------------------------
    def started(self, runner: Any) -> None:
        journal = runner.journal
        names = dict.fromkeys(m.strategy.name for m in runner.sessions)
        self.m.run.info({"run_id": journal.run_id, "mode": runner.plan.mode, "strategy": ",".join(names)})
        self.m.start_time.set(time.time())
        self._bar_ms = {m.symbol: timeframe_ms(m.cfg.timeframe) for m in runner.sessions}
        try:
            self.load_journal(runner.db, journal.run_id)
        finally:  # the endpoint is up even if the journal could not be read
            self.serve()

    def committed(self, rows: Committed) -> None:
        for o in rows.new_orders:
            self._order_status(o["id"], o["status"], o["symbol"])
        for oid, values in rows.order_updates.items():
            if "status" in values:
                self._order_status(oid, values["status"])
        for f in rows.fills:
            side = str(f["side"]).lower()
            self.m.fills.labels(f["symbol"], side).inc()
            self.m.notional.labels(f["symbol"], side).inc(float(Decimal(f["qty"]) * Decimal(f["price"])))
        for block in rows.equity:
            self._marks(*block)
        for e in rows.events:
            self._event(e["kind"], e.get("payload") or {})

    def bar_done(self, runner: Any, took_s: float) -> None:
        self.m.latency.observe(took_s)
        now = time.time()
        for m in runner.sessions:
            last = m.engine.last_bar if m.engine is not None else None
            if last is None or self._done_bar.get(m.symbol) == last:
                continue  # this market had no new bar in the group
            self._done_bar[m.symbol] = last
            self.m.feed_lag.labels(m.symbol).set(now - (last + timeframe_ms(m.cfg.timeframe)) / 1000)

    def finished(self, runner: Any, status: str) -> None:
        self.close()

    # -- serving -----------------------------------------------------------------------------------
    def serve(self) -> None:
        """Serve the registry on ``host:port`` (a daemon thread of prometheus_client's)."""
        if self._server is not None:
            return
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = int(self._server.server_port)
        log.info("metrics_listening", host=self.host, port=self.port, url=self.url)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- what the rows say -------------------------------------------------------------------------
    def load_journal(self, db: Any, run_id: str) -> None:
        """A resumed run's orders and kill switch, as the journal holds them (a new run has none);
        counters start from 0 in each process."""
        for o in q.orders(db, run_id):
            self._order_status(o["id"], o["status"], o["symbol"])
        if any(e["kind"] == "kill_switch" for e in q.events(db, run_id)):
            self.m.kill.set(1)

    def _order_status(self, oid: str, status: str, symbol: str | None = None) -> None:
        known = self._orders.get(oid)
        if known is not None:
            if known[1] == status:
                return
            self.m.orders.labels(*known).dec()
            symbol = known[0]
        elif symbol is None:  # an update of an order this process never saw: skip rather than guess
            return
        self._orders[oid] = (symbol, status)
        self.m.orders.labels(symbol, status).inc()

    def _marks(self, symbol: str, times: Any, equity: Any, cash: Any, position: Any, price: Any) -> None:
        n = len(times)
        if not n:
            return
        self.m.bars.labels(symbol).inc(n)
        eq, qty, px = float(equity[-1]), float(position[-1]), float(price[-1])
        self.m.position.labels(symbol).set(qty)
        self.m.exposure.labels(symbol).set(qty * px / eq if eq else 0.0)
        close = int(times[-1]) + self._bar_ms.get(symbol, 0)
        if close >= self._mark:  # the portfolio's latest mark (markets closing together: the last one)
            self._mark = close
            self.m.equity.set(eq)
            self.m.cash.set(float(cash[-1]))

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "order_rejected":
            known = self._orders.get(str(payload.get("order_id")))
            self.m.rejects.labels(known[0] if known else str(payload.get("symbol", "unknown"))).inc()
        elif kind == "feed_reconnect":
            self.m.reconnects.inc()
        elif kind == "feed_stale":
            self.m.stale.labels(str(payload.get("symbol", "unknown"))).inc()
        elif kind == "kill_switch":
            self.m.kill.set(1)
        elif kind in _RECONCILE_KINDS:
            symbol = str(payload.get("symbol", "unknown"))
            self.m.reconcile_ok.labels(symbol).set(1 if reconcile_ok(kind, payload) else 0)
            self.m.reconcile_time.labels(symbol).set(time.time())


def reconcile_ok(kind: str, payload: dict[str, Any]) -> bool:
    """What a reconciliation event says (bot/reconcile.py, bot/scheduler.py): do journal and venue agree?

    ``reconcile`` (start-up): the venue's position equals the journal's, or differs by spot dust
    below one lot; ``reconcile_periodic``: no books difference was found (missed fills recovered
    alone leave the books agreeing); ``reconcile_mismatch`` (paper): never.
    """
    if kind == "reconcile":
        try:
            same = Decimal(str(payload["position_venue"])) == Decimal(str(payload["position_journal"]))
        except (KeyError, ArithmeticError):
            return False
        return same or payload.get("dust") is not None
    if kind == "reconcile_periodic":
        return not ({"qty_books", "qty_venue", "cash_books", "cash_venue"} & payload.keys())
    return False


__all__ = ["LATENCY_BUCKETS", "PrometheusObserver", "RunMetrics", "check_port", "reconcile_ok"]
