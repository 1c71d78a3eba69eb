"""Strategy registry: name -> class. Model strategies are imported lazily (they pull in torch)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from bot.errors import ConfigError
from strategies.base import Strategy, StrategyContext

_REGISTRY: dict[str, str] = {
    "sma": "strategies.sma:SMACrossover",
    "dsc": "strategies.dsc:DSCStrategy",
    "rollout": "strategies.rollout:RolloutStrategy",
    "gru_sizer": "strategies.gru_sizer:GRUSizerStrategy",
}


def available() -> list[str]:
    out = []
    for name, target in _REGISTRY.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def strategy_class(name: str) -> type[Strategy]:
    target = _REGISTRY.get(name)
    names = ", ".join(available())
    if target is None:
        raise ConfigError(f"unknown strategy {name!r}; available: {names}")
    module_name, cls_name = target.split(":")
    if importlib.util.find_spec(module_name) is None:
        raise ConfigError(f"strategy {name!r} is not available in this build; available: {names}")
    return getattr(importlib.import_module(module_name), cls_name)


def create_strategy(name: str, params: dict[str, Any], ctx: StrategyContext) -> Strategy:
    return strategy_class(name).from_config(params, ctx)
