"""The model card as readable rich tables (the JSON card is written by :mod:`models.checkpoint`).

Generic over model kinds: the summary comes from :class:`ModelMeta`, and every section of
``meta.metrics`` (a dict of scalars / small nested dicts) becomes one column of the metrics
table, so a new model kind gets a card by filling ``metrics``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from models.checkpoint import ModelMeta
from models.provenance import fitted_of


def _ms(v: Any) -> str:
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(int(v) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError):
        return str(v)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"  # small drops stay readable
    if isinstance(v, list) and v and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # an interval
    return str(v)


VERDICT = "verdict"  # a section's sentences: printed under the table, not in it


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are kept as values; verdicts are left out."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k == VERDICT:
            continue
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def summary_table(meta: ModelMeta) -> Table:
    t = Table(title=f"model card: {meta.model_id}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    tr = meta.train_range
    fitted = fitted_of(meta)
    t.add_row("kind", meta.kind)
    t.add_row("modules", ", ".join(meta.modules))
    bars = f"  ({fitted.bars} bars)" if fitted.bars else ""
    if fitted.assets:  # a multi-asset checkpoint: every asset's own range
        t.add_row("fitted on", "\n".join(f"{a.describe()}  ({a.bars} bars)" for a in fitted.assets)
                  + f"\n(hash {meta.data_hash or '?'})")
    else:
        t.add_row("fitted on", f"{fitted.describe()}{bars}  (hash {meta.data_hash or '?'})"
                               + (f"; {fitted.note}" if fitted.note else ""))
    if meta.normalizer.get("kind") == "rolling":
        t.add_row("normalisation", f"rolling z-score over each asset's last {meta.normalizer.get('window')} bars")
    if tr.get("source"):
        t.add_row("data", f"{tr['source']}  {_ms(tr.get('start'))} .. {_ms(tr.get('end'))}")
    t.add_row("window / horizon", f"{meta.window} bars / {meta.horizon} bars")
    t.add_row("features", f"{len(meta.feature_names)}: {', '.join(meta.feature_names)}")
    t.add_row("hyper-parameters", ", ".join(f"{k}={v}" for k, v in flatten(meta.hparams).items()))
    if meta.labels:
        t.add_row("labels", ", ".join(f"{k}={_fmt(v)}" for k, v in flatten(meta.labels).items()))
    if meta.train_config:
        keys = ("epochs", "batch_size", "lr", "seed", "label_smoothing", "patience")
        t.add_row("training", ", ".join(f"{k}={meta.train_config[k]}" for k in keys if k in meta.train_config))
    t.add_row("created", meta.created)
    return t


def metrics_table(metrics: dict[str, Any], title: str = "metrics (after fees where relevant)") -> Table | None:
    """One column per section of ``metrics`` whose values are dicts; rows = flattened keys."""
    sections = {k: flatten(v) for k, v in metrics.items() if isinstance(v, dict)}
    if not sections:
        return None
    rows: list[str] = []
    for flat in sections.values():
        for k in flat:
            if k not in rows:
                rows.append(k)
    t = Table(title=title)
    t.add_column("metric", style="bold")
    for name in sections:
        t.add_column(name, justify="right", overflow="fold")
    for r in rows:
        t.add_row(r, *[_fmt(sections[s].get(r, "")) for s in sections])
    return t


def verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """"section: sentence" for every sentence a metrics section carries (skill or its absence)."""
    return [f"{name}: {line}" for name, sec in metrics.items() if isinstance(sec, dict)
            for line in sec.get(VERDICT, [])]


DELETION_KEY = "faithfulness_validation"  # meta.metrics key of the deletion test (models.faithfulness)


def _num(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def deletion_table(table: dict[str, dict[str, Any]], title: str, ranking: list[str] | None = None) -> Table:
    """The deletion test of every method: drops of p(up) - p(down) when masking the top-k older steps
    (newest bar excluded) vs k random older steps, their ratio, the newest bar alone, and features."""
    order = ranking or sorted(table, key=lambda m: -float(table[m]["older_top_k_drop"]))
    t = Table(title=title)
    for col in ("rank", "method", "k", "older top-k drop", "older random-k drop", "ratio", "newest-bar drop",
                "top features drop", "random features drop", "p(class) top-k drop", "windows"):
        if col == "method":  # the name is what the reader looks up: never cut, the numbers wrap first
            t.add_column(col, no_wrap=True, min_width=max((len(m) for m in order), default=6))
        else:
            t.add_column(col, justify="right")
    for i, m in enumerate(order, 1):
        r = table[m]
        t.add_row(str(i), m, str(r["k"]), _num(r["older_top_k_drop"]), _num(r["older_random_k_drop"]),
                  _num(r.get("ratio"), 2), _num(r["newest_drop"]), _num(r.get("features_top_k_drop")),
                  _num(r.get("features_random_k_drop")), _num(r.get("older_top_k_prob_drop")), str(r["windows"]))
    return t


def render_card(meta: ModelMeta) -> Group:
    """The whole card (summary + metrics + the deletion test) as one renderable for ``console.print``."""
    parts: list[Any] = [summary_table(meta)]
    metrics = {k: v for k, v in meta.metrics.items() if k != DELETION_KEY}
    mt = metrics_table(metrics)
    if mt is not None:
        parts.append(mt)
    parts.extend(Text(line) for line in verdict_lines(metrics))  # Text: no markup in '[lo, hi]'
    chosen = meta.extra.get("explain")
    if isinstance(chosen, dict) and chosen.get("table"):
        parts.append(deletion_table(chosen["table"], "faithfulness on validation windows (deletion test of "
                                    f"p(up) - p(down)); stored explanation: {chosen.get('winner')}",
                                    chosen.get("ranking")))
    return Group(*parts)
