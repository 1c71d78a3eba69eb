"""The built-in strategies' report sections, the generic one, and which one a run gets.

Strategy specs name these by import path ("bot.report.sections:SMA"); every part is itself a
"module:attr" string, so this module imports no plotting library.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError
from bot.report.reasons import reasons_of
from bot.report.section import ReportSection
from strategies.files import is_file_ref
from strategies.registry import find_spec, get_spec
from strategies.spec import ReasonsFn, StrategySpec


def _builtin(key: str, title: str, view: str, **margins: float) -> ReportSection:
    return ReportSection(key, title, view=f"bot.report.models:{view}_view",
                         figures=f"bot.report.figures_models:{view}_figures", png=f"bot.report.png_models:{view}_png",
                         margins=margins)


SMA = _builtin("sma", "SMA crossover: the two moving averages", "sma")
DSC = _builtin("dsc", "DSC classifier: confidence and calibration", "dsc", wspace=0.18)
# The rollout heatmap's colour bar needs room on the right.
ROLLOUT = _builtin("rollout", "Rollout: what the transformer attended to", "rollout",
                   left=0.085, right=0.94, wspace=0.2, hspace=0.15)
GRU_SIZER = _builtin("gru_sizer", "GRU sizer: position level against price", "sizer")
#: Any strategy without a section of its own: target and actual exposure against price, confidence.
GENERIC = _builtin("generic", "Decisions: target exposure and confidence", "generic")


@dataclass(frozen=True, slots=True)
class RunStrategy:
    """What the report uses of a run's strategy: its section and its reasons."""

    section: ReportSection
    reasons: ReasonsFn
    #: Why the generic section stands in for the strategy's own (its file is gone, ...), or "".
    note: str = ""


def for_run(strategy: str, decisions: list[dict[str, Any]]) -> RunStrategy:
    """The spec of the run's strategy (by its journaled name, else by the kind its decisions'
    explanations carry), or the generic section and reasons when neither finds one."""
    note = ""
    try:
        spec: StrategySpec | None = get_spec(strategy)
    except ConfigError as exc:
        spec = _by_kind(decisions)
        if spec is None:
            note = f"The generic section stands in for this run's strategy: {exc}"
    section = GENERIC
    if spec is not None and spec.report is not None:
        found = spec.resolve("report")
        if not isinstance(found, ReportSection):
            raise ConfigError(f"strategy {spec.name}: report is a {type(found).__name__}, not a ReportSection")
        section = found
    return RunStrategy(section, reasons_of(spec), note)


def _by_kind(decisions: list[dict[str, Any]]) -> StrategySpec | None:
    """The registered strategy most explanations name in ``kind`` (never a file: see reasons_for)."""
    kinds = Counter(k for d in decisions if isinstance(d.get("explanation"), dict)
                    and isinstance(k := d["explanation"].get("kind"), str) and k and not is_file_ref(k))
    for kind, _ in kinds.most_common(3):
        spec = find_spec(kind)
        if spec is not None:
            return spec
    return None
