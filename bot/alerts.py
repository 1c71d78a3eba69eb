"""Alerts through apprise: what a paper or live run's journal commits, as short messages to
Telegram, Discord, Slack, e-mail or a webhook (any apprise URL).

- The URLs carry tokens, so they are secrets: they come only from ``BOT_ALERT_URLS`` (or a
  ``.env`` file), each is validated by apprise at start-up, and a bad one is named by its
  position, never by its text.
- :class:`AlertObserver` runs in the event loop's thread: it turns committed rows into messages
  (bot/alert_messages.py), applies the rate limit and hands them to a bounded queue; a thread
  of its own sends them, so the loop never waits on the network. ``finished`` queues the run's
  end and waits (bounded) for the queue to drain. A failed send is logged, never raised.
- Every outgoing text passes a :class:`Redactor` that removes each known secret value.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

import structlog

from bot.alert_messages import NOUNS, Message, Tally, daily_message, decision_reason, event_message, fills_message
from bot.alert_messages import run_end_message as end_message
from bot.config import AlertsConfig, Config
from bot.errors import ConfigError
from bot.observe import Committed, RunObserver
from bot.secrets import AlertSecrets, Secrets

log = structlog.get_logger("bot.alerts")

DAY_MS = 86_400_000
#: Orders and decisions remembered to describe later fills and rejections.
REMEMBER = 2000


# -- the URLs and the secrets they hold ------------------------------------------------------------
def split_urls(raw: str) -> list[str]:
    return [u for u in re.split(r"[,\s]+", raw) if u]


def alert_urls() -> list[str]:
    """The notification URLs of ``BOT_ALERT_URLS`` (environment or ``.env``); [] when unset."""
    value = AlertSecrets().alert_urls
    return split_urls(value.get_secret_value()) if value is not None else []


def load_services(urls: list[str]) -> list[Any]:
    """One apprise service per URL; a URL apprise refuses is a ConfigError naming its position only."""
    import apprise  # noqa: PLC0415 - only when alerts are configured

    quiet = logging.getLogger("apprise")  # its own log lines could quote a URL: keep them out of ours
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    services = []
    for i, url in enumerate(urls, 1):
        try:
            svc = apprise.Apprise.instantiate(url)
        except Exception:  # noqa: BLE001 - any refusal is the same answer to the user
            svc = None
        if svc is None:
            raise ConfigError(f"BOT_ALERT_URLS: entry {i} of {len(urls)} is not a valid apprise URL "
                              "(its text is not shown: it may hold a token)")
        services.append(svc)
    return services


def url_secrets(url: str) -> list[str]:
    """The URL and each part of it that may be a token (user, password, host, path segments,
    query values): everything but short numbers and dotted addresses."""
    rest = url.split("://", 1)[-1]
    main, _, query = rest.partition("?")
    pieces = re.split(r"[/:@#]", main) + [pair.partition("=")[2] for pair in query.split("&")]
    keep = [p for p in pieces if len(p) >= 4 and not (re.fullmatch(r"[\d.]+", p) and (len(p) < 10 or "." in p))]
    return [url, *keep]


def known_secrets(cfg: Config, urls: list[str]) -> list[str]:
    """Every secret value this process knows: API key and secret, the alert URLs and their
    tokens, the journal database's password, the dashboard's token."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    out: list[str] = []
    sec = Secrets()
    for v in (sec.api_key, sec.api_secret):
        if v is not None:
            out.append(v.get_secret_value())
    for url in urls:
        out += url_secrets(url)
    try:
        password = make_url(cfg.storage.url).password
    except Exception:  # noqa: BLE001 - a URL sqlalchemy cannot parse has failed elsewhere already
        password = None
    if password:
        out.append(str(password))
    if os.environ.get("BOT_API_TOKEN"):
        out.append(os.environ["BOT_API_TOKEN"])
    return out


class Redactor:
    """Replaces every known secret value (and its URL-quoted forms) in a text with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for s in secrets:
            if s and len(s) >= 4:
                values.update({s, quote(s, safe=""), unquote(s)})
        self.values = sorted(values, key=len, reverse=True)  # a token inside a URL goes with the URL

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, "***")
        return text


# -- how often -------------------------------------------------------------------------------------
class RateLimiter:
    """At most one message per kind every ``min_interval_s`` and ``max_per_minute`` in any 60 s,
    all kinds together. What is held back is counted per kind and folded into the next message
    of that kind (or the run's end)."""

    def __init__(self, min_interval_s: float, max_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s, self.max_per_minute, self.clock = min_interval_s, max_per_minute, clock
        self.last: dict[str, float] = {}
        self.recent: deque[float] = deque()
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()

    def admit(self, kind: str, items: int = 1) -> int | None:
        """None: held back (counted). Else the count of this kind held back until now (now told)."""
        with self.lock:
            now = self.clock()
            while self.recent and now - self.recent[0] >= 60.0:
                self.recent.popleft()
            last = self.last.get(kind)
            if (last is not None and now - last < self.min_interval_s) or len(self.recent) >= self.max_per_minute:
                self.held[kind] = self.held.get(kind, 0) + items
                return None
            self.last[kind] = now
            self.recent.append(now)
            return self.held.pop(kind, 0)

    def hold(self, kind: str, items: int) -> None:
        """Count ``items`` as held back after all (a message the queue could not take)."""
        with self.lock:
            self.held[kind] = self.held.get(kind, 0) + items

    def take_held(self) -> dict[str, int]:
        with self.lock:
            held, self.held = self.held, {}
            return held


# -- sending ---------------------------------------------------------------------------------------
_STOP = object()


class AlertSender:
    """Sends queued messages to every service on a thread of its own; a failure is logged
    (service position and message kind, never the URL), never raised."""

    def __init__(self, services: list[Any], redact: Redactor, queue_size: int = 100) -> None:
        self.services, self.redact = services, redact
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0
        self.queued = 0
        self.done = 0

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="alerts", daemon=True)
            self.thread.start()

    def offer(self, msg: Message) -> bool:
        """Queue ``msg`` without waiting; False when the queue is full."""
        self.start()
        try:
            self.queue.put_nowait(msg)
        except queue.Full:
            return False
        self.queued += 1
        return True

    def close(self, last: Message | None, timeout_s: float) -> int:
        """Queue ``last``, then wait up to ``timeout_s`` for everything to go; the count left unsent."""
        self.start()
        deadline = time.monotonic() + timeout_s
        try:
            if last is not None:
                self.queue.put(last, timeout=max(deadline - time.monotonic(), 0.01))
                self.queued += 1
            self.queue.put(_STOP, timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Full:
            pass
        assert self.thread is not None
        self.thread.join(max(deadline - time.monotonic(), 0.0))
        return self.queued - self.done

    def _run(self) -> None:
        while True:
            msg = self.queue.get()
            if msg is _STOP:
                return
            try:
                self.send(msg)
            except Exception as exc:  # noqa: BLE001 - the thread outlives any one message
                log.error("alert_failed", kind=msg.kind, error=type(exc).__name__)
            finally:
                self.done += 1

    def send(self, msg: Message) -> bool:
        from apprise import NotifyType  # noqa: PLC0415 - loaded already by load_services

        title, body = self.redact(msg.title), self.redact(msg.body)
        ok_all = True
        for i, svc in enumerate(self.services, 1):
            try:
                ok = bool(svc.notify(body=body, title=title, notify_type=NotifyType(msg.level)))
                error = None if ok else "the service refused or could not be reached"
            except Exception as exc:  # noqa: BLE001 - an alert never stops the run; its text may quote the URL
                ok, error = False, type(exc).__name__
            if ok:
                self.sent += 1
            else:
                self.failed += 1
                ok_all = False
                log.warning("alert_send_failed", service=i, kind=msg.kind, error=error)
        return ok_all


# -- the observer ----------------------------------------------------------------------------------
class AlertObserver(RunObserver):
    """Committed rows of a paper or live run -> rate-limited messages on the sender's queue."""

    def __init__(self, cfg: AlertsConfig, sender: AlertSender, initial_cash: float | None,
                 limiter: RateLimiter | None = None) -> None:
        self.cfg, self.sender = cfg, sender
        self.kinds = set(cfg.events)
        self.limiter = limiter or RateLimiter(cfg.min_interval_s, cfg.max_per_minute)
        self.run_id, self.mode = "", ""
        self.initial = initial_cash
        self.total = Tally()
        self.days: dict[int, Tally] = {}
        self.day: int | None = None
        self.day_start: float | None = initial_cash
        self.orders: dict[str, dict[str, Any]] = {}
        self.reasons: dict[str, str] = {}
        self._decisions: dict[str, str] = {}
        self._rejected: dict[str, None] = {}
        self._done = False

    def started(self, runner: Any) -> None:
        self.run_id, self.mode = runner.journal.run_id, runner.plan.mode
        if runner.plan.resume is not None:  # its counts and its day's start are this process's
            self.initial = self.day_start = None
        self.sender.start()

    def committed(self, rows: Committed) -> None:
        self._remember(rows)
        self._tally(rows)
        self._marks(rows)  # a new day's first mark sends the day before's summary
        if rows.fills and "fill" in self.kinds:
            self._emit(fills_message(self.run_id, self.mode, rows.fills, self.reasons))
        for e in rows.events:
            msg = event_message(self.run_id, self.mode, e, self.orders)
            if msg is None or msg.kind not in self.kinds or self._told_before(e):
                continue
            self._emit(msg)

    def finished(self, runner: Any, status: str) -> None:
        if self._done:
            return
        self._done = True
        held = self.limiter.take_held()
        last = end_message(self.run_id, self.mode, status, self.total, self.initial, held) \
            if "run_end" in self.kinds else None
        left = self.sender.close(last, self.cfg.drain_timeout_s)
        if left:
            log.warning("alerts_not_sent", left=left, waited_s=self.cfg.drain_timeout_s)

    # -- helpers ----------------------------------------------------------------------------------
    def _told_before(self, e: dict[str, Any]) -> bool:
        """A rejection journaled twice (at the send, and when the venue's answer arrives) alerts once."""
        if e["kind"] != "order_rejected":
            return False
        oid = str((e.get("payload") or {}).get("order_id"))
        if oid in self._rejected:
            return True
        self._rejected[oid] = None
        return False

    def _emit(self, msg: Message) -> None:
        held = self.limiter.admit(msg.kind, msg.items)
        if held is None:
            return
        if not self.sender.offer(msg.with_held(held, NOUNS.get(msg.kind, msg.kind))):
            self.limiter.hold(msg.kind, msg.items + held)
            log.warning("alert_queue_full", kind=msg.kind)

    def _remember(self, rows: Committed) -> None:
        """Orders and decisions, to say of a later fill or rejection what it was and why."""
        for d in rows.decisions:
            self._decisions[d["id"]] = decision_reason(d)
        for o in rows.new_orders:
            self.orders[o["id"]] = {"symbol": o["symbol"], "side": o["side"], "qty": o["qty"]}
            why = self._decisions.get(o.get("decision_id") or "")
            if why:
                self.reasons[o["id"]] = why
        for memo in (self._decisions, self.orders, self.reasons, self._rejected):
            while len(memo) > REMEMBER:
                del memo[next(iter(memo))]

    def _tally(self, rows: Committed) -> None:
        """Fills and closed trades, into the run's total and their UTC day's (by their own times)."""
        for f in rows.fills:
            self.total.fills += 1
            self._day(int(f["time"])).fills += 1
        for t in rows.trades:
            for tally in (self.total, self._day(int(t["exit_time"]))):
                tally.trades += 1
                tally.net_pnl += t["net_pnl"]

    def _day(self, t: int) -> Tally:
        return self.days.setdefault(t // DAY_MS, Tally())

    def _marks(self, rows: Committed) -> None:
        """Equity marks; the first of a new UTC day closes the day before (its summary)."""
        for block in rows.equity:
            times, equity = block[1], block[2]
            for t, eq in zip(times, equity, strict=True):
                t = int(t)
                day = t // DAY_MS
                if self.day is not None and day > self.day:
                    self._close_day(self.day)
                self.day = day if self.day is None else max(self.day, day)
                for tally in (self.total, self._day(t)):
                    if t >= tally.equity_time:
                        tally.equity, tally.equity_time = float(eq), t

    def _close_day(self, day: int) -> None:
        tally = self.days.pop(day, Tally())
        for d in [d for d in self.days if d < day]:  # days without marks (none expected) go with it
            old = self.days.pop(d)
            tally.fills, tally.trades, tally.net_pnl = (tally.fills + old.fills, tally.trades + old.trades,
                                                        tally.net_pnl + old.net_pnl)
        if self.cfg.daily_summary:
            self._emit(daily_message(self.run_id, self.mode, day * DAY_MS, tally, self.day_start))
        if tally.equity is not None:
            self.day_start = tally.equity


def alert_observer(cfg: Config) -> AlertObserver | None:
    """The run's alerts when ``BOT_ALERT_URLS`` names any (each URL validated here: a bad one is
    a ConfigError before the run is journaled); None when it names none."""
    urls = alert_urls()
    if not urls:
        return None
    services = load_services(urls)
    sender = AlertSender(services, Redactor(known_secrets(cfg, urls)), cfg.alerts.queue_size)
    return AlertObserver(cfg.alerts, sender, cfg.broker.initial_cash)


__all__ = ["AlertObserver", "AlertSender", "RateLimiter", "Redactor", "alert_observer", "alert_urls",
           "known_secrets", "load_services", "split_urls", "url_secrets"]
