"""Reading an explanation's ``regime``: the volatility-regime dict ``{"label", "basis"}`` of
models/vol_regime.py, or the bare string older journals hold (``mixed``, ``bull``, ...)."""

from __future__ import annotations

from typing import Any


def regime_label(expl: dict[str, Any] | None) -> str | None:
    """``"high"`` for ``{"label": "high", ...}``, the string itself for an old journal, else None."""
    r = (expl or {}).get("regime")
    if isinstance(r, dict):
        r = r.get("label")
    return str(r) if r else None


def regime_text(expl: dict[str, Any] | None) -> str | None:
    """Words for a person: ``"high volatility (24-bar realised vol in the top third ...)"``."""
    r = (expl or {}).get("regime")
    if isinstance(r, dict) and r.get("label"):
        basis = f" ({r['basis']})" if r.get("basis") else ""
        return f"{r['label']} volatility{basis}"
    return regime_label(expl)
