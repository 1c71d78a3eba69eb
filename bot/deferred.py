"""Orders before explanations: the decisions of one market whose explanation is completed after
their orders have left.

A strategy may return a :class:`~bot.domain.Decision` with a ``deferred`` part (a model's
attribution: a backward pass, an attention rollout). The engine journals the decision with its
eager part, sends the order, and hands the decision here; :meth:`DeferredExplanations.complete`
then runs each deferred part and journals the completed explanation over the eager one. A
backtest completes right after the order; paper and live after every order of the bar has
left (``bot/runner.py``), always before the market's next bar and the bar's journal commit.

A deferred part that raises (or returns what JSON cannot hold) never undoes the trade: the
journaled explanation keeps the eager part and says ``explanation_error``.
"""

from __future__ import annotations

from typing import Any

import structlog

from bot.domain import EXPLANATION_ERROR, Decision, check_json
from storage.journal import Journal

log = structlog.get_logger("bot.engine")


def completed_explanation(d: Decision) -> dict[str, Any]:
    """``d``'s explanation with its deferred part merged in; on failure the eager part and the
    error (one line, as for a failed strategy call)."""
    try:
        part = d.deferred() if d.deferred is not None else {}
        check_json(part)  # the eager part was checked when the strategy returned it (Engine._checked)
        full = {**d.explanation, **part}  # Decision.completed's merge, without a copy of the decision
    except Exception as exc:  # noqa: BLE001 - user/model code must never undo a trade
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:1000]
        log.warning("explanation_error", symbol=d.symbol, bar_time=d.bar_time, error=msg)
        return {**d.explanation, EXPLANATION_ERROR: msg}
    return full


class DeferredExplanations:
    """The journaled decisions of one market whose deferred explanation part is still to run."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._pending: list[tuple[str, Decision]] = []

    def add(self, decision_id: str, d: Decision) -> None:
        """Keep ``d`` (journaled as ``decision_id``) for :meth:`complete` if it defers a part."""
        if d.deferred is not None:
            self._pending.append((decision_id, d))

    def __bool__(self) -> bool:
        return bool(self._pending)

    def complete(self) -> int:
        """Run every pending deferred part and journal the completed explanations; how many."""
        pending, self._pending = self._pending, []
        for did, d in pending:
            self.journal.complete_explanation(did, completed_explanation(d))
        return len(pending)
