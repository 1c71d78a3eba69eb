"""The report's faithfulness section (issue 14): can the stored attribution be trusted, and does it
tell winning trades from losing ones?

- Deletion test per method, from the faithfulness block the decisions carry (measured on the
  model's validation windows and stored in its checkpoint): masking the method's top-k older
  candles vs k random older ones, and the newest bar alone.
- Winners vs losers: the mean signed attribution over older steps and over features at the entry
  decisions of winning vs losing trades, with a permutation test saying whether they differ.

A run whose decisions carry no contract attribution gets no section. Computed from the journal
only: nothing here needs the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.explanation import Attribution, attribution_of, method_name, num
from bot.report.data import ReportData

PERMUTATIONS = 2000
#: Entries needed on each side before winners and losers are compared.
MIN_TRADES = 3
ALPHA = 0.05


@dataclass(slots=True)
class Deletion:
    method: str                  # the method's name, in words
    decisions: int               # decisions of the run explained by it
    k: int | None
    windows: int | None
    top_k: float                 # drop of the target when masking the method's top-k older steps
    random_k: float              # ... k random older steps
    newest: float | None         # ... only the newest bar
    rank: int | None


@dataclass(slots=True)
class WinLoss:
    n_win: int
    n_loss: int
    steps_win: np.ndarray | None     # mean signed share per older step (oldest first), winners
    steps_loss: np.ndarray | None
    features: list[str]
    feats_win: np.ndarray | None     # mean signed share per feature
    feats_loss: np.ndarray | None
    p_steps: float | None
    p_features: float | None
    sentence: str


@dataclass(slots=True)
class FaithView:
    target: str | None
    toward: str | None
    deletion: list[Deletion]
    winloss: WinLoss
    note: str                        # what the deletion test says, in words


def _share(v: np.ndarray) -> np.ndarray:
    total = float(np.abs(v).sum())
    return v / total if total > 0 else v


def _deletions(atts: list[Attribution]) -> list[Deletion]:
    by: dict[str, list[Attribution]] = {}
    for a in atts:
        by.setdefault(a.method, []).append(a)
    out = []
    for method, group in by.items():
        blocks = [a.faithfulness for a in group if a.faithfulness]
        if not blocks:
            continue
        # One checkpoint stores one block: the most common one stands for the method.
        key = Counter(repr(sorted(b.items())) for b in blocks).most_common(1)[0][0]
        f = next(b for b in blocks if repr(sorted(b.items())) == key)
        out.append(Deletion(method_name(method), len(group), _int(f.get("k")), _int(f.get("windows")),
                            float(num(f["older_top_k_drop"]) or 0.0), float(num(f["older_random_k_drop"]) or 0.0),
                            num(f.get("newest_drop")), _int(f.get("rank"))))
    return sorted(out, key=lambda d: (d.rank or 99, d.method))


def _int(v: Any) -> int | None:
    f = num(v)
    return int(f) if f is not None else None


def permutation_p(a: np.ndarray, b: np.ndarray, n: int = PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided permutation test of the distance between the mean rows of ``a`` and ``b``."""
    both = np.concatenate([a, b])
    obs = float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n):
        idx = rng.permutation(len(both))
        x, y = both[idx[:len(a)]], both[idx[len(a):]]
        hits += float(np.linalg.norm(x.mean(axis=0) - y.mean(axis=0))) >= obs - 1e-15
    return (hits + 1) / (n + 1)


def _winloss(d: ReportData, window: int, features: list[str]) -> WinLoss:
    rows: dict[bool, tuple[list[np.ndarray], list[np.ndarray]]] = {True: ([], []), False: ([], [])}
    for t in d.trades.itertuples(index=False):
        entry = d.decision_by_id.get(t.entry_decision_id) if t.entry_decision_id else None
        a = attribution_of(entry["explanation"]) if entry else None
        if a is None or t.net_pnl == 0:
            continue
        steps, feats = rows[t.net_pnl > 0]
        if len(a.steps) == window and window > 1:
            steps.append(_share(np.asarray(a.steps[:-1], dtype=np.float64)))
        if features and a.features and all(f in a.features for f in features):
            feats.append(_share(np.asarray([a.features[f] for f in features], dtype=np.float64)))
    (sw, fw), (sl, fl) = rows[True], rows[False]
    n_win = max(len(sw), len(fw))
    n_loss = max(len(sl), len(fl))
    p_steps = permutation_p(np.stack(sw), np.stack(sl)) if min(len(sw), len(sl)) >= MIN_TRADES else None
    p_feats = permutation_p(np.stack(fw), np.stack(fl)) if min(len(fw), len(fl)) >= MIN_TRADES else None
    return WinLoss(n_win, n_loss, np.mean(sw, axis=0) if sw else None, np.mean(sl, axis=0) if sl else None,
                   features, np.mean(fw, axis=0) if fw else None, np.mean(fl, axis=0) if fl else None,
                   p_steps, p_feats, _sentence(n_win, n_loss, p_steps, p_feats))


def _sentence(n_win: int, n_loss: int, p_steps: float | None, p_feats: float | None) -> str:
    counts = f"{n_win} winning vs {n_loss} losing trades"
    tests = [(w, p) for w, p in (("older-step profile", p_steps), ("feature profile", p_feats)) if p is not None]
    if not tests:
        return (f"Too few trades to compare winners with losers ({counts} with an attribution at entry; "
                f"at least {MIN_TRADES} of each are needed).")
    ps = ", ".join(f"{w}: p = {p:.2f}" for w, p in tests)
    if any(p < ALPHA for _, p in tests):
        return (f"Winning and losing entries differ in what the model weighted ({ps}; permutation test, "
                f"{PERMUTATIONS} shuffles, {counts}).")
    return (f"Winning and losing entries do not differ in what the model weighted: the differences below are "
            f"what shuffling the labels gives too ({ps}; permutation test, {PERMUTATIONS} shuffles, {counts}).")


def _note(dels: list[Deletion], target: str | None) -> str:
    if not dels:
        return "The decisions carry no faithfulness score (their model was trained before it was measured)."
    parts = []
    for x in dels:
        ratio = f"{x.top_k / x.random_k:.1f}x" if x.random_k > 0 else "n/a"
        where = f" on {x.windows:,} validation windows" if x.windows else " on validation windows"
        parts.append(f"{x.method} ({x.decisions:,} decisions): masking its top {x.k or 'k'} older candles moved "
                     f"{target or 'the output'} by {x.top_k:.4g} vs {x.random_k:.4g} for random ones ({ratio}){where}")
    return "; ".join(parts) + "."


def faith_view(d: ReportData) -> FaithView | None:
    """The section's view, or None when no decision carries a contract attribution."""
    atts = [a for r in d.decisions if isinstance((r["explanation"] or {}).get("attribution"), dict)
            and (a := attribution_of(r["explanation"])) is not None]
    if not atts:
        return None
    window = Counter(len(a.steps) for a in atts).most_common(1)[0][0]
    feats = Counter(tuple(sorted(a.features)) for a in atts if a.features)
    features = list(feats.most_common(1)[0][0]) if feats else []
    dels = _deletions(atts)
    target = next((a.target for a in atts if a.target), None)
    toward = next((a.toward for a in atts if a.toward), None)
    return FaithView(target, toward, dels, _winloss(d, window, features), _note(dels, target))
