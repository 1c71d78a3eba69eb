"""Configuration keys from environment variables: ``BOT_<SECTION>__<KEY>[__<KEY>...]``.

``BOT_RISK__MAX_DRAWDOWN=0.2`` is ``--set risk.max_drawdown=0.2``: names are case-insensitive,
``__`` nests (``BOT_MARKETS__1__SYMBOL`` indexes the list, ``BOT_STRATEGY__PARAMS__FAST`` reaches
the one-market shorthand) and the value is parsed as YAML, as a ``--set`` value is. Only names
with ``__`` after the prefix are configuration: ``BOT_DEBUG``, ``BOT_DATA_DIR``, ``BOT_API_TOKEN``
and the like are read where they are used. A variable that names no key of the model is refused
by name, before anything is loaded.

The values are parsed here by hand, not by pydantic-settings' environment source: that one
parses values as JSON (not YAML like ``--set``), ignores names it does not know and cannot index
the ``markets`` list, while here an unknown name must stop the bot with the variable's name.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from bot.errors import ConfigError

PREFIX = "BOT_"
DELIMITER = "__"


@dataclass(frozen=True)
class EnvItem:
    """One configuration variable: its name, the key path it sets and the parsed value."""

    name: str
    path: list[str]
    value: Any

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def parse_value(raw: str) -> Any:
    """A ``--set`` or environment value: YAML (``0.2`` is a float, ``null`` is None), else the text."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def env_items(environ: Mapping[str, str], root: type[BaseModel], aliases: Mapping[str, Any]) -> list[EnvItem]:
    """Every ``BOT_<SECTION>__<KEY>`` variable of ``environ``, checked against the model ``root``
    (``aliases``: top-level names that are not fields, such as the one-market shorthand), in name
    order so that a result never depends on the environment's order."""
    items = []
    for name in sorted(environ):
        if name[: len(PREFIX)].upper() != PREFIX or DELIMITER not in name[len(PREFIX):]:
            continue
        path = name[len(PREFIX):].lower().split(DELIMITER)
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key between '{DELIMITER}'")
        bad = _unknown_at(root, path, aliases)
        if bad is not None:
            what = "config section" if bad == 0 else "config key"
            raise ConfigError(f"environment variable {name}: unknown {what} {'.'.join(path[:bad + 1])!r}")
        items.append(EnvItem(name, path, parse_value(environ[name])))
    return items


def _unknown_at(node: Any, path: list[str], aliases: Mapping[str, Any] | None = None, depth: int = 0) -> int | None:
    """Index of the first part of ``path`` that names nothing under the type ``node``; None if all do."""
    if depth == len(path):
        return None
    origin = get_origin(node)
    if node is Any or node is dict or origin is dict:
        return None  # a free-form mapping (strategy.params): its keys are checked by their owner
    if origin in (Union, types.UnionType):
        found = [_unknown_at(arg, path, aliases, depth) for arg in get_args(node) if arg is not type(None)]
        return None if None in found else max((f for f in found if f is not None), default=depth)
    if origin in (tuple, list):
        if not path[depth].isdigit():
            return depth
        return _unknown_at(get_args(node)[0], path, None, depth + 1)
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return depth  # a plain value has no keys below it
    fields: dict[str, Any] = {k: f.annotation for k, f in node.model_fields.items()}
    fields.update(aliases or {})
    if path[depth] not in fields:
        return depth
    return _unknown_at(fields[path[depth]], path, None, depth + 1)
