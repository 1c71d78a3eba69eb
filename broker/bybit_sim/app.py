"""The aiohttp application: modules register routes on one app around one shared state.

A module is anything with ``register(app, state, hub)``; the public market half is
:class:`PublicMarketModule`. The private half (orders, positions, wallet, the private stream)
is added later as more modules passed to :func:`build_app` (see docs/bybit-sim.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
from aiohttp import web

from bot.errors import ConfigError
from broker.bybit_sim import rest_market
from broker.bybit_sim.clock import SimClock
from broker.bybit_sim.faults import FaultConfig, rest_middleware
from broker.bybit_sim.market import Market, load_market
from broker.bybit_sim.replayer import run_replayer
from broker.bybit_sim.state import SimState
from broker.bybit_sim.ws import WsHub

log = structlog.get_logger("bybit_sim")

STATE_KEY: web.AppKey[SimState] = web.AppKey("state", SimState)
HUB_KEY: web.AppKey[WsHub] = web.AppKey("hub", WsHub)


class SimModule(Protocol):
    def register(self, app: web.Application, state: SimState, hub: WsHub) -> None: ...


_KLINE = re.compile(r"^kline\.(\w+)\.([A-Z0-9]+)$")


class PublicMarketModule:
    """REST market endpoints plus the public linear/spot WebSocket channels."""

    def register(self, app: web.Application, state: SimState, hub: WsHub) -> None:
        rest_market.register(app, state)

        def valid(topic: str) -> bool:
            m = _KLINE.match(topic)
            mk = state.market(m.group(2)) if m else None
            return mk is not None and m is not None and m.group(1) == mk.interval

        hub.add_channel(app, "/v5/public/linear", "linear", valid)
        hub.add_channel(app, "/v5/public/spot", "spot", valid)


@dataclass
class SimConfig:
    """Everything ``bot exchange-sim`` takes; tests build one directly."""

    data: Sequence[str | Path]
    symbol: str | None = None
    bar_ms: float = 1000.0            # accelerated: wall ms per bar
    realtime: bool = False            # 1x speed instead of bar_ms
    start: int | None = None          # sim start (epoch ms); default: after `history` bars
    history: int = 500                # closed bars before the start when `start` is None
    updates_per_bar: int = 2
    faults: FaultConfig = field(default_factory=FaultConfig)


def build_state(cfg: SimConfig, markets: Iterable[Market] | None = None) -> SimState:
    ms = list(markets) if markets is not None else [load_market(p, cfg.symbol if len(cfg.data) == 1 else None)
                                                     for p in cfg.data]
    if not ms:
        raise ConfigError("exchange-sim needs at least one --data FILE")
    first = ms[0]
    if cfg.start is not None:
        start = int(cfg.start)
    else:
        # Every market has ``history`` closed bars at the start (files may begin on other days):
        # a market whose data starts later never reveals (or fills at) prices ahead of the clock.
        start = max(int(m.t[min(max(cfg.history, 0), len(m) - 1)]) for m in ms)
    if cfg.bar_ms <= 0 and not cfg.realtime:
        raise ConfigError("--bar-ms must be positive")
    clock = SimClock.realtime(start) if cfg.realtime else SimClock.accelerated(start, first.tf_ms, cfg.bar_ms)
    return SimState(clock=clock, markets={m.symbol: m for m in ms}, faults=cfg.faults,
                    updates_per_bar=cfg.updates_per_bar)


def build_app(state: SimState, modules: Sequence[SimModule] | None = None) -> web.Application:
    app = web.Application(middlewares=[rest_middleware(state)])
    hub = WsHub(state)
    app[STATE_KEY] = state
    app[HUB_KEY] = hub
    for mod in modules if modules is not None else [PublicMarketModule()]:
        mod.register(app, state, hub)

    async def replay_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        task = asyncio.create_task(run_replayer(state, hub))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await hub.close()

    app.cleanup_ctx.append(replay_ctx)
    return app


class SimServer:
    """Run the simulator inside the current event loop (tests): ``await start()``, ``await stop()``."""

    def __init__(self, cfg: SimConfig, modules: Sequence[SimModule] | None = None,
                 markets: Iterable[Market] | None = None) -> None:
        self.state = build_state(cfg, markets)
        self.app = build_app(self.state, modules)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimServer:
        self.host = host
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self.runner, sock)
        await site.start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def hub(self) -> WsHub:
        return self.app[HUB_KEY]

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def serve_forever(cfg: SimConfig, host: str, port: int) -> None:
    """``bot exchange-sim``: serve until interrupted."""
    state = build_state(cfg)
    app = build_app(state)
    m = next(iter(state.markets.values()))
    log.info("exchange_sim", url=f"http://{host}:{port}", markets=list(state.markets),
             interval=m.interval, start=state.clock.start_ms, speed=state.clock.speed)
    web.run_app(app, host=host, port=port, access_log=None, print=None)
