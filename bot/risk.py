"""Risk between decision and order: exposure cap, kill switches, minimum size, cooldown.

Limits on one market (exposure, notional, minimum order, cooldown) live in that market's
:class:`RiskManager`; the kill switches (drawdown, daily loss) watch the portfolio's equity in
one :class:`PortfolioRisk` that every market's manager shares, so a trip stops every market.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.config import RiskConfig

DAY_MS = 86_400_000


@dataclass(slots=True)
class KillSwitch:
    reason: str
    time: int
    equity: float
    detail: dict[str, Any]


class PortfolioRisk:
    """Kill-switch state over the portfolio's equity, shared by every market of a run."""

    def __init__(self, cfg: RiskConfig) -> None:
        self.cfg = cfg
        self.peak = 0.0
        self.day = -1
        self.day_start = 0.0
        self.tripped: KillSwitch | None = None

    def on_equity(self, t: int, equity: float) -> KillSwitch | None:
        """Update peaks; return a KillSwitch the first time a limit is breached."""
        if equity > self.peak:
            self.peak = equity
        day = t // DAY_MS
        if day != self.day:
            self.day = day
            self.day_start = equity
        if self.tripped is not None:
            return None
        cfg = self.cfg
        if cfg.max_drawdown and self.peak > 0:
            dd = 1.0 - equity / self.peak
            if dd >= cfg.max_drawdown:
                return self.trip("max_drawdown", t, equity, {"drawdown": dd, "limit": cfg.max_drawdown})
        if cfg.max_daily_loss and self.day_start > 0:
            loss = 1.0 - equity / self.day_start
            if loss >= cfg.max_daily_loss:
                return self.trip("max_daily_loss", t, equity,
                                 {"daily_loss": loss, "limit": cfg.max_daily_loss})
        return None

    def trip(self, reason: str, t: int, equity: float, detail: dict[str, Any]) -> KillSwitch:
        self.tripped = KillSwitch(reason, t, equity, detail)
        return self.tripped


class RiskManager:
    def __init__(self, cfg: RiskConfig, long_only: bool, portfolio: PortfolioRisk | None = None) -> None:
        self.cfg = cfg
        self.long_only = long_only
        self.portfolio = portfolio if portfolio is not None else PortfolioRisk(cfg)
        self.last_order_bar = -(10**9)

    @property
    def tripped(self) -> KillSwitch | None:
        return self.portfolio.tripped

    @property
    def watches_equity(self) -> bool:
        return bool(self.portfolio.cfg.max_drawdown or self.portfolio.cfg.max_daily_loss)

    def on_equity(self, t: int, equity: float) -> KillSwitch | None:
        return self.portfolio.on_equity(t, equity)

    def clamp(self, target: float) -> float:
        cap = self.cfg.max_exposure
        lo = 0.0 if self.long_only else -cap
        return min(max(target, lo), cap)

    def check_notional(self, t: int, equity: float, notional: float) -> KillSwitch | None:
        lim = self.cfg.max_position_notional
        if self.tripped is None and lim and notional > lim:
            return self.portfolio.trip("max_position_notional", t, equity, {"notional": notional, "limit": lim})
        return None

    def cap_target_for_notional(self, target: float, equity: float) -> float:
        lim = self.cfg.max_position_notional
        if lim and equity > 0 and abs(target) * equity > lim:
            return (lim / equity) * (1 if target > 0 else -1)
        return target

    def allows_order(self, bar_index: int, notional: float) -> str | None:
        """None if an order may go out now, else the reason it may not."""
        if self.tripped is not None and self.cfg.kill_action == "freeze":
            return f"kill switch ({self.tripped.reason}) froze trading"
        if bar_index - self.last_order_bar < self.cfg.cooldown_bars:
            return "cooldown"
        if notional < self.cfg.min_order_notional:
            return "below min_order_notional"
        return None

    def cap_gross(self, target_notional: float, others_gross: float, equity: float) -> float:
        """The largest |notional| this market may hold under ``max_gross_exposure`` (the portfolio's
        sum of |position notional| over equity), given the other markets' gross notional."""
        cap = self.portfolio.cfg.max_gross_exposure
        if not cap or equity <= 0:
            return target_notional
        room = max(cap * equity - others_gross, 0.0)
        return min(target_notional, room)
