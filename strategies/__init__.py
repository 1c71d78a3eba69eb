"""Strategies: a window of closed candles in, a Decision out. Each one is a plugin described by a
:class:`~strategies.spec.StrategySpec`; :mod:`strategies.registry` finds them by name (built-ins,
installed entry points, ``path/to/file.py:ClassName``). Model strategies are imported lazily
(they pull in torch)."""

from __future__ import annotations

from strategies.registry import GROUP, backtest_strategy, create_strategy, find_spec, get_spec, names
from strategies.spec import StrategySpec

__all__ = ["GROUP", "StrategySpec", "backtest_strategy", "create_strategy", "find_spec", "get_spec", "names"]
