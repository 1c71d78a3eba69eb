"""A local Bybit v5 simulator (REST + WebSocket) replaying a candle file on its own clock.

Public half: market endpoints and the public kline stream. See docs/bybit-sim.md for the
structure and how to add the private (authenticated) half.
"""

from broker.bybit_sim.app import PublicMarketModule, SimConfig, SimServer, build_app, build_state
from broker.bybit_sim.faults import FaultConfig

__all__ = ["FaultConfig", "PublicMarketModule", "SimConfig", "SimServer", "build_app", "build_state"]
