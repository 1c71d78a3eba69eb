"""Where strategies come from: the built-ins, installed plugins, and files.

A name resolves, in this order, to

1. a built-in (``sma``, ``dsc``, ``rollout``, ``gru_sizer``; the baselines ``buy_hold``, ``vol_only``):
   the ``SPEC`` of its module, imported
   on demand (model strategies pull in torch, so listing the names never imports them);
2. a file, ``path/to/file.py:ClassName`` (see :mod:`strategies.files`);
3. an entry point of the group ``bybit_ml_bot.strategies`` of any installed distribution, whose
   object is a :class:`StrategySpec` or a Strategy subclass; the entry point's name is the
   strategy's name.

Every failure is one :class:`ConfigError` line.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError
from strategies.base import Strategy, StrategyContext
from strategies.files import is_file_ref, load_file_spec
from strategies.spec import StrategySpec, one_line, spec_from

if TYPE_CHECKING:
    from bot.candles import CandleData

#: The entry-point group installed packages register strategies under.
GROUP = "bybit_ml_bot.strategies"

#: Built-in strategy name -> the module whose ``SPEC`` describes it.
BUILTINS: dict[str, str] = {
    "sma": "strategies.sma",
    "dsc": "strategies.dsc",
    "rollout": "strategies.rollout",
    "gru_sizer": "strategies.gru_sizer",
    "buy_hold": "strategies.buy_hold",
    "vol_only": "strategies.vol_only",
}


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=GROUP))


def names() -> list[str]:
    """Every strategy name a config may use (files aside), without importing any strategy."""
    out = [n for n, module in BUILTINS.items() if importlib.util.find_spec(module) is not None]
    out += sorted({ep.name for ep in _entry_points()} - set(out))
    return out


def get_spec(name: str) -> StrategySpec:
    """The spec ``name`` resolves to (ConfigError, one line, when it does not)."""
    if name in BUILTINS:
        return _builtin(name)
    if is_file_ref(name):
        return load_file_spec(name)
    for ep in _entry_points():
        if ep.name == name:
            return _from_entry_point(ep)
    raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(names())} "
                      "(or path/to/file.py:ClassName)")


def find_spec(name: str) -> StrategySpec | None:
    """:func:`get_spec`, or None when ``name`` resolves to nothing loadable (a file since deleted)."""
    try:
        return get_spec(name)
    except ConfigError:
        return None


def create_strategy(name: str, params: dict[str, Any], ctx: StrategyContext) -> Strategy:
    return get_spec(name).create(dict(params), ctx)


def backtest_strategy(name: str, params: dict[str, Any], ctx: StrategyContext,
                      data: CandleData) -> tuple[Strategy, int, str | None]:
    """(strategy, first traded bar, note) for a backtest over ``data`` (see Strategy.for_backtest)."""
    return get_spec(name).for_backtest(dict(params), ctx, data)


def _builtin(name: str) -> StrategySpec:
    module_name = BUILTINS[name]
    if importlib.util.find_spec(module_name) is None:
        raise ConfigError(f"strategy {name!r} is not available in this build; available: {', '.join(names())}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"strategy {name}: cannot import {module_name}: {one_line(exc)}") from None
    return spec_from(getattr(module, "SPEC", None), name, f"{module_name}.SPEC")


def _from_entry_point(ep: metadata.EntryPoint) -> StrategySpec:
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - an installed plugin's import error becomes one line
        raise ConfigError(f"strategy {ep.name}: entry point {ep.value} cannot be loaded: {one_line(exc)}") from None
    return spec_from(obj, ep.name, f"entry point {ep.value}")
