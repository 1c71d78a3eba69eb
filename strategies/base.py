"""The strategy interface: a window of closed candles in, a :class:`Decision` out.

Strategies never talk to a broker. They say where they want to be (a target exposure as a
fraction of equity); the portfolio and risk layers turn that into orders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from bot.bars import Bars
from bot.candles import CandleData
from bot.domain import Decision
from bot.errors import ConfigError
from models.drift import DriftWatch
from models.gaps import gap_explanation, window_gap

if TYPE_CHECKING:
    from models.provenance import Fitted


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class StrategyContext:
    """What a strategy may know about where it runs (never a broker or a database)."""

    symbol: str
    timeframe: str
    long_only: bool
    fee_rate: float = 0.0
    checkpoint: str | None = None


class Strategy(ABC):
    """Base class. Subclasses set ``name`` and ``Params`` and implement :meth:`on_bar`."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams, ctx: StrategyContext) -> None:
        self.params = params
        self.ctx = ctx
        self._notices: list[tuple[str, dict[str, Any]]] = []

    def notice(self, kind: str, payload: dict[str, Any]) -> None:
        """Something the run should hear about (a data warning): the engine journals it as an
        event of ``kind`` and logs it, right after the :meth:`on_bar` that raised it."""
        self._notices.append((kind, payload))

    def take_notices(self) -> list[tuple[str, dict[str, Any]]]:
        """The notices since the last call (the engine's; a strategy never calls it)."""
        out = getattr(self, "_notices", None)  # a plugin that skipped Strategy.__init__ has none
        if not out:
            return []
        self._notices = []
        return out

    def tell_drift(self, watch: DriftWatch, time: int) -> None:
        """Journal the feature-drift warning of ``watch`` once, at the bar it became due."""
        warning = watch.due(time)
        if warning is not None:
            self.notice("feature_drift", warning)

    def gap_flat(self, bars: Bars, window: int, bar_ms: int, **extra: Any) -> Decision | None:
        """Flat, "window spans a gap", while the newest ``window`` (with the feature warm-up)
        is not contiguous; None when it is (or while warming up on a gap-free start)."""
        gap = window_gap(bars.time, bar_ms, window)
        if gap is None:
            return None
        return Decision(bars.symbol, bars.last_time(), 0.0, confidence=0.0, model_id=self.model_id,
                        explanation=gap_explanation(self.name, gap, **extra))

    @classmethod
    def parse_params(cls, raw: dict[str, Any]) -> StrategyParams:
        """``strategy.params`` as this strategy's ``Params``; a bad one is one ConfigError line."""
        try:
            return cls.Params.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(["strategy.params", *(str(p) for p in err["loc"])])  # no loc: a model validator
            msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            raise ConfigError(f"{where}: {msg} (strategy {getattr(cls, 'name', cls.__name__)})") from None

    @classmethod
    def from_config(cls, raw: dict[str, Any], ctx: StrategyContext) -> Strategy:
        return cls(cls.parse_params(raw), ctx)

    @property
    def warmup(self) -> int:
        """Bars needed before the first real decision."""
        return 1

    @property
    def model_id(self) -> str | None:
        return None

    @property
    def fitted(self) -> Fitted | None:
        """What the strategy's model was fitted on (``models.provenance.fitted_of`` of its
        checkpoint); None: no model. Backtests skip those bars, runs refuse another market."""
        return None

    def on_start(self, bars: Bars) -> None:
        """Called once before the first bar, and on resume with the bars seen so far."""

    def precompute(self, data: CandleData) -> None:
        """Backtests only: may batch-compute model outputs for every bar of ``data`` at once.

        Outputs for bar t may use bars [0, t] only, and the decisions must equal those of the
        bar-by-bar path (each model strategy proves it in a test). ``on_bar`` then looks the
        result up by bar time instead of running the model.
        """

    def quiet(self, upcoming: dict[str, np.ndarray], advance: bool = True) -> int:
        """Backtests' fast-forward: ``upcoming`` (``time``, ``open``, ``high``, ``low``, ``close``,
        ``volume``) are the next bars, to close one after another with no order working and
        nothing else happening. Return how many of them, from the first, :meth:`on_bar` would
        return None for, with the state advanced over exactly those bars (as if each had been
        shown to :meth:`on_bar`); the engine then marks them as one block. The next bar is shown
        to :meth:`on_bar` as usual. Nothing past the returned count may change the state.
        ``advance=False`` only counts, the state unchanged (markets that close together ask
        each of theirs first, then advance all by the smallest count).

        Default 0: every bar goes to :meth:`on_bar`. Bar-by-bar parity is tested for each
        strategy that overrides it."""
        return 0

    @classmethod
    def for_backtest(cls, raw: dict[str, Any], ctx: StrategyContext,
                     data: CandleData) -> tuple[Strategy, int, str | None]:
        """Build the strategy for a backtest over ``data``.

        Returns (strategy, first_traded_bar, note). Bars before ``first_traded_bar`` are history
        only; ``note`` tells the user (e.g. that a model was trained on ``data`` first). Bars the
        model was fitted on (:attr:`fitted`) are skipped by the caller, for every strategy alike.
        """
        return cls.from_config(raw, ctx), 0, None

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for restarts (journaled); default: stateless."""
        return {}

    @abstractmethod
    def on_bar(self, bars: Bars) -> Decision | None:
        """Bar ``bars.n - 1`` just closed. Return a Decision, or None to keep the current target.

        Return what decides first: a costly part of the explanation may be the Decision's
        ``deferred`` callable, which the engine runs once the order has left (before the next
        bar); it works from a copy of what it needs and never changes the strategy's state."""

    def clamp(self, target: float) -> float:
        """Long-only markets clamp the target to [0, 1]."""
        if self.ctx.long_only:
            return min(max(target, 0.0), 1.0)
        return max(-1.0, min(1.0, target))
