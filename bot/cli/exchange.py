"""``bot exchange-sim`` (a local Bybit v5) and ``bot data download`` (ccxt history)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from bot.cli.common import console, err_console
from bot.errors import ConfigError


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Market data: download candles in the replay format.", no_args_is_help=True)

    @data_app.command("download")
    def download(
        symbol: str = typer.Option("BTCUSDT", "--symbol", help="Exchange id (BTCUSDT) or ccxt symbol."),
        timeframe: str = typer.Option("1h", "--timeframe", "-t", help="Bar size: 1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d."),
        since: str = typer.Option(..., "--since", help="First candle (UTC date or datetime)."),
        until: str | None = typer.Option(None, "--until", help="Stop before this time (default: now)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output .csv or .csv.gz (appended if it exists)."),
        exchange: str = typer.Option("bybit", "--exchange", help="Any ccxt exchange id."),
        category: str = typer.Option("linear", "--category", help="spot or linear."),
        rest_url: str | None = typer.Option(None, "--rest-url", help="Override the API base URL."),
        funding: bool = typer.Option(False, "--funding", help="Also the funding-rate history (perpetuals), "
                                     "beside the candles as <prefix>_<SYMBOL>_funding_8h.csv.gz."),
    ) -> None:
        """Download OHLCV candles (paginated, rate-limit aware, resumable), optionally funding rates."""
        from bot.data_download import download as run_download  # noqa: PLC0415
        from bot.timeutil import parse_date  # noqa: PLC0415

        if category not in ("spot", "linear"):
            raise ConfigError(f"unknown --category {category!r}: expected spot or linear")
        res = asyncio.run(run_download(
            exchange_id=exchange, symbol=symbol, timeframe=timeframe, since_ms=parse_date(since), out=out,
            category=category, until_ms=parse_date(until) if until else None, rest_url=rest_url, funding=funding))
        console.print(f"{res.path}: +{res.added} candles, {res.total} in file")
        if res.rules is not None:
            console.print(f"instrument rules: {res.rules}")
        if res.funding is not None:
            console.print(f"{res.funding.path}: +{res.funding.added} funding rates, {res.funding.total} in file")

    app.add_typer(data_app, name="data")

    @app.command("exchange-sim")
    def exchange_sim(
        data: list[Path] = typer.Option(..., "--data", "-d", help="Candle file(s) to replay (repeatable)."),
        port: int = typer.Option(8600, "--port", help="TCP port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        symbol: str | None = typer.Option(None, "--symbol", help="Symbol (default: from the file name)."),
        bar_ms: float = typer.Option(1000.0, "--bar-ms", help="Accelerated clock: one bar every N wall ms."),
        realtime: bool = typer.Option(False, "--realtime", help="Play at 1x instead of --bar-ms."),
        start: str | None = typer.Option(None, "--start", help="Sim start time (UTC); default after --history."),
        history: int = typer.Option(500, "--history", help="Closed bars before the start."),
        updates: int = typer.Option(2, "--updates-per-bar", help="Unconfirmed kline pushes per bar."),
        latency_ms: float = typer.Option(0.0, "--latency-ms", help="Added latency, REST and WS."),
        jitter_ms: float = typer.Option(0.0, "--jitter-ms", help="Extra latency drawn in [0, N] ms."),
        http_error_rate: float = typer.Option(0.0, "--http-error-rate", help="Fraction of REST calls -> 502/503."),
        rate_limit: int = typer.Option(0, "--rate-limit", help="Requests/s per client and path (10006 above)."),
        ws_drop_every: int = typer.Option(0, "--ws-drop-every", help="Drop WebSockets every N closed bars."),
        ws_duplicate_rate: float = typer.Option(0.0, "--ws-duplicate-rate",
                                                help="Fraction of WebSocket pushes sent twice."),
        ws_reorder_rate: float = typer.Option(0.0, "--ws-reorder-rate",
                                              help="Fraction of pushes held back behind the next one."),
        ws_delay_ms: float = typer.Option(0.0, "--ws-delay-ms", help="Extra delay on every push."),
        ws_ack_delay_ms: float = typer.Option(0.0, "--ws-ack-delay-ms",
                                              help="Venue latency before a subscribe is acked (default: at once)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the fault knobs' random draws."),
        api_key: list[str] | None = typer.Option(None, "--api-key", help="Test API key (repeatable); enables "
                                                 "the private half (orders, wallet, /v5/private)."),
        api_secret: list[str] | None = typer.Option(None, "--api-secret", help="Secret for each --api-key."),
        initial_usdt: float = typer.Option(10_000.0, "--initial-usdt", help="Private: starting USDT balance."),
        fee_rate: float = typer.Option(0.001, "--fee-rate", help="Private: fee per fill (fraction of notional)."),
        slippage_bps: float = typer.Option(0.0, "--slippage-bps", help="Private: market-order slippage."),
        partial_fills: int = typer.Option(1, "--partial-fills", help="Private: fill each order in up to N "
                                          "executions, pushed one by one (PartiallyFilled between them)."),
        thin_every: int = typer.Option(0, "--thin-every", help="Private: every Nth market order half fills, "
                                       "the rest is cancelled (IOC on a thin bar)."),
        create_timeout_rate: float = typer.Option(0.0, "--create-timeout-rate",
                                                  help="Accepted creates answered too late (client times out)."),
        lost_ack_rate: float = typer.Option(0.0, "--lost-ack-rate", help="Accepted creates answered HTTP 502."),
        storm_rate: float = typer.Option(0.0, "--storm-rate", help="Private requests refused with 10006."),
        drop_private_every: int = typer.Option(0, "--drop-private-every",
                                               help="Drop private streams before every Nth execution push."),
    ) -> None:
        """Serve a local Bybit v5 (market REST + public WebSocket) replaying candle files."""
        if partial_fills < 1 or thin_every < 0:
            raise ConfigError("--partial-fills must be 1 or more and --thin-every 0 (never) or more")
        from bot.timeutil import parse_date  # noqa: PLC0415
        from broker.bybit_sim.app import SimConfig, serve_forever  # noqa: PLC0415
        from broker.bybit_sim.faults import FaultConfig  # noqa: PLC0415

        faults = FaultConfig(latency_ms=latency_ms, jitter_ms=jitter_ms, http_error_rate=http_error_rate,
                             rate_limit=rate_limit, ws_drop_every=ws_drop_every,
                             ws_duplicate_rate=ws_duplicate_rate, ws_reorder_rate=ws_reorder_rate,
                             ws_delay_ms=ws_delay_ms, ws_ack_delay_ms=ws_ack_delay_ms, seed=seed)
        cfg = SimConfig(data=[str(p) for p in data], symbol=symbol, bar_ms=bar_ms, realtime=realtime,
                        start=parse_date(start) if start else None, history=history, updates_per_bar=updates,
                        faults=faults)
        err_console.print(f"Bybit v5 simulator on http://{host}:{port} and ws://{host}:{port}/v5/public/linear")
        if api_key:
            from broker.bybit_sim.account import AccountConfig  # noqa: PLC0415
            from broker.bybit_sim.private import PrivateModule, serve_with_private  # noqa: PLC0415
            from broker.bybit_sim.private_rest import PrivateFaults  # noqa: PLC0415

            if len(api_secret or []) != len(api_key):
                raise ConfigError("give one --api-secret for every --api-key")
            module = PrivateModule(
                keys=dict(zip(api_key, api_secret or [], strict=True)),
                account=AccountConfig(initial_usdt=initial_usdt, fee_rate=fee_rate, slippage_bps=slippage_bps,
                                      partial_fills=partial_fills, thin_every=thin_every),
                faults=PrivateFaults(create_timeout_rate=create_timeout_rate, lost_ack_rate=lost_ack_rate,
                                     storm_rate=storm_rate, drop_stream_every=drop_private_every, rate_limit=0))
            err_console.print(f"private half on: ws://{host}:{port}/v5/private, {len(api_key)} API key(s)")
            serve_with_private(cfg, host, port, module)
            return
        serve_forever(cfg, host, port)
