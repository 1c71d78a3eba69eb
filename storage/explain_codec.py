"""Compact storage of decision explanations (``decisions.explanation``, a binary column),
generic over the JSON.

Per decision a model strategy journals a per-bar attribution vector, one value per feature and a
few dozen keys; as plain JSON that was most of a journal. :func:`encode` turns any JSON tree into
a few hundred bytes and :func:`decode` gives back a plain tree of the same shape, so every reader
(``bot journal explain``, the report, the dashboard, a resume) is unchanged:

- a list of >= 8 numbers, at least one a float, is a *vector*: its largest ``|x|`` is kept
  exactly (float64) and the others are quantised to 8 bits over their own range, so each comes
  back within ``(max - min) / 510`` of the others' range. An attribution's newest bar, often ten
  times any older one, thus neither loses precision nor costs the older steps theirs;
- a dict of >= 8 string keys whose values are all numbers, at least one a float (per-feature
  attributions): its keys, and its values as a vector;
- a list of >= 4 integers with a constant step (candle times): ``(start, step, n)``, exact;
- any other float: rounded to 9 significant digits (a price up to 10 million keeps its cents);
  integers, strings, booleans, null: exact.

Stored form: the byte :data:`VERSION`, then raw deflate with the preset dictionary :data:`ZDICT`
of (compact JSON of the tree in which each vector is ``{"~q": n}``, NUL, the vectors' bytes in
the tree's order: per vector the uint16 index of its largest ``|x|``, low and step as float64,
that value as float64, the other levels as uint8). In the tree ``{"~k": [keys, {"~q": n}]}`` is a
dict of numbers, ``{"~r": [start, step, n]}`` a regular sequence, and a dict whose only key starts
with ``~`` is wrapped as ``{"~d": dict}`` so it is never read as one of them.
Changing ``ZDICT`` or the layout needs a new ``VERSION`` (stored rows must keep decoding);
rows of the JSON column before migration 0005 are read by :mod:`storage.explain_legacy`.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable
from typing import Any

VERSION = b"\x02"
MIN_FLOATS = 8
MIN_RANGE = 4
LEVELS = 255
NO_PEAK = 0xFFFF  # a vector longer than this keeps no exact peak: all its values are quantised
_HEAD = struct.Struct("<Hdd")
_PEAK = struct.Struct("<d")

#: What the explanations of the bundled strategies repeat (docs/explanations.md, as encoded):
#: keys, fixed texts, the vector markers. Frozen with VERSION; most frequent last (shortest
#: distance). A strategy of one's own just compresses a little less.
ZDICT = (
    b'{"kind":"sma","fast_sma":,"slow_sma":,"rule":"fast > slow -> long"fast <= slow -> flat"}'
    b'{"kind":"gru_sizer","level":,"level_probs":{"~q":11},"predicted_path":[0.00,-0.00'
    b'],"predicted_closes":[,"rule":{"level":,"max_exposure":1.0,"text":"level  of 10 -> 0 % of equity"},'
    b'"attribution":{"method":"abs_grad_x_input","toward":null,"target":"expected level",'
    b'"toward":"larger position","steps":{"~q":16},'
    b'"regime":{"label":"low","basis":"24-bar realised vol in the bottom third of the training bars"},'
    b'"regime":{"label":"high","basis":"24-bar realised vol in the top third of the training bars"},'
    b'"method":"rollout","toward":"attention flow","target":"p(predicted class)","features":null,'
    b'"method":"grad_rollout",'
    b'"regime":{"label":"normal","basis":"24-bar realised vol in the middle third of the training bars"},'
    b'"recent_share":0.,"head_fusion":"mean"}'
    b'"faithfulness":{"k":5,"windows":,"older_top_k_drop":0.00,"older_random_k_drop":-0.000'
    b',"newest_drop":0.00,"rank":1}}'
    b'"bar_ms":3600000,"features":{"~k":[["ret_1","log_ret_1","log_ret_4","log_ret_24",'
    b'"volatility_24","volume_ratio_24","rsi_14","macd","macd_signal","hl_range","vwap_dist_24",'
    b'"close_pos","sma_dist_48","hour_sin","hour_cos"],{"~q":15}]},'
    b'"p(down) = 0. >= 0. -> short"p(flat) = 0. is the top class -> flat"},'
    b'"rule":{"threshold":0.5,"text":"p(up) = 0. >= 0. -> long"},'
    b'"attribution":{"method":"signed_grad_x_input","toward":"up","target":"p(up) - p(down)",'
    b'"steps":{"~q":48},"bar_ms":3600000,'
    b'{"kind":"dsc","probs":{"down":0.,"flat":0.,"up":0.},"confidence":0.,"signal":"flat"'
    b'{"kind":"rollout","probs":{"down":0.,"flat":0.,"up":0.},"confidence":0.,"signal":"short"'
    b',"signal":"long","rule":{"threshold":0.'
)

#: An 8 KiB window (ZDICT and a stored explanation, a few hundred bytes, fit in it) and a small
#: hash: the compressor is copied per explanation, and copying the default 32 KiB / memLevel 9
#: state cost 50 us, far more than compressing. Every raw deflate stream, whatever its window,
#: decodes with the 32 KiB decompressor below, so stored rows and VERSION are unchanged.
_COMPRESSOR = zlib.compressobj(9, zlib.DEFLATED, -13, 4, zlib.Z_DEFAULT_STRATEGY, ZDICT)
_DECOMPRESSOR = zlib.decompressobj(-15, ZDICT)
#: ``json.dumps(tree, separators=(",", ":"))`` without building an encoder per explanation.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode


def encode(value: Any) -> bytes | None:
    """The stored bytes of one explanation (any JSON tree; None stays None)."""
    if value is None:
        return None
    blobs: list[bytes] = []
    text = _COMPACT_JSON(_enc(value, blobs))
    z = _COMPRESSOR.copy()  # primed with ZDICT once: priming costs more than compressing a row
    return VERSION + z.compress(text.encode() + b"\0" + b"".join(blobs)) + z.flush()


def decode(stored: bytes | memoryview | None) -> Any:
    """The plain JSON tree of stored bytes."""
    if stored is None:
        return None
    raw = bytes(stored)
    if raw[:1] != VERSION:
        raise ValueError(f"not a stored explanation of version {VERSION[0]} (first byte {raw[:1]!r})")
    z = _DECOMPRESSOR.copy()
    body = z.decompress(raw[1:]) + z.flush()
    cut = body.index(b"\0")
    return expand(json.loads(body[:cut]), _Vectors(memoryview(body)[cut + 1:]).take)


def round_scalar(x: float) -> float:
    """``x`` to 9 significant digits (a price up to 10 million keeps its cents);
    non-finite values, and one that would overflow, as they are."""
    if not math.isfinite(x):
        return x
    r = float(f"{x:.9g}")
    return r if math.isfinite(r) else x


#: Values stored as they are (exact types: a subclass takes the general path).
_KEPT = frozenset({str, int, bool, type(None)})


def _enc(v: Any, blobs: list[bytes]) -> Any:
    if isinstance(v, float):
        return round_scalar(v)
    if isinstance(v, dict):
        if len(v) >= MIN_FLOATS and all(isinstance(k, str) for k in v):
            values = list(v.values())
            if _numeric(values):
                q = quantise(values)
                if q is not None:
                    blobs.append(q)
                    return {"~k": [list(v), {"~q": len(values)}]}
        out = {k: (x if type(x) in _KEPT else _enc(x, blobs)) for k, x in v.items()}
        return {"~d": out} if len(v) == 1 and str(next(iter(v))).startswith("~") else out
    if isinstance(v, list | tuple):
        return _enc_list(list(v), blobs)
    return v


def _numeric(values: list[Any]) -> bool:
    types = {type(x) for x in values}
    return float in types and types <= {int, float}


def _enc_list(v: list[Any], blobs: list[bytes]) -> Any:
    if len(v) >= MIN_FLOATS and _numeric(v):
        q = quantise(v)
        if q is not None:
            blobs.append(q)
            return {"~q": len(v)}
    if len(v) >= MIN_RANGE and {type(x) for x in v} == {int}:
        step = v[1] - v[0]
        if all(b - a == step for a, b in zip(v, v[1:], strict=False)):
            return {"~r": [v[0], step, len(v)]}
    return [_enc(x, blobs) for x in v]


def quantise(v: list[float]) -> bytes | None:
    """The bytes of a vector (peak index, low, step, peak, uint8 levels of the others); None when
    its values are not finite or span more than 1e300 (then they are rounded one by one)."""
    total = sum(v)
    if total - total != 0.0 and not all(map(math.isfinite, v)):  # a NaN or an infinity anywhere
        return None
    peak = max(range(len(v)), key=lambda i: abs(v[i])) if len(v) < NO_PEAK else NO_PEAK
    rest = v if peak == NO_PEAK else v[:peak] + v[peak + 1:]
    lo, hi = float(min(rest)), float(max(rest))
    span = hi - lo
    if not (span <= 1e300 and math.isfinite(float(v[peak]) if peak != NO_PEAK else 0.0)):
        return None  # NaN, or so wide that ``lo + q * step`` could overflow
    step = span / LEVELS
    levels = bytes(round((x - lo) / step) if step > 0 else 0 for x in rest)
    head = _HEAD.pack(peak, lo, step)
    return head + (b"" if peak == NO_PEAK else _PEAK.pack(float(v[peak]))) + levels


class _Vectors:
    """Reads the vectors of a stored row in the order :func:`encode` appended them."""

    def __init__(self, raw: memoryview) -> None:
        self.raw, self.at = raw, 0

    def take(self, n: int) -> list[float]:
        peak, lo, step = _HEAD.unpack_from(self.raw, self.at)
        self.at += _HEAD.size
        value = None
        if peak != NO_PEAK:
            (value,) = _PEAK.unpack_from(self.raw, self.at)
            self.at += _PEAK.size
        k = n - (value is not None)
        out = [lo + q * step for q in self.raw[self.at:self.at + k]]
        self.at += k
        if value is not None:
            out.insert(peak, value)
        return out


def expand(v: Any, vector: Callable[[Any], list[float]]) -> Any:
    """The plain tree of an encoded one; ``vector`` turns a ``{"~q": x}`` marker's ``x`` into
    its values (also used by storage/explain_legacy.py, whose markers differ only there)."""
    if isinstance(v, dict):
        if len(v) == 1:
            (k, x), = v.items()
            if k == "~q":
                return vector(x)
            if k == "~r":
                start, step, n = x
                return [start + i * step for i in range(n)]
            if k == "~d":
                return {kk: expand(xx, vector) for kk, xx in x.items()}
            if k == "~k":
                names, values = x
                return dict(zip(names, expand(values, vector), strict=True))
        return {k: expand(x, vector) for k, x in v.items()}
    if isinstance(v, list):
        return [expand(x, vector) for x in v]
    return v
