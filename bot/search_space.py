"""Search spaces (``bot optimize --space``) and grids (``bot sweep --grid``) over a strategy's params.

A space file maps parameter names (dotted for a section: ``train.lr``) to a range or a list::

    fast: {low: 5, high: 30}              # an int field: every int in [5, 30]
    slow: {low: 20, high: 120, step: 10}
    prob_threshold: {low: 0.4, high: 0.8}  # a float field
    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    allow_short: {choices: [false, true]}

A grid file maps the same names to lists of values (``fast: [5, 10, 20]``). Every name must be a
field of the strategy's parameter model, every bound a value that field accepts; anything else is
one :class:`~bot.errors.ConfigError` line.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from bot.errors import ConfigError

RANGE_KEYS = {"low", "high", "step", "log", "choices"}


@dataclass(frozen=True, slots=True)
class Param:
    """One searched parameter: ``kind`` int or float over [low, high], or categorical ``choices``."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


def _field(model: type[BaseModel], dotted: str, what: str) -> FieldInfo:
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            known = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"{what}: unknown parameter {dotted!r} (known: {known})")
        if i == len(parts) - 1:
            return info
        section = info.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            raise ConfigError(f"{what}: {'.'.join(parts[:i + 1])!r} is not a section, so {dotted!r} is unknown")
        model = section
    raise AssertionError("unreachable")


def _check_value(info: FieldInfo, name: str, value: Any, what: str) -> Any:
    try:
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise ConfigError(f"{what}: {name}: {value!r} is out of range ({msg})") from None


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{what}: {path} must map parameter names to ranges")
    return raw


def load_space(path: Path, model: type[BaseModel]) -> list[Param]:
    """The validated parameters of a space file for the strategy whose params model is ``model``."""
    what = f"--space {path}"
    out = []
    for name, spec in _read(path, what).items():
        name = str(name)
        info = _field(model, name, what)
        if not isinstance(spec, dict) or not spec:
            raise ConfigError(f"{what}: {name}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
        extra = set(spec) - RANGE_KEYS
        if extra:
            raise ConfigError(f"{what}: {name}: unknown key {sorted(extra)[0]!r} (use low, high, step, log or choices)")
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
                raise ConfigError(f"{what}: {name}: choices must be a non-empty list, alone")
            out.append(Param(name, "categorical", choices=tuple(_check_value(info, name, c, what) for c in choices)))
            continue
        out.append(_range(info, name, spec, what))
    return out


def _range(info: FieldInfo, name: str, spec: dict[str, Any], what: str) -> Param:
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{what}: {name}: a range needs both low and high")
    kind = "int" if info.annotation is int else "float" if info.annotation is float else None
    if kind is None:
        raise ConfigError(f"{what}: {name}: not a number field ({info.annotation}): give choices instead")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    for key, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int if kind == "int" else int | float)):
            raise ConfigError(f"{what}: {name}: {key} must be {'an integer' if kind == 'int' else 'a number'}, "
                              f"got {v!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{what}: {name}: log must be true or false, got {log!r}")
    if low >= high:
        raise ConfigError(f"{what}: {name}: low ({low}) must be below high ({high})")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{what}: {name}: step must be positive and cannot go with log")
    if log and low <= 0:
        raise ConfigError(f"{what}: {name}: a log range needs low > 0")
    _check_value(info, name, low, what)
    _check_value(info, name, high, what)
    return Param(name, kind, low, high, step, log)


def load_grid(path: Path, model: type[BaseModel]) -> list[dict[str, Any]]:
    """Every point of a grid file (the product of its lists, in file order), each a dotted-name dict."""
    what = f"--grid {path}"
    names, values = [], []
    for name, vals in _read(path, what).items():
        name = str(name)
        info = _field(model, name, what)
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{what}: {name}: expected a non-empty list of values, got {vals!r}")
        names.append(name)
        values.append([_check_value(info, name, v, what) for v in vals])
    return [dict(zip(names, point, strict=True)) for point in itertools.product(*values)]


def nested(base: dict[str, Any], dotted: dict[str, Any]) -> dict[str, Any]:
    """``base`` (strategy.params) with each dotted name set: ``{"train.lr": 1e-3}`` -> ``{"train": {"lr": ..}}``."""
    out = copy.deepcopy(base)
    for name, value in dotted.items():
        node = out
        *path, leaf = name.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def invalid(model: type[BaseModel], params: dict[str, Any]) -> str | None:
    """Why ``params`` is not a valid parameter set (a cross-field rule such as fast < slow), or None."""
    try:
        model.model_validate(params)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        return f"{where + ': ' if where else ''}{msg}"
    return None
