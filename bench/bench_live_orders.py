"""Order round trips of the Bybit broker against the local simulator (pybit REST + private stream).

Prints a table: submit -> ACCEPTED (REST create answered, on the engine's loop) and submit ->
FILLED (fill pushed on the private stream; bounded below by the simulator's tick spacing), with
and without injected faults (create timeouts after acceptance, lost acks, 10006 storms, dropped
private streams). Run: python bench/bench_live_orders.py [orders]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.domain import OrderRequest, OrderStatus, Side  # noqa: E402
from broker.bybit import BybitAccount, BybitHttp, PrivateStream, private_url  # noqa: E402
from broker.bybit_sim import PublicMarketModule, SimConfig, SimServer  # noqa: E402
from broker.bybit_sim.private import PrivateModule, account_of  # noqa: E402
from broker.bybit_sim.private_rest import PrivateFaults  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bybit_BTCUSDT_1h.csv.gz"
KEY, SECRET = "BENCHKEY", "BENCHSECRET"


async def _noop() -> None:
    return None


async def run(n: int, faults: PrivateFaults) -> dict[str, float]:
    cfg = SimConfig(data=[str(DATA)], bar_ms=60.0, history=300)
    async with SimServer(cfg, [PublicMarketModule(), PrivateModule(keys={KEY: SECRET}, faults=faults)]) as sim:
        http = BybitHttp(KEY, SECRET, rest_url=sim.rest_url, timeout_s=0.5)
        stream = PrivateStream(KEY, SECRET, url=private_url(sim.ws_url, True), testnet=True,
                               on_message=lambda m: None, on_reconnect=_noop, check_every_s=0.05)
        account = BybitAccount(http, stream=stream)
        broker = account.leg("BTCUSDT", "linear")
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        filled: dict[str, float] = {}

        def listener(o, f) -> None:  # type: ignore[no-untyped-def]
            now = time.perf_counter()
            if o.status is OrderStatus.ACCEPTED:
                acked.setdefault(o.client_order_id, now)
            if o.status is OrderStatus.FILLED:
                filled.setdefault(o.client_order_id, now)
                acked.setdefault(o.client_order_id, now)

        broker.set_listener(listener)
        await account.load()
        t0 = time.perf_counter()
        for i in range(n):
            cid = f"bench-{i}"
            sent[cid] = time.perf_counter()
            broker.submit(OrderRequest(cid, "BTCUSDT", Side.BUY if i % 2 == 0 else Side.SELL, Decimal("0.01")), 0)
            while cid not in filled and time.perf_counter() - sent[cid] < 15:
                await asyncio.sleep(0.001)
        wall = time.perf_counter() - t0
        stats = dict(sim.state.stats)
        venue_orders = len(account_of(sim.state).orders)
        await account.close()
    ack = [acked[c] - sent[c] for c in sent if c in acked]
    fil = [filled[c] - sent[c] for c in sent if c in filled]
    return {"orders": n, "filled": len(fil), "venue_orders": venue_orders,
            "ack_p50_ms": statistics.median(ack) * 1000, "ack_p95_ms": sorted(ack)[int(len(ack) * 0.95) - 1] * 1000,
            "fill_p50_ms": statistics.median(fil) * 1000, "fill_p95_ms": sorted(fil)[int(len(fil) * 0.95) - 1] * 1000,
            "orders_per_s": n / wall, "timeouts": stats.get("create_timeouts", 0),
            "lost_acks": stats.get("lost_acks", 0), "refused_10006": stats.get("private_10006", 0),
            "stream_drops": stats.get("private_drops", 0), "rest_fills": broker.stats["rest_fills"],
            "lookups": broker.stats["lookups"]}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rows = [("clean", asyncio.run(run(n, PrivateFaults()))),
            ("faults", asyncio.run(run(n, PrivateFaults(create_timeout_rate=0.2, create_timeout_s=0.8,
                                                        lost_ack_rate=0.2, storm_rate=0.1, drop_stream_every=4))))]
    cols = list(rows[0][1])
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, r in rows:
        print(f"| {name} | " + " | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
