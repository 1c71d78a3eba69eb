"""What a checkpoint was fitted on, and the one rule that finds those bars in any candle file.

**Fitted range.** A model is fitted on every bar whose prices reached its weights or their
selection: the feature warm-up, the training windows and their labels, and the validation
windows and their labels (early stopping, and the choice of the stored explanation, look at
them). That is every bar from the training file's first bar to the last bar a validation label
reads (last validation window end + horizon); only the test part after it is out of sample.
Trainers record it as ``ModelMeta.fitted`` = ``{symbol, timeframe, start, end, bars}`` (open
times in UTC ms, both inclusive) and ``ModelMeta.data_hash`` = :func:`data_hash` of exactly
those bars.

**Overlap rule** (:func:`sample_range`): a bar of another file is in-sample when its market
(symbol and timeframe) is the checkpoint's and its open time lies in the fitted range, whatever
the file's first bar is. Scoring (``bot evaluate``) and trading (``bot backtest``, paper replays)
begin after the file's last in-sample bar, unless in-sample bars are explicitly allowed; then
they are counted and every output labels them.

Checkpoints written before ``fitted`` existed are read from what they have (:func:`fitted_of`);
``Fitted.note`` says in one line what cannot be checked. Torch-free: strategies without a model
import it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.domain import TIMEFRAME_MS
from bot.errors import ModelError
from bot.timeutil import ms_to_iso

if TYPE_CHECKING:
    from models.checkpoint import ModelMeta

COLUMNS = ("time", "open", "high", "low", "close", "volume")


def data_hash(data: Any, stop: int | None = None) -> str:
    """Content hash (16 hex) of candle columns ``[0, stop)``: names the exact training data in the card."""
    h = hashlib.sha256()
    for name in COLUMNS:
        h.update(np.ascontiguousarray(getattr(data, name)[:stop]).tobytes())
    return h.hexdigest()[:16]


def provenance(data: Any, fit_end: int, symbol: str, timeframe: str, **file_extra: Any) -> dict[str, Any]:
    """``ModelMeta`` keywords of a fit on bars ``[0, fit_end]`` of ``data``: ``fitted``, ``data_hash``
    and ``train_range`` (the whole training file, plus ``file_extra``: its test part...)."""
    return {"fitted": {"symbol": symbol, "timeframe": timeframe, "start": int(data.time[0]),
                       "end": int(data.time[fit_end]), "bars": int(fit_end) + 1},
            "data_hash": data_hash(data, fit_end + 1),
            "train_range": {"source": str(getattr(data, "source", "")), "start": int(data.time[0]),
                            "end": int(data.time[-1]), "bars": len(data.time), **file_extra}}


def pooled_provenance(parts: list[tuple[str, Any, int]], timeframe: str, **file_extra: Any) -> dict[str, Any]:
    """``ModelMeta`` keywords of a multi-asset fit: ``parts`` = (symbol, data, fit_end) per asset, the
    first one's range at the top (older readers see it), every asset's range and data hash under
    ``fitted["assets"]``; ``data_hash`` hashes them all."""
    symbol, data, fit_end = parts[0]
    out = provenance(data, fit_end, symbol, timeframe, **file_extra)
    assets = []
    for sym, d, end in parts:
        one = provenance(d, end, sym, timeframe)
        assets.append({**{k: one["fitted"][k] for k in ("symbol", "start", "end", "bars")},
                       "data_hash": one["data_hash"], "source": one["train_range"]["source"],
                       "file_start": one["train_range"]["start"], "file_end": one["train_range"]["end"]})
    out["fitted"]["assets"] = assets
    out["train_range"]["assets"] = [{k: a[k] for k in ("symbol", "source", "file_start", "file_end")} for a in assets]
    out["data_hash"] = hashlib.sha256("".join(a["data_hash"] for a in assets).encode()).hexdigest()[:16]
    return out


def widen(fitted: dict[str, Any], earlier: Fitted) -> dict[str, Any]:
    """``fitted`` of a retrain on top of an ``earlier`` fit (gru_sizer ``--stage 2``): the time range
    spans both when they are of the same market (``bars`` then unknown); ``earlier`` is kept as ``base``."""
    out = dict(fitted)
    if earlier.start is not None and earlier.end is not None and earlier.same_market(fitted["symbol"],
                                                                                      fitted["timeframe"]):
        out.update(start=min(fitted["start"], earlier.start), end=max(fitted["end"], earlier.end), bars=None)
    out["base"] = {"symbol": earlier.symbol, "timeframe": earlier.timeframe, "start": earlier.start,
                   "end": earlier.end}
    return out


@dataclass(frozen=True, slots=True)
class Fitted:
    """The market and time range a checkpoint was fitted on ("" / None where it does not say)."""

    symbol: str = ""
    timeframe: str = ""
    start: int | None = None
    end: int | None = None
    bars: int | None = None
    #: One line: what cannot be checked for this checkpoint (older formats); "" when everything can.
    note: str = ""
    #: A multi-asset checkpoint: every asset's own range (the first is the fields above); () otherwise.
    assets: tuple[Fitted, ...] = ()

    def of(self, symbol: str) -> Fitted:
        """The fitted range of ``symbol``: its asset's in a multi-asset checkpoint, else this one."""
        return next((a for a in self.assets if a.symbol == symbol), self)

    def describe(self) -> str:
        market = f"{self.symbol or '?'} {self.timeframe or '?'}"
        if self.start is None or self.end is None:
            return f"{market} (no time range recorded)"
        return f"{market} {ms_to_iso(self.start)} .. {ms_to_iso(self.end)}"

    def same_market(self, symbol: str, timeframe: str) -> bool:
        """True unless the checkpoint names another symbol or timeframe (an unrecorded one matches);
        a multi-asset checkpoint matches any of its symbols."""
        if self.assets:
            return any(a.same_market(symbol, timeframe) for a in self.assets)
        return (not self.symbol or self.symbol == symbol) and (not self.timeframe or self.timeframe == timeframe)


def fitted_of(meta: ModelMeta) -> Fitted:
    """The fitted range of a checkpoint's metadata, from ``meta.fitted`` or (older checkpoints)
    from its ``train_range``."""
    f = meta.fitted
    if f:
        tf = str(f.get("timeframe") or "")
        assets = tuple(Fitted(str(a.get("symbol") or ""), tf, _int(a.get("start")), _int(a.get("end")),
                              _int(a.get("bars"))) for a in f.get("assets") or ())
        return Fitted(str(f.get("symbol") or ""), tf, _int(f.get("start")), _int(f.get("end")), _int(f.get("bars")),
                      assets=assets)
    tr = meta.train_range or {}
    symbol, tf = str(tr.get("symbol") or ""), str(tr.get("timeframe") or "")
    unnamed = "" if symbol and tf else "; it names no symbol or timeframe, so the market cannot be checked"
    start, end = _int(tr.get("start")), _int(tr.get("end"))
    if "fit_end_index" in tr:  # dsc / rollout before `fitted`: train_range ended at the fit's last bar
        return Fitted(symbol, tf, start, end, _int(tr.get("bars")), unnamed.lstrip("; ").capitalize())
    val = tr.get("val_bars")
    if isinstance(val, list) and len(val) == 2 and tf in TIMEFRAME_MS:  # gru_sizer before `fitted`
        end = int(val[1]) + int(meta.horizon) * TIMEFRAME_MS[tf]
        return Fitted(symbol, tf, start, end, None,
                      f"older checkpoint: its fitted range is taken to end {meta.horizon} bars after its "
                      f"validation part (exact unless that stretch had gaps){unnamed}")
    if start is not None and end is not None:
        return Fitted(symbol, tf, start, end, _int(tr.get("bars")),
                      f"older checkpoint: only its training file's range is recorded, all of it counts as "
                      f"in-sample{unnamed}")
    return Fitted(symbol, tf, note="checkpoint records no training range: in-sample bars cannot be detected"
                                   + unnamed)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def check_market(f: Fitted, symbol: str, timeframe: str, *, allow: bool, model: str = "the model") -> str | None:
    """The other-market guard: a checkpoint fitted on another symbol or timeframe than the market's
    is refused (ModelError) unless ``allow``; then the returned line says so (None: same market)."""
    if f.same_market(symbol, timeframe):
        return None
    fitted_on = "+".join(a.symbol for a in f.assets) if f.assets else (f.symbol or "?")
    what = f"{model} was fitted on {fitted_on} {f.timeframe or '?'}, the market is {symbol} {timeframe}"
    if not allow:
        raise ModelError(f"{what}: pass --allow-other-market (strategy.allow_other_market) to use it anyway")
    return f"other market: {what} (allowed)"


@dataclass(frozen=True, slots=True)
class Sample:
    """Which bars of a file may be scored or traded, and what of them is in-sample."""

    first: int                       # first bar index to score / trade
    in_sample: dict[str, Any] | None = None   # {"bars", "from", "to", "fitted"} when in-sample bars are used
    notes: list[str] = field(default_factory=list)
    #: False when the checkpoint records no fitted range: nobody can tell what is in-sample.
    checked: bool = True

    @property
    def label(self) -> str:
        if self.in_sample:
            return "in-sample"
        return "out-of-sample" if self.checked else "unchecked"

    def labels(self) -> dict[str, Any]:
        """What an output carries: ``sample`` (in-sample / out-of-sample / unchecked) and the
        ``in_sample`` details."""
        return {"sample": self.label, **({"in_sample": self.in_sample} if self.in_sample else {})}


def last_in_sample(f: Fitted, symbol: str, timeframe: str, times: np.ndarray) -> int | None:
    """Index of the last bar of ``times`` (open times, ascending) inside the fitted range of the
    same market; None when no bar is (or the checkpoint is of another market or has no range)."""
    f = f.of(symbol)
    if f.start is None or f.end is None or not f.same_market(symbol, timeframe):
        return None
    t = np.asarray(times, dtype=np.int64)
    k = int(np.searchsorted(t, f.end, side="right")) - 1
    return k if k >= 0 and int(t[k]) >= f.start else None


def sample_range(f: Fitted, symbol: str, timeframe: str, times: np.ndarray, *, first: int = 0,
                 stop: int | None = None, allow_in_sample: bool = False, verb: str = "trade",
                 model: str = "the model") -> Sample:
    """The overlap rule: bars ``[first, stop)`` of ``times`` are scored / traded (``verb``) from
    after the last in-sample bar; with ``allow_in_sample`` from ``first``, in-sample bars counted.

    ModelError (one line) when no out-of-sample bar remains and in-sample bars are not allowed.
    """
    f = f.of(symbol)  # a multi-asset checkpoint: this symbol's own fitted range
    t = np.asarray(times, dtype=np.int64)
    stop = len(t) if stop is None else stop
    notes = [f.note] if f.note else []
    if f.start is None or f.end is None:
        return Sample(first, None, notes, checked=False)
    k = last_in_sample(f, symbol, timeframe, t)
    if k is None or k < first or first >= stop:
        return Sample(first, None, notes)
    if allow_in_sample:
        used = t[first:stop]
        inside = used[(used >= f.start) & (used <= f.end)]
        info = {"bars": int(inside.size), "from": ms_to_iso(int(inside[0])), "to": ms_to_iso(int(inside[-1])),
                "fitted": f.describe()}
        notes.append(f"in-sample: {inside.size} of the {used.size} bars to {verb} ({info['from']} .. {info['to']}) "
                     f"lie in the range {model} was fitted on ({f.describe()}); --allow-in-sample is set")
        return Sample(first, info, notes)
    if k + 1 >= stop:
        raise ModelError(f"every bar to {verb} here ({ms_to_iso(int(t[first]))} .. {ms_to_iso(int(t[stop - 1]))}) "
                         f"lies in or before the range {model} was fitted on ({f.describe()}): nothing out of "
                         f"sample remains (--allow-in-sample uses it anyway)")
    notes.append(f"{model} was fitted on {f.describe()}: only the {stop - k - 1} bars after "
                 f"{ms_to_iso(int(t[k]))} are {verb}d (out of sample)")
    return Sample(k + 1, None, notes)


def evaluation_sample(meta: ModelMeta, req: Any, first: int, stop: int) -> Sample:
    """The overlap rule for ``bot evaluate`` (``req``: a models.training.EvalRequest): which
    window ends in ``[first, stop)`` of ``req.data`` are scored."""
    return sample_range(fitted_of(meta), req.symbol, req.timeframe, req.data.time, first=first, stop=stop,
                        allow_in_sample=req.allow_in_sample, verb="score", model=meta.model_id)
