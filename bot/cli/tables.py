"""Journal rows as a table that fits 100 columns, or every column with ``--wide``.

Each listing names its columns once (:class:`Col`): the key of the row (the JSON/CSV column),
the header a person reads, how to show the value, and whether only ``--wide`` shows it. By
default ids are shortened (a run id to its first 8 characters, a decision, order, trade or
execution id to its shortest tail that is unique among the rows shown, marked ``…``), long
text is cut at the column's width, times are UTC minutes (``2024-01-01 13:00``), and fractions
are percent. ``--wide`` shows every column and whole ids at the table's natural width. JSON and
CSV always carry every column, in full (:func:`bot.cli.common.emit`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from bot.units import MONEY, PERCENT, format_metric

#: A column's kinds: how its values are shown.
KINDS = ("text", "run", "id", "time", "num", "metric", "json")
ELLIPSIS = "…"
#: Ids up to this long (after the run's prefix) are shown whole (a decision's bar time in epoch
#: ms); longer ones as their unique tail.
ID_WHOLE = 13
#: The shortest tail an id is cut to.
ID_TAIL = 6
FIT = 100


@dataclass(frozen=True, slots=True)
class Col:
    key: str
    label: str = ""
    kind: str = "text"
    #: Only ``--wide`` shows it.
    wide: bool = False
    #: Default tables cut longer text at this width (with an ellipsis).
    width: int | None = None

    @property
    def header(self) -> str:
        return self.label or self.key


def table_time(v: Any) -> str:
    """Epoch ms (a bar, an execution) or a datetime (a run's start) as UTC for a table: to the
    minute, with seconds only when an epoch ms has some."""
    if isinstance(v, datetime):
        dt = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        return dt.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, int | float) and not isinstance(v, bool):
        dt = datetime.fromtimestamp(int(v) / 1000, tz=UTC)
    else:
        return str(v)
    return dt.strftime("%Y-%m-%d %H:%M" if dt.second == 0 and dt.microsecond == 0 else "%Y-%m-%d %H:%M:%S")


def short_ids(values: Sequence[Any], run_id: str | None = None) -> list[str]:
    """Ids as a table shows them: the run's own prefix dropped, then (when still longer than
    ``ID_WHOLE``) each cut to the shortest tail, at least ``ID_TAIL`` long, that no other id of
    ``values`` ends with."""
    texts = ["" if v is None else str(v) for v in values]
    if run_id:
        mark = f"{run_id}-"
        texts = [t[t.index(mark) + len(mark):] if mark in t else t for t in texts]
    longest = max((len(t) for t in texts), default=0)
    if longest <= ID_WHOLE:
        return texts
    present = [t for t in texts if t]
    for n in range(ID_TAIL, longest + 1):
        if len({t[-n:] for t in present}) == len(set(present)):
            break
    return [t if len(t) <= n else ELLIPSIS + t[-n:] for t in texts]


#: How a default table names a protective exit (``--wide``, JSON and CSV: the reason itself).
EXIT_SHORT = {"stop_loss": "stop", "take_profit": "target", "trailing_stop": "trail"}


def _text(col: Col, v: Any, wide: bool) -> str:
    if v is None or v == "":
        return ""
    if col.kind == "time":
        return table_time(v)
    if col.kind == "run":
        return str(v) if wide else str(v)[:8]
    if col.kind == "exit":  # a protective exit's reason, short in a table that must fit 100 columns
        return str(v) if wide else EXIT_SHORT.get(str(v), str(v))
    if col.kind == "metric" or (col.key in PERCENT | MONEY and isinstance(v, int | float | Decimal)):
        return format_metric(col.key, v)
    if col.kind == "json" or isinstance(v, dict | list):
        return json.dumps(v, default=str)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, Decimal):
        return format(v, "f")
    return str(v)


def build_table(rows: list[dict[str, Any]], cols: list[Col], *, title: str = "", wide: bool = False,
                run_id: str | None = None) -> Table:
    """The table of ``rows``: by default the columns a person needs, cut to :data:`FIT` columns
    (the columns with a ``width`` give up what is too much); ``wide``: every column, whole."""
    shown = [c for c in cols if wide or not c.wide]
    cells: dict[str, list[str]] = {}
    for c in shown:
        if c.kind == "id" and not wide:
            cells[c.key] = short_ids([r.get(c.key) for r in rows], run_id)
        else:
            cells[c.key] = [_text(c, r.get(c.key), wide) for r in rows]
    widths = {c.key: c.width for c in shown if c.width is not None and not wide}
    table = _table(rows, shown, cells, widths, title)
    if widths:
        excess = _natural_width(table) - FIT
        for key in sorted(widths, key=lambda k: -(widths[k] or 0)):
            if excess <= 0:
                break
            used = max((len(t) for t in cells[key]), default=0)
            give = min(excess, max(min(used, widths[key] or 0) - 8, 0))
            widths[key] = min(used, widths[key] or 0) - give
            excess -= give
        table = _table(rows, shown, cells, widths, title)
    return table


def _table(rows: list[dict[str, Any]], shown: list[Col], cells: dict[str, list[str]], widths: dict[str, int | None],
           title: str) -> Table:
    table = Table(title=title or None, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  header_style="bold", title_justify="left")
    for c in shown:
        numeric = c.kind in ("num", "metric") or c.key in PERCENT | MONEY
        table.add_column(c.header, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis",
                         max_width=widths.get(c.key))
    for i in range(len(rows)):
        table.add_row(*[cells[c.key][i] for c in shown])
    return table


def _natural_width(table: Table) -> int:
    probe = Console(width=1_000_000)
    return Measurement.get(probe, probe.options, table).maximum


def print_table(console: Console, table: Table, *, wide: bool = False) -> None:
    """Print ``table`` on ``console``; ``wide``: at its natural width, however wide the console."""
    if wide:
        natural = Console(width=max(_natural_width(table), console.width), soft_wrap=True,
                          force_terminal=console.is_terminal, no_color=console.no_color, highlight=False)
        natural.print(table)
        return
    console.print(table)
