"""Scheduled retraining of a market's model in paper and live runs (``market.retrain``).

``retrain: {every: 7d, window_bars: 5000, min_bars: 1000, out_dir: checkpoints/retrained}``:
every ``every`` of wall time the run trains a new checkpoint on the market's closed bars up to
the last one it processed (the last ``window_bars`` of them, or ``expanding``: every bar since
its warm-up began) and swaps it in between two bars (bot/retrain.py). Only model strategies
(those with a trainer) accept it; that is checked when the run starts (bot/retrain.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def duration_s(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"90m"``, ``"30s"`` (pandas' Timedelta syntax) as seconds; ValueError if
    it is not a positive duration."""
    import pandas as pd  # noqa: PLC0415 - only for a config that retrains

    try:  # pandas deprecates the lower-case day unit ("7d"); the config keeps it
        seconds = pd.Timedelta(re.sub(r"(?<=\d)\s*d(?![a-z])", "D", text.strip())).total_seconds()
    except (ValueError, TypeError):
        raise ValueError(f"expected a duration such as 7d, 12h, 30m or 90s, got {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"must be a positive duration, got {text!r}")
    return float(seconds)


class RetrainConfig(BaseModel):
    """When and on which bars a paper or live run retrains one market's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Wall time between two retrainings (the first comes one interval after the run starts).
    every: str
    #: Bars to train on, ending at the last closed bar the run processed; ``expanding``: every
    #: bar the run has seen (its warm-up included). A fixed window is fetched from the venue.
    window_bars: int | Literal["expanding"] = 5000
    #: Fewer closed bars than this (after gaps and filler candles are dropped): the retraining
    #: is refused, journaled as ``model_swap_failed``, and the current model keeps trading.
    min_bars: int = Field(500, ge=1)
    #: Where the new checkpoints go: ``<out_dir>/<run id>/<strategy>_<symbol>_<tf>_<last bar>.pt``.
    out_dir: str = Field("checkpoints/retrained", min_length=1)

    @field_validator("every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError(f"expected a duration such as 7d, 12h or 30m, got {v!r}")
        duration_s(v)
        return v

    @field_validator("window_bars", mode="before")
    @classmethod
    def _window(cls, v: Any) -> Any:
        if isinstance(v, bool) or not (v == "expanding" or (isinstance(v, int) and v >= 2)):
            raise ValueError(f"expected a number of bars (at least 2) or 'expanding', got {v!r}")
        return v

    @model_validator(mode="after")
    def _min_in_window(self) -> RetrainConfig:
        if isinstance(self.window_bars, int) and self.min_bars > self.window_bars:
            raise ValueError(f"min_bars {self.min_bars} is more than window_bars {self.window_bars}")
        return self

    @property
    def every_s(self) -> float:
        return duration_s(self.every)
