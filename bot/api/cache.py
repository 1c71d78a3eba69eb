"""Answers computed from all of a run's rows (summary, equity curve, positions, report), kept until
the run's writer commits again (:func:`storage.pages.fingerprint`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import Engine

from storage import pages

T = TypeVar("T")


class RunCache:
    """A small LRU of (run, question) -> answer, each valid while its run's fingerprint holds."""

    def __init__(self, db: Engine, size: int = 64) -> None:
        self.db = db
        self.size = size
        self._items: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str, question: tuple[Hashable, ...], compute: Callable[[], T]) -> T:
        # Read before computing: a commit during the computation makes the next ask compute again.
        fp = pages.fingerprint(self.db, run_id)
        key = (run_id, *question)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == fp:
                self._items.move_to_end(key)
                return hit[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._items[key] = (fp, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value
