"""Read one decision's attribution and rule in the shape of the explanation contract (issue 14).

Every consumer (``bot journal explain``, the report, the dashboard, :mod:`bot.attention`) reads
attributions through :func:`attribution_of`, which understands the contract's ``attribution``
dict and, for journals written before it, the old keys (rollout's ``attribution`` list +
``times``; dsc's ``feature_scores`` / ``top_steps``). Anything malformed gives None, never an
exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: How a method's name reads for a person.
METHOD_NAMES = {
    "signed_grad_x_input": "signed gradient x input",
    "abs_grad_x_input": "|gradient x input|",
    "input_x_gradient": "|gradient x input|",
    "rollout": "attention rollout",
    "grad_rollout": "gradient-weighted attention rollout",
    "occlusion": "occlusion",
}
#: What a negative value pushes toward, for the contract's ``toward`` values.
OPPOSITE = {"up": "down", "down": "up", "larger position": "smaller position",
            "smaller position": "larger position"}


def num(v: Any) -> float | None:
    """A finite float, or None for anything that is not one."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def method_name(method: Any) -> str:
    return METHOD_NAMES.get(str(method), str(method).replace("_", " ")) if method else "attribution"


def opposite(toward: str) -> str:
    return OPPOSITE.get(toward, f"against {toward}")


@dataclass(frozen=True, slots=True)
class Attribution:
    """One decision's attribution, contract shape (``old`` marks one read from the old keys)."""

    method: str
    toward: str | None                  # what a positive value pushes toward; None: unsigned weights
    target: str | None                  # the attributed quantity, in words
    steps: list[float]                  # oldest first, the newest bar last (empty: none stored)
    times: list[int]                    # open time of each step (empty when unknown)
    features: dict[str, float] | None
    faithfulness: dict[str, Any] | None
    old: bool = False
    #: old dsc decisions stored only their top steps: (time, score) pairs, not a whole window
    sparse_steps: tuple[tuple[int, float], ...] = ()

    @property
    def signed(self) -> bool:
        return self.toward is not None

    def older(self) -> list[tuple[int, float]]:
        """(index, value) of every step but the newest."""
        return list(enumerate(self.steps[:-1]))


def _floats(items: Any) -> list[float] | None:
    if not isinstance(items, list) or not items:
        return None
    out = [num(x) for x in items]
    return None if any(v is None for v in out) else out  # type: ignore[return-value]


def _features(raw: Any) -> dict[str, float] | None:
    if not isinstance(raw, dict):
        return None
    out = {str(k): f for k, v in raw.items() if (f := num(v)) is not None}
    return out or None


def _faith(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    keys = ("older_top_k_drop", "older_random_k_drop")
    return raw if all(num(raw.get(k)) is not None for k in keys) else None


def attribution_of(expl: Any, bar_time: Any = None) -> Attribution | None:
    """The attribution of an explanation (contract shape, else the old keys), or None."""
    if not isinstance(expl, dict):
        return None
    a = expl.get("attribution")
    if isinstance(a, dict):
        return _contract(a, bar_time)
    if isinstance(a, list):
        return _old_rollout(expl)
    if "feature_scores" in expl or "top_steps" in expl:
        return _old_dsc(expl)
    return None


def _contract(a: dict[str, Any], bar_time: Any) -> Attribution | None:
    steps = _floats(a.get("steps")) or []
    features = _features(a.get("features"))
    if not steps and not features:
        return None
    bar_ms, t = num(a.get("bar_ms")), num(bar_time)
    times = ([int(t - (len(steps) - 1 - i) * bar_ms) for i in range(len(steps))]
             if steps and bar_ms and bar_ms > 0 and t is not None else [])
    toward = a.get("toward")
    return Attribution(method=str(a.get("method") or "attribution"),
                       toward=str(toward) if isinstance(toward, str) and toward else None,
                       target=str(a["target"]) if isinstance(a.get("target"), str) else None,
                       steps=steps, times=times, features=features, faithfulness=_faith(a.get("faithfulness")))


def _old_rollout(expl: dict[str, Any]) -> Attribution | None:
    steps = _floats(expl.get("attribution"))
    if steps is None:
        return None
    times = expl.get("times")
    ok = isinstance(times, list) and len(times) == len(steps) and all(num(x) is not None for x in times)
    return Attribution(method="rollout", toward=None, target="p(predicted class)", steps=steps,
                       times=[int(x) for x in times] if ok else [], features=None, faithfulness=None, old=True)


def _old_dsc(expl: dict[str, Any]) -> Attribution | None:
    features = _features(expl.get("feature_scores"))
    if features is None and isinstance(expl.get("top_features"), list):
        features = _features({f.get("feature"): f.get("score") for f in expl["top_features"] if isinstance(f, dict)})
    sparse = []
    if isinstance(expl.get("top_steps"), list):
        for s in expl["top_steps"]:
            if isinstance(s, dict) and (t := num(s.get("time"))) is not None \
                    and (v := num(s.get("score", s.get("weight")))) is not None:
                sparse.append((int(t), v))
    if features is None and not sparse:
        return None
    method = expl.get("method") if isinstance(expl.get("method"), str) else "attribution"
    # The old magnitudes carried no documented sign: shown as they are, read as unsigned.
    return Attribution(method=method, toward=None, target=None, steps=[], times=[], features=features,
                       faithfulness=None, old=True, sparse_steps=tuple(sorted(sparse)))


def rule_of(expl: Any) -> dict[str, Any] | None:
    """The contract's ``rule`` dict (with a ``text``), or an old string rule as ``{"text": ...}``."""
    if not isinstance(expl, dict):
        return None
    r = expl.get("rule")
    if isinstance(r, dict) and isinstance(r.get("text"), str) and r["text"]:
        return r
    if isinstance(r, str) and r:
        return {"text": r}
    return None


def rule_condition(text: str) -> str:
    """A classifier rule without its ``-> long`` tail (the action says it already)."""
    head, sep, tail = text.rpartition("->")
    if sep and tail.strip() in ("long", "short", "flat") and head.strip():
        return head.strip()
    return text.strip()


def rule_words(rule: dict[str, Any]) -> str:
    """The rule in words: its text, and the threshold / sizing it came from."""
    text = str(rule.get("text"))
    extra = []
    if (th := num(rule.get("threshold"))) is not None:
        extra.append(f"threshold {th:.2f}")
    if (lv := num(rule.get("level"))) is not None:
        extra.append(f"level {lv:.0f}")
    if (mx := num(rule.get("max_exposure"))) is not None:
        extra.append(f"max exposure {mx:g} x equity")
    return text + (f" ({', '.join(extra)})" if extra else "")


def faithfulness_words(a: Attribution) -> str:
    """"signed gradient x input; on N validation windows masking its top 5 older candles moved ..."."""
    name = method_name(a.method)
    f = a.faithfulness
    if f is None:
        return f"{name}; no faithfulness score stored" + (" (a decision journaled before it was measured)"
                                                          if a.old else "")
    top, rnd = num(f["older_top_k_drop"]), num(f["older_random_k_drop"])
    k = f.get("k", "k")
    windows = f"{int(num(f.get('windows')) or 0):,} " if num(f.get("windows")) else ""
    target = a.target or "the model's output"
    if rnd and rnd > 0 and top is not None:
        how = f"{top / rnd:.1f}x more than random ({top:.4g} vs {rnd:.4g})"
    else:
        how = f"by {top:.4g} (random: {rnd:.4g})"
    out = f"{name}; on {windows}validation windows masking its top {k} older candles moved {target} {how}"
    if (nd := num(f.get("newest_drop"))) is not None:
        out += f"; masking the newest bar alone: {nd:.4g}"
    if (rank := num(f.get("rank"))) is not None:
        out += f"; rank {rank:.0f} among the methods tested"
    return out
