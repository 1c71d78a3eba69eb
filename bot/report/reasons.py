"""A decision's explanation as a few short lines of text (the hover of a trade marker, the trade
list, ``bot journal explain``).

Each strategy's spec names its own reasons function (the built-ins' are below, reading the keys
of the explanation contract of docs/explanations.md); a strategy without one gets
:func:`generic_reasons`. Anything malformed gives fewer lines, never an exception.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from bot.errors import ConfigError
from bot.explanation import attribution_of, rule_of
from bot.regime_view import regime_text
from strategies.files import is_file_ref
from strategies.registry import find_spec
from strategies.spec import ReasonsFn, StrategySpec


def fmt_time(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _f(x: Any, spec: str = ".2f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "?"
    return format(v, spec) if math.isfinite(v) else "?"


def _dicts(items: Any, n: int = 3) -> list[dict[str, Any]]:
    """The first ``n`` dict entries of a list (anything else: none)."""
    return [x for x in items if isinstance(x, dict)][:n] if isinstance(items, list) else []


def _probs(e: dict[str, Any]) -> str | None:
    p = e.get("probs")
    if not isinstance(p, dict):
        return None
    sig = e.get("signal")
    head = f"{sig}: " if sig else ""
    return head + " · ".join(f"p({k}) {_f(p.get(k))}" for k in ("up", "flat", "down") if k in p)


def sma_reasons(e: dict[str, Any]) -> list[str]:
    fast, slow = e.get("fast_sma"), e.get("slow_sma")
    try:
        rel = ">" if float(fast) > float(slow) else "≤"
    except (TypeError, ValueError):
        rel = "vs"
    out = [f"fast SMA {_f(fast, ',.2f')} {rel} slow SMA {_f(slow, ',.2f')}"]
    if e.get("rule"):
        out.append(f"rule: {e['rule']}")
    return out


def _rule_line(e: dict[str, Any]) -> str | None:
    rule = rule_of(e)
    return rule["text"] if rule else None


def _contract_lines(e: dict[str, Any]) -> list[str]:
    """The contract's attribution in two short lines: top features with their sign, top older steps."""
    a = e.get("attribution")
    at = attribution_of(e) if isinstance(a, dict) else None
    if at is None:
        return []
    out = []
    if at.features:
        top = sorted(at.features.items(), key=lambda kv: -abs(kv[1]))[:3]
        sign = f" (+ = toward {at.toward})" if at.toward else ""
        out.append("top features: " + ", ".join(f"{k} {_f(v, '+.3g')}" for k, v in top) + sign)
    if len(at.steps) > 1:
        n = len(at.steps)
        older = sorted(range(n - 1), key=lambda i: -abs(at.steps[i]))[:3]
        total = sum(abs(v) for v in at.steps) or 1.0
        out.append("top older bars: " + ", ".join(f"t-{n - 1 - i}" for i in older)
                   + f" · newest bar {abs(at.steps[-1]) / total:.0%} of the weight")
    return out


def dsc_reasons(e: dict[str, Any]) -> list[str]:
    out = [x for x in (_rule_line(e) or _probs(e),) if x]
    if isinstance(e.get("attribution"), dict):
        return out + _contract_lines(e)
    feats = _dicts(e.get("top_features"))
    if feats:
        out.append("top features: " + ", ".join(f"{f.get('feature')} ({_f(f.get('score'), '+.3f')})" for f in feats))
    steps = _dicts(e.get("top_steps"))
    if steps:
        out.append("top steps: " + ", ".join(f"{fmt_time(s.get('time'))[5:]} ({_f(s.get('score'))})" for s in steps))
    return out


def rollout_reasons(e: dict[str, Any]) -> list[str]:
    out = [x for x in (_rule_line(e) or _probs(e),) if x]
    bits = []
    if regime_text(e):
        bits.append(f"regime {regime_text(e)}")
    if e.get("recent_share") is not None:
        bits.append(f"recent share {_f(e.get('recent_share'), '.0%')}")
    if bits:
        out.append(", ".join(bits))
    if isinstance(e.get("attribution"), dict):
        return out + _contract_lines(e)
    steps = _dicts(e.get("top_steps"))
    if steps:
        out.append("attends to: " + ", ".join(f"{fmt_time(s.get('time'))[5:]} ({_f(s.get('weight'))})" for s in steps))
    return out


def gru_sizer_reasons(e: dict[str, Any]) -> list[str]:
    level = e.get("level")
    out = []
    probs = e.get("level_probs")
    p = ""
    if isinstance(probs, list) and isinstance(level, int) and 0 <= level < len(probs):
        p = f" (p {_f(probs[level])})"
    if rule := _rule_line(e):
        out.append(rule + p)
    elif level is not None:
        out.append(f"level {level}/10{p}")
    if regime_text(e):
        out.append(f"regime {regime_text(e)}")
    out += _contract_lines(e)
    path = e.get("predicted_path")
    if isinstance(path, list) and path:
        out.append("predicted path: " + " → ".join(_f(x, "+.2%") for x in path[:5]))
    return out


def generic_reasons(e: dict[str, Any]) -> list[str]:
    """Any explanation: its ``rule`` first, then its other scalar keys as ``key: value``."""
    keys = sorted((k for k, v in e.items() if k != "kind" and isinstance(v, str | int | float | bool)),
                  key=lambda k: k != "rule")
    return [f"{k}: {_f(e[k], '.4g') if isinstance(e[k], float) else e[k]}" for k in keys]


def reasons_of(spec: StrategySpec | None) -> ReasonsFn:
    """The spec's reasons function (loaded if named by a string); generic without a spec or one."""
    if spec is None or spec.reasons is None:
        return generic_reasons
    fn = spec.resolve("reasons")
    return fn if callable(fn) else generic_reasons


def reasons_for(name: Any, files: bool = False) -> ReasonsFn | None:
    """The reasons function of the strategy ``name`` (None if it names none). Files only when asked:
    a journaled run's strategy may be a file, an explanation's ``kind`` is never loaded as one."""
    if not isinstance(name, str) or not name or (is_file_ref(name) and not files):
        return None
    spec = find_spec(name)
    try:
        return None if spec is None else reasons_of(spec)
    except ConfigError:
        return None


def decision_reasons_fn(run: dict[str, Any], explanation: dict[str, Any]) -> ReasonsFn:
    """The reasons of one journaled decision: its explanation's own contract (its ``kind``) first,
    then its run's strategy (a strategy file too), else :func:`generic_reasons`."""
    return (reasons_for(explanation.get("kind")) or reasons_for(run.get("strategy"), files=True)
            or generic_reasons)


def reasons(explanation: dict[str, Any] | None, limit: int = 3, fn: ReasonsFn | None = None) -> list[str]:
    """Up to ``limit`` short lines saying why the decision was taken.

    ``fn`` is the run's strategy's reasons function; without it the explanation's ``kind`` picks one.
    """
    e = explanation if isinstance(explanation, dict) else {}
    if not e:
        return []
    if "kill_switch" in e:
        return [f"kill switch: {e['kill_switch']}"]
    fn = fn or reasons_for(e.get("kind")) or generic_reasons
    try:
        lines = fn(e)
        return [str(x) for x in lines][:limit] if isinstance(lines, list) else []
    except Exception:  # noqa: BLE001 - a malformed explanation (or a plugin's bug) only loses its text
        return []
