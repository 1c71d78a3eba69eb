"""``--strategy path/to/file.py:ClassName``: a strategy from one Python file anywhere on disk.

The file is imported under a module name unique to its absolute path, so two files that share a
name never collide, and re-imported only when it changed on disk. The spec is named
``/absolute/path.py:ClassName``: the journal stores that name, so a report or ``journal explain``
finds the file again later. Every way this can fail is one ConfigError line naming the file, the
class and why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from bot.errors import ConfigError
from strategies.base import Strategy
from strategies.spec import StrategySpec, one_line, spec_from

_MODULE_PREFIX = "bybit_ml_bot_file_strategy_"
#: absolute path -> ((mtime_ns, size), module): a file is executed again only when it changed.
_LOADED: dict[Path, tuple[tuple[int, int], ModuleType]] = {}


def is_file_ref(name: str) -> bool:
    """True for ``file.py``, ``dir/file.py:Class`` and anything else naming a path (registry names never do)."""
    return name.endswith(".py") or ":" in name or "/" in name or "\\" in name


def split_ref(ref: str) -> tuple[str, str | None]:
    """``path.py:Class`` -> (path, Class); ``path.py`` -> (path, None). Splits on the last colon (C:\\ paths)."""
    if ref.endswith(".py"):
        return ref, None
    path, sep, cls = ref.rpartition(":")
    if not sep or not path or "/" in cls or "\\" in cls:
        return ref, None
    return path, cls


def load_file_spec(ref: str) -> StrategySpec:
    """The spec of ``ref``: the file's ``SPEC`` when it is for the named class, else one made from the class."""
    raw, cls_name = split_ref(ref)
    path = Path(raw).expanduser().resolve()
    who = f"strategy {ref}"
    if path.suffix != ".py":
        raise ConfigError(f"{who}: {path} is not a .py file (expected path/to/file.py:ClassName)")
    if not path.is_file():
        raise ConfigError(f"{who}: file {path} not found")
    module = _load(path, who)
    exported = getattr(module, "SPEC", None)
    if cls_name is None:
        if exported is None:
            raise ConfigError(f"{who}: {path} has no SPEC; name the class: {raw}:ClassName")
        return spec_from(exported, str(path), f"SPEC in {path}")
    name = f"{path}:{cls_name}"
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ConfigError(f"{who}: {path} defines no class {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"{who}: {cls_name} in {path} is not a Strategy subclass (strategies.base.Strategy)")
    if isinstance(exported, StrategySpec) and exported.cls is cls:
        return spec_from(exported, name, f"SPEC in {path}")
    return spec_from(cls, name, str(path))


def _load(path: Path, who: str) -> ModuleType:
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _LOADED.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    mod_name = _MODULE_PREFIX + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{who}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses and pydantic resolve annotations through sys.modules.
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(mod_name, None)
        raise ConfigError(f"{who}: syntax error in {path} line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the file raises on import becomes one line
        sys.modules.pop(mod_name, None)
        raise ConfigError(f"{who}: cannot import {path}: {one_line(exc)}") from None
    _LOADED[path] = (stamp, module)
    return module
