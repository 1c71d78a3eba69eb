"""A strategy as a plugin: one :class:`StrategySpec` says what the rest of the bot needs to know.

Each strategy module exports ``SPEC``. Everything beyond the class is optional and named lazily
("module:attr" strings, imported only by the part that uses them), so importing a strategy never
imports the report's plotting libraries or the CLI:

- ``trainer`` / ``evaluator``: ``bot train`` / ``bot evaluate`` (``models.training`` requests);
- ``report``: a ``bot.report.section.ReportSection`` (or "module:attr" naming one) for
  ``bot journal report``; without one the report draws a generic section;
- ``reasons``: ``explanation dict -> short lines`` for trade hovers, the trade list and
  ``bot journal explain``; without one the explanation's scalar keys are listed;
- ``summary_section``: ``(console, db, run_id) -> None``, printed after a CLI backtest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.errors import BotError, ConfigError
from strategies.base import Strategy, StrategyContext, StrategyParams

if TYPE_CHECKING:
    from bot.candles import CandleData

#: ``explanation -> lines``: why a decision was taken, in a few short lines.
ReasonsFn = Callable[[dict[str, Any]], list[str]]


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception as part of a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_ref(ref: Any, what: str) -> Any:
    """The object a "module:attr" string names (anything else is returned as is)."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{what}: {ref!r} is not a 'module:attribute' reference")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raises on import becomes one line
        raise ConfigError(f"{what}: cannot load {ref}: {one_line(exc)}") from None
    return obj


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """What the bot knows about one strategy: its class and, optionally, its tools and views."""

    name: str
    cls: type[Strategy]
    #: "module:function": ``train(models.training.TrainRequest) -> Path``.
    trainer: str | Callable[..., Any] | None = None
    #: "module:function": ``evaluate(models.training.EvalRequest) -> dict`` for checkpoints of kind ``name``.
    evaluator: str | Callable[..., Any] | None = None
    #: A ``bot.report.section.ReportSection`` or a "module:attr" naming one.
    report: Any = None
    #: ``explanation -> lines`` or a "module:attr" naming one.
    reasons: str | ReasonsFn | None = None
    #: ``(console, db, run_id) -> None`` or a "module:attr" naming one: printed after a CLI backtest.
    summary_section: str | Callable[..., Any] | None = None
    description: str = ""
    #: The trainer accepts several assets at once (``TrainRequest.more``: ``bot train --data A --data B``).
    multi_asset: bool = False

    @property
    def params(self) -> type[StrategyParams]:
        return self.cls.Params

    def resolve(self, field: str) -> Any:
        """The object an optional field names (None when unset); ConfigError if it cannot be loaded."""
        return load_ref(getattr(self, field), f"strategy {self.name}: {field}")

    def create(self, raw: dict[str, Any], ctx: StrategyContext) -> Strategy:
        """The strategy built from its config parameters, named after this spec."""
        return self._named(self._guard("constructor", self.cls.from_config, raw, ctx))

    def for_backtest(self, raw: dict[str, Any], ctx: StrategyContext,
                     data: CandleData) -> tuple[Strategy, int, str | None]:
        """:meth:`Strategy.for_backtest` with the same guarantees as :meth:`create`."""
        strategy, first, note = self._guard("constructor", self.cls.for_backtest, raw, ctx, data)
        return self._named(strategy), first, note

    def _guard(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        # The bot's own errors already are one clear line; anything else is a bug in the strategy.
        try:
            return fn(*args)
        except BotError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's failure becomes one line, not a traceback
            raise ConfigError(f"strategy {self.name}: {what} failed: {one_line(exc)}") from None

    def _named(self, strategy: Any) -> Strategy:
        if not isinstance(strategy, Strategy):
            raise ConfigError(f"strategy {self.name}: constructor returned {type(strategy).__name__}, "
                              "not a Strategy")
        # The journal names a run after ``strategy.name``: the registry's name finds this spec again.
        if getattr(strategy, "name", None) != self.name:
            strategy.name = self.name  # type: ignore[misc]
        return strategy


def spec_from(obj: Any, name: str, origin: str) -> StrategySpec:
    """A spec from what a plugin exports: a StrategySpec (renamed to ``name``) or a Strategy subclass."""
    if isinstance(obj, StrategySpec):
        if not (isinstance(obj.cls, type) and issubclass(obj.cls, Strategy)):
            raise ConfigError(f"strategy {name}: {origin} has a spec whose cls is not a Strategy subclass")
        return obj if obj.name == name else replace(obj, name=name)
    if isinstance(obj, type) and issubclass(obj, Strategy):
        return StrategySpec(name=name, cls=obj, description=(obj.__doc__ or "").strip().split("\n")[0])
    raise ConfigError(f"strategy {name}: {origin} is a {type(obj).__name__}, not a Strategy subclass "
                      "or a StrategySpec")

