"""Protective exits in the configuration: a market's stop-loss, take-profit and trailing stop.

Each is a distance from the entry price, as a fraction of it (``stop_loss: 0.02``, the same as
``stop_loss: {fraction: 0.02}``) or as a multiple of the ATR at the decision's close
(``stop_loss: {atr: 2}``). The engine turns them into price levels when the position's entry
fills (bot/protection.py); a strategy's Decision may give its own stop and target prices.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ExitDistance(BaseModel):
    """How far from the entry price an exit sits: exactly one of ``fraction`` and ``atr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: float | None = Field(None, gt=0, le=10)
    atr: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"fraction": data}
        if not isinstance(data, dict | ExitDistance):
            raise ValueError(f"expected a fraction of the entry price (0.02) or {{atr: 2}}, got {data!r}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> ExitDistance:
        if (self.fraction is None) == (self.atr is None):
            raise ValueError("give exactly one of fraction (of the entry price) and atr (multiple of the ATR)")
        return self


class ExitsConfig(BaseModel):
    """A market's protective exits; every one is off unless set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_loss: ExitDistance | None = None
    take_profit: ExitDistance | None = None
    trailing_stop: ExitDistance | None = None
    #: Bars of the average true range an ``atr`` distance is measured in (the decision bar and
    #: the ones before it: no later bar).
    atr_period: int = Field(14, ge=1, le=1000)

    @field_validator("stop_loss", "trailing_stop")
    @classmethod
    def _below_entry(cls, v: ExitDistance | None) -> ExitDistance | None:
        if v is not None and v.fraction is not None and v.fraction >= 1:
            raise ValueError(f"a stop's fraction of the entry price must be below 1, got {v.fraction:g}")
        return v

    @property
    def any(self) -> bool:
        return any(x is not None for x in (self.stop_loss, self.take_profit, self.trailing_stop))

    @property
    def uses_atr(self) -> bool:
        return any(x is not None and x.atr is not None for x in (self.stop_loss, self.take_profit, self.trailing_stop))
