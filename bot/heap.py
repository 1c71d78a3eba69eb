"""The garbage collector while a run's loop runs.

By then the process holds a large heap that lives as long as the run: modules, the config, the
candles' frames, the journal's table metadata. Each full collection would traverse it again
(a twentieth of a ten-market backtest). :func:`startup_heap_frozen` moves it out of the
collector's sight (:func:`gc.freeze`) for the loop and hands it back (:func:`gc.unfreeze`) when
the loop ends, so cyclic garbage made before is collected as usual afterwards. Freezing changes
which objects a collection looks at, never what the program computes.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def startup_heap_frozen() -> Iterator[None]:
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
