"""The private WebSocket (pybit) bridged into asyncio, with supervised reconnects.

pybit runs the socket on its own threads; every message is handed to the event loop with
``loop.call_soon_threadsafe``. pybit authenticates on connect (``op: auth``); the subscriptions
go through :class:`broker.bybit.pybit_ws.BotWebSocket`, which is ready for an ack that beats
its own send. The stream is ready once the venue accepted the auth and acked every topic.
pybit does not reconnect by itself here (a clean server close would leave it disconnected
anyway): a supervisor task watches the connection and builds a fresh, freshly authenticated
one. Every step it awaits is bounded (building the socket, the auth and subscribe acks, closing,
the catch-up), so no venue can hold it: a venue that never answers costs one attempt, and the
next follows with backoff. While no ready connection exists ``ready`` is clear: the broker holds
new orders on it. Every (re)connect after the first calls ``on_reconnect`` so missed fills are
fetched over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bot.errors import ExchangeFatalError
from broker.bybit.pybit_ws import BotWebSocket

log = structlog.get_logger("broker.bybit.stream")

MAINNET_WS = "wss://stream.bybit.com/v5/private"
TESTNET_WS = "wss://stream-testnet.bybit.com/v5/private"
TOPICS = ("order", "execution", "position", "wallet")

Handler = Callable[[dict[str, Any]], None]


def private_url(ws_url: str | None, testnet: bool) -> str:
    if not ws_url:
        return TESTNET_WS if testnet else MAINNET_WS
    return ws_url if "/v5/" in ws_url else f"{ws_url.rstrip('/')}/v5/private"


class PrivateStream:
    def __init__(self, api_key: str, api_secret: str, *, url: str, testnet: bool, on_message: Handler,
                 on_reconnect: Callable[[], Awaitable[None]], auth_timeout_s: float = 10.0,
                 connect_timeout_s: float = 10.0, catch_up_timeout_s: float = 120.0,
                 check_every_s: float = 0.2, ping_interval_s: int = 20) -> None:
        self._key, self._secret = api_key, api_secret
        self.url, self.testnet = url, testnet
        self.on_message, self.on_reconnect = on_message, on_reconnect
        self.auth_timeout_s, self.check_every_s, self.ping_interval_s = auth_timeout_s, check_every_s, ping_interval_s
        #: Bounds on opening the socket (and sending the subscribes), and on one ``on_reconnect``.
        self.connect_timeout_s, self.catch_up_timeout_s = connect_timeout_s, catch_up_timeout_s
        self.ready = asyncio.Event()
        self.connects = 0
        self._ws: Any = None
        self._app_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and authenticate once (raising on bad keys), then supervise in the background."""
        self._loop = asyncio.get_running_loop()
        await self._connect()
        self._task = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        self._closed = True
        self.ready.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._exit_ws()

    # -- internals ---------------------------------------------------------------------------------
    def _deliver(self, msg: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.on_message, msg)

    def _build(self, on_created: Callable[[Any], None]) -> Any:
        # No reconnects of pybit's own: the supervisor is the one retrier. (pybit gives up when its
        # retry count reaches zero even if that attempt connected: 2 is one attempt and one spare.)
        ws = BotWebSocket(self.url, connect_timeout_s=self.connect_timeout_s, on_created=on_created,
                          channel_type="private", testnet=self.testnet, api_key=self._key, api_secret=self._secret,
                          ping_interval=self.ping_interval_s, retries=2, restart_on_error=False,
                          private_auth_expire=5)
        for topic in TOPICS:
            getattr(ws, f"{topic}_stream")(self._deliver)
        return ws

    async def _connect(self) -> None:
        """One bounded attempt: an authenticated connection with every topic acked, or
        ExchangeFatalError (and nothing left open)."""
        made: list[Any] = []
        try:
            ws = await asyncio.wait_for(_in_daemon_thread(lambda: self._build(made.append)), self.connect_timeout_s)
        except BaseException as exc:  # noqa: BLE001 - websocket-client raises many types; close() cancels
            self._ws = made[0] if made else None  # a socket half built is closed, never left behind
            await self._exit_ws()
            if not isinstance(exc, Exception):
                raise
            why = (f"no answer within {self.connect_timeout_s:g} s" if isinstance(exc, TimeoutError)
                   else f"cannot connect ({type(exc).__name__})")
            raise ExchangeFatalError(f"private stream {self.url}: {why}") from None
        self._ws = ws
        deadline = time.monotonic() + self.auth_timeout_s
        while not (ws.auth and ws.subscribed):
            failure = self._failure(ws, deadline)
            if failure is not None:
                await self._exit_ws()
                raise ExchangeFatalError(failure)
            await asyncio.sleep(0.02)
        self._app_id = id(getattr(ws, "ws", None))
        self.connects += 1
        self.ready.set()
        log.info("private_stream_ready", connects=self.connects)

    def _failure(self, ws: Any, deadline: float) -> str | None:
        """Why a connection that is not ready yet never will be (None: keep waiting)."""
        if ws.auth_refused is not None or (not ws.auth and (ws.exited or time.monotonic() > deadline)):
            return ("private stream authentication failed: check BYBIT_API_KEY/BYBIT_API_SECRET, testnet vs "
                    "mainnet, and the clock")
        if ws.refused:
            return f"private stream {self.url}: subscription refused ({'; '.join(ws.refused)[:200]})"
        if ws.exited or time.monotonic() > deadline:
            return f"private stream {self.url}: no subscribe ack within {self.auth_timeout_s:g} s"
        return None

    async def _exit_ws(self) -> None:
        """pybit's ``exit`` waits until the socket is released, which never happens when the
        server already dropped it: run it on a daemon thread and release the socket after 2 s."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        t = threading.Thread(target=_quiet_exit, args=(ws,), name="bybit-ws-exit", daemon=True)
        t.start()
        deadline = time.monotonic() + 2.0
        while t.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if t.is_alive():
            app = getattr(ws, "ws", None)
            if app is not None:
                app.sock = None  # ends pybit's wait loop; the connection is gone anyway

    def _healthy(self) -> bool:
        ws = self._ws
        if ws is None or getattr(ws, "exited", False) or not ws.is_connected() or not getattr(ws, "auth", False):
            return False
        return id(getattr(ws, "ws", None)) == self._app_id  # pybit reconnected by itself: treat as a gap

    async def _supervise(self) -> None:
        delay = 0.2
        while not self._closed:
            await asyncio.sleep(self.check_every_s)
            try:
                if self._healthy():
                    continue
                ok = await self._reconnect()
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive anything it calls
                log.error("private_stream_supervisor_error", error=f"{type(exc).__name__}: {exc}")
                ok = False
            if ok:
                delay = 0.2
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _reconnect(self) -> bool:
        """Close what is left, connect afresh, catch up; False when the venue could not be reached."""
        self.ready.clear()
        log.warning("private_stream_lost", connects=self.connects)
        await self._exit_ws()
        try:
            await self._connect()
        except ExchangeFatalError as exc:
            log.error("private_stream_reconnect_failed", error=str(exc))
            return False
        try:
            await asyncio.wait_for(self.on_reconnect(), self.catch_up_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the next reconcile job retries
            log.error("private_stream_catch_up_failed", error=f"{type(exc).__name__}: {exc}")
        return True


def _quiet_exit(ws: Any) -> None:
    with contextlib.suppress(Exception):
        ws.exit()


async def _in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking pybit call on a daemon thread: pybit's connect loop can outlive the event
    loop (a server that went away), and must never hold up the interpreter's exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        if loop.is_closed():
            return
        try:
            res, err = fn(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            res, err = None, exc

        def settle() -> None:
            if fut.done():  # the awaiting task gave up (a timeout)
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(res)

        with contextlib.suppress(RuntimeError):  # ... and its loop may be closed by now
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=run, name="bybit-ws-connect", daemon=True).start()
    return await fut
