"""Does a regime label mean anything? Class shares and held-out forward outcomes per class.

    python bench/regime_study.py [--data-dir DIR] [--fit-fraction 0.6] [--boot 1000] [--markdown]
                                 [--rollout CHECKPOINT --rollout-data FILE]

Per data file (every candle file of the shared data folder): the first ``fit-fraction`` of the
bars is the fitting period (the volatility terciles are fitted there, as training does), the rest
is HELD OUT. On every held-out bar (each is a decision bar: the model strategies decide on every
closed candle) it labels:

- ``vote``: bull / bear / sideways of models/regime.py over 64 bars (gru_sizer's label until now);
- ``vol``: low / normal / high 24-bar realised vol against the fitting period's terciles
  (models/vol_regime.py, the label the explanations now carry);
- ``vol_30d``: the same 24-bar vol against the terciles of its own previous 720 bars (a trailing
  reference instead of training terciles; shown for comparison, it needs 744 bars of history);
- ``attention`` (with ``--rollout``): rollout's momentum / mixed / mean_reversion label from the
  attention rollout of a trained checkpoint, on the bars after its fit.

Outcomes: forward log return over the next 1, 6 and 24 bars and the realised vol of the next 24
bars. Each is measured on NON-OVERLAPPING forward windows (every h-th bar for horizon h), so the
bootstrap intervals (95 %, i.i.d. resampling of those bars within each class) and the
Kruskal-Wallis p-value (are the classes' distributions equal?) are not faked by overlap.
A label passes on a file when every class holds >= 15 % of the held-out bars and some outcome has
p < 0.01.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kruskal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bot.domain import timeframe_ms  # noqa: E402
from bot.feeds.replay import load_candles  # noqa: E402
from models import regime as vote_regime  # noqa: E402
from models import vol_regime  # noqa: E402

OUTCOMES = (("ret_1", 1), ("ret_6", 6), ("ret_24", 24), ("vol_24", 24))
MIN_SHARE = 0.15
ALPHA = 0.01


@dataclass
class Label:
    name: str
    classes: tuple[str, ...]
    codes: np.ndarray        # per bar, -1 = no label


def forward(close: np.ndarray, name: str, h: int) -> np.ndarray:
    """Outcome of every bar t (NaN where the future is not in the file): uses bars t+1..t+h."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    lc = np.log(close)
    if name.startswith("ret"):
        out[: n - h] = lc[h:] - lc[: n - h]
    else:
        lr = np.diff(lc)  # lr[i] = log(c[i+1] / c[i])
        win = np.lib.stride_tricks.sliding_window_view(lr, h)  # win[t] = returns of bars t+1..t+h
        out[: win.shape[0]] = win.std(axis=1)
    return out


def boot_ci(x: np.ndarray, stat, rng: np.random.Generator, b: int) -> tuple[float, float]:
    if x.size < 2:
        return float("nan"), float("nan")
    draws = stat(x[rng.integers(0, x.size, (b, x.size))], axis=1)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return float(lo), float(hi)


def study(label: Label, close: np.ndarray, held: np.ndarray, rng: np.random.Generator, boot: int) -> dict:
    """Shares over the held-out bars, per-class stats and a p-value per outcome."""
    codes = label.codes[held]
    valid = codes >= 0
    shares = [float((codes[valid] == k).mean()) for k in range(len(label.classes))]
    rows: dict[str, dict] = {}
    for name, h in OUTCOMES:
        y = forward(close, name, h)[held]
        keep = valid & np.isfinite(y) & (np.arange(held.size) % h == 0)  # non-overlapping windows
        groups = [y[keep & (codes == k)] for k in range(len(label.classes))]
        stats = []
        for g in groups:
            stats.append({"n": int(g.size), "mean": float(g.mean()) if g.size else float("nan"),
                          "mean_ci": boot_ci(g, np.mean, rng, boot),
                          "median": float(np.median(g)) if g.size else float("nan"),
                          "median_ci": boot_ci(g, np.median, rng, boot)})
        nonempty = [g for g in groups if g.size >= 5]
        p = float(kruskal(*nonempty).pvalue) if len(nonempty) >= 2 else float("nan")
        rows[name] = {"p": p, "classes": stats}
    passes = min(shares) >= MIN_SHARE and any(r["p"] < ALPHA for r in rows.values())
    return {"shares": shares, "outcomes": rows, "passes": bool(passes), "bars": int(valid.sum())}


def trailing_codes(close: np.ndarray, ref: int = 720) -> np.ndarray:
    """24-bar vol of bar t against the terciles of the feature on bars [t - ref, t - 1]."""
    v = vol_regime.realised_vol(close)
    codes = np.full(close.shape[0], -1, dtype=np.int64)
    if close.shape[0] <= ref + vol_regime.WINDOW:
        return codes
    past = np.lib.stride_tricks.sliding_window_view(v[:-1], ref)  # past[j] = v[j .. j + ref - 1]
    t = np.arange(ref, close.shape[0])
    lo, hi = np.quantile(past, [1 / 3, 2 / 3], axis=1)
    codes[t] = np.where(v[t] <= lo, 0, np.where(v[t] > hi, 2, 1))
    codes[: ref + vol_regime.WINDOW] = -1  # reference not full of finite values yet
    return codes


def labels_for(close: np.ndarray, fit_end: int) -> list[Label]:
    vr = vol_regime.fit(close, fit_end)
    return [Label("vote", vote_regime.REGIMES, vote_regime.regime_codes(close, 64)),
            Label("vol", vol_regime.LABELS, vr.codes(close)),
            Label("vol_30d", vol_regime.LABELS, trailing_codes(close))]


def attention_label(checkpoint: Path, data) -> tuple[Label, int]:
    """rollout's attention label on every bar after the checkpoint's fit (codes -1 before)."""
    from models.features import compute_features, first_window_end, make_windows
    from models.provenance import fitted_of, sample_range
    from models.rollout import REGIMES
    from models.rollout_runtime import RolloutConfig, RolloutExplainer, load_rollout

    model, meta, norm = load_rollout(checkpoint)
    cfg = RolloutConfig.model_validate(meta.extra.get("rollout", {}))
    ex = RolloutExplainer(model, cfg)
    w = int(meta.window)
    start = sample_range(fitted_of(meta), data.symbol, data.timeframe, data.time, first=first_window_end(w)).first
    z = norm.transform(compute_features(data))
    ends = np.arange(start, len(data))
    x = make_windows(z, ends, w, "seq")
    ok = np.isfinite(x).all(axis=(1, 2))
    codes = np.full(len(data), -1, dtype=np.int64)
    codes[ends[ok]] = ex.explain(x[ok]).regime
    return Label("attention", REGIMES, codes), start


def fmt(v: float, pct: bool = True) -> str:
    return "n/a" if not np.isfinite(v) else f"{v * 1e4:+.1f}" if pct else f"{v * 1e4:.1f}"


def render(results: list[tuple[str, Label, dict]], markdown: bool) -> None:
    head = ["file", "label", "class", "share"] + [f"{o} mean [95% CI] / median (bp)" for o, _ in OUTCOMES]
    body = []
    for fname, label, res in results:
        for k, cls in enumerate(label.classes):
            row = [fname, label.name, cls, f"{res['shares'][k]:.1%}"]
            for o, _ in OUTCOMES:
                s = res["outcomes"][o]["classes"][k]
                signed = o.startswith("ret")
                row.append(f"{fmt(s['mean'], signed)} [{fmt(s['mean_ci'][0], signed)}, "
                           f"{fmt(s['mean_ci'][1], signed)}] / {fmt(s['median'], signed)} (n={s['n']})")
            body.append(row)
        ps = ["", label.name, "Kruskal-Wallis p", "PASS" if res["passes"] else "fail"]
        body.append(ps + [f"{res['outcomes'][o]['p']:.2g}" for o, _ in OUTCOMES])
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in body:
            print("| " + " | ".join(r) + " |")
        return
    table = Table(title=f"regime classes on held-out bars (pass: every share >= {MIN_SHARE:.0%} and p < {ALPHA})")
    for h in head:
        table.add_column(h)
    for r in body:
        table.add_row(*r)
    Console(width=260).print(table)


def load(path: Path):
    parts = path.name.removesuffix(".csv.gz").split("_")
    tf = parts[-1]
    return load_candles(path, symbol=parts[1], timeframe=tf, bar_ms=timeframe_ms(tf))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--fit-fraction", type=float, default=0.6)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--rollout", type=Path, help="a rollout checkpoint: also study its attention label")
    ap.add_argument("--rollout-data", type=Path, help="the candle file that checkpoint was trained on")
    a = ap.parse_args(argv)
    if not 0.1 <= a.fit_fraction <= 0.9:
        print("--fit-fraction must be within 0.1 .. 0.9", file=sys.stderr)
        return 2
    files = sorted(p for p in a.data_dir.glob("*.csv.gz") if "funding" not in p.name)
    if not files:
        print(f"no candle files in {a.data_dir}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(a.seed)
    results = []
    for path in files:
        data = load(path)
        close = np.asarray(data.close, dtype=np.float64)
        fit_end = int(len(close) * a.fit_fraction) - 1
        held = np.arange(fit_end + 1, len(close))
        for label in labels_for(close, fit_end):
            results.append((path.name.removesuffix(".csv.gz"), label, study(label, close, held, rng, a.boot)))
    if a.rollout:
        if not a.rollout_data:
            print("--rollout needs --rollout-data", file=sys.stderr)
            return 2
        data = load(a.rollout_data)
        label, start = attention_label(a.rollout, data)
        close = np.asarray(data.close, dtype=np.float64)
        results.append((a.rollout_data.name.removesuffix(".csv.gz"), label,
                        study(label, close, np.arange(start, len(close)), rng, a.boot)))
    render(results, a.markdown)
    for name in dict.fromkeys(label.name for _, label, _ in results):
        mine = [res for _, label, res in results if label.name == name]
        print(f"{name}: passes on {sum(r['passes'] for r in mine)} of {len(mine)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
