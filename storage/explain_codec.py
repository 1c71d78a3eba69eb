"""Compact storage of decision explanations (``decisions.explanation``), generic over the JSON.

Per decision a model strategy journals a per-bar attribution vector and a few dozen keys; stored
as plain JSON that was most of a journal. :func:`encode` turns any JSON tree into a smaller one
and :func:`decode` gives back a plain tree of the same shape, so every reader is unchanged:

- a list of >= 8 numbers, at least one a float: quantised to 16 bits over its range, stored as
  ``{"~q": base64(float64 low, float64 step, uint16 * n)}``. The error of each value is at most
  ``(max - min) / 131070``, so at most ``max|x| / 65535`` (0.0015 % of the vector's max abs);
- a dict of >= 8 string keys whose values are all numbers, at least one a float (per-feature
  attributions): ``{"~k": [keys, {"~q": ...}]}``, its values quantised like a list, same bound;
- a list of >= 4 integers with a constant step (candle times): ``{"~r": [start, step, n]}``, exact;
- any other float: rounded to 9 significant digits (a price up to 10 million keeps its
  cents); integers, strings, booleans, null: exact;
- a dict whose only key starts with ``~`` is wrapped as ``{"~d": ...}`` so it is never read as one
  of the markers above.

The encoded tree is stored as ``{"~1": tree}`` or, when shorter, as the string ``"~z1:" +
base85(raw deflate(compact JSON of {"~1": tree}, NUL, the quantised vectors' bytes))`` with
:data:`ZDICT` as the preset dictionary (the keys every explanation repeats then cost a few bits
each); there each ``{"~q": ...}`` holds only its length. Rows written before this codec
(a plain dict) read back as they were. Changing ``ZDICT`` or the quantiser needs a new version tag
(``~z2:``, ``~2``): stored rows must keep decoding.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from array import array
from typing import Any

MIN_FLOATS = 8
MIN_RANGE = 4
LEVELS = 65535
TREE = "~1"
ZIP = "~z1:"

#: Tokens explanations repeat (keys of docs/explanations.md, old and new shapes). Frozen: rows
#: compressed with it decode only with these exact bytes (most frequent last: shortest distance).
ZDICT = (
    b'"predicted_path":[,"predicted_closes":[,"level_probs":[,"level":,"max_exposure":1.0,'
    b'"sizer","gru_sizer","fast_sma":,"slow_sma":,"rule":"fast > slow -> long","sma",'
    b'"top_features":[{"feature":,"feature_scores":{,"method":"input_x_gradient","prob_threshold":'
    b'"ret_1":,"log_ret_1":,"log_ret_4":,"log_ret_24":,"volatility_24":,"volume_ratio_24":,'
    b'"rsi_14":,"macd":,"macd_signal":,"hl_range":,"vwap_dist_24":,"close_pos":,'
    b'"sma_dist_48":,"hour_sin":,"hour_cos":,'
    b'"top_steps":[{"time":,"weight":},{"time":,"score":},'
    b'"times":{"~r":[,3600000,48]},"regime":"mixed","trending","recent_share":,"head_fusion":"mean",'
    b'"faithfulness":{"k":5,"windows":,"older_top_k_drop":,"older_random_k_drop":,'
    b'"newest_drop":,"rank":1},"rule":{"threshold":0.5,"text":"p(up) = , >= 0.50 -> long",'
    b'-> short",-> flat","level , of 10 -> , % of equity"},'
    b'"attribution":{"method":"signed_grad_x_input","abs_grad_x_input","grad_rollout",'
    b'"rollout","toward":"up","larger position",null,"target":"p(up) - p(down)",'
    b'"expected level","p(predicted class)","steps":{"~q":48},"bar_ms":3600000,'
    b'"features":null,{"kind":"dsc",{"kind":"rollout","probs":{"down":0.,"flat":0.,"up":0.},'
    b'"confidence":0.,"signal":"flat","short","long",{"~1":{"kind":"'
)

_COMPRESSOR = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT)
_DECOMPRESSOR = zlib.decompressobj(-15, ZDICT)


def encode(value: Any) -> Any:
    """The stored form of one explanation (any JSON tree; None stays None)."""
    if value is None:
        return None
    wrapped = {TREE: _enc(value)}
    blobs: list[bytes] = []
    try:
        text = json.dumps({TREE: _unpack_q(wrapped[TREE], blobs)}, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or infinity: strict JSON has no spelling for them, stay uncompressed
        return wrapped
    z = _COMPRESSOR.copy()  # primed with ZDICT once: priming costs more than compressing a row
    body = z.compress(text.encode() + b"\0" + b"".join(blobs)) + z.flush()
    packed = ZIP + base64.b85encode(body).decode("ascii")
    return packed if len(packed) + 2 < len(json.dumps(wrapped)) else wrapped


def decode(stored: Any) -> Any:
    """The plain JSON tree of a stored explanation (rows from before the codec: unchanged)."""
    if isinstance(stored, str) and stored.startswith(ZIP):
        z = _DECOMPRESSOR.copy()
        raw = z.decompress(base64.b85decode(stored[len(ZIP):])) + z.flush()
        cut = raw.index(b"\0")
        return _dec(json.loads(raw[:cut])[TREE], memoryview(raw)[cut + 1:])
    if isinstance(stored, dict) and len(stored) == 1 and TREE in stored:
        return _dec(stored[TREE])
    return stored


def _unpack_q(v: Any, blobs: list[bytes]) -> Any:
    """The tree with each ``{"~q": base64}`` as ``{"~q": n}`` and its bytes (low bytes of the n
    levels, then their high bytes: deflate then finds the high bytes alike) appended to ``blobs``."""
    if isinstance(v, dict):
        if len(v) == 1 and isinstance(v.get("~q"), str):
            raw = base64.b64decode(v["~q"])
            levels = raw[16:]
            blobs.append(raw[:16] + levels[0::2] + levels[1::2])
            return {"~q": len(levels) // 2}
        if len(v) == 1 and isinstance(v.get("~d"), dict):  # a wrapped dict is data, never a marker
            return {"~d": {k: _unpack_q(x, blobs) for k, x in v["~d"].items()}}
        return {k: _unpack_q(x, blobs) for k, x in v.items()}
    if isinstance(v, list):
        return [_unpack_q(x, blobs) for x in v]
    return v


def round_scalar(x: float) -> float:
    """``x`` to 9 significant digits (a price up to 10 million keeps its cents);
    non-finite values, and one that would overflow, as they are."""
    if not math.isfinite(x):
        return x
    r = float(f"{x:.9g}")
    return r if math.isfinite(r) else x


def _enc(v: Any) -> Any:
    if isinstance(v, float):
        return round_scalar(v)
    if isinstance(v, dict):
        if len(v) >= MIN_FLOATS and all(isinstance(k, str) for k in v):
            values = list(v.values())
            types = {type(x) for x in values}
            if float in types and types <= {int, float}:
                q = quantise(values)
                if q is not None:
                    return {"~k": [list(v), {"~q": q}]}
        out = {k: _enc(x) for k, x in v.items()}
        return {"~d": out} if len(v) == 1 and str(next(iter(v))).startswith("~") else out
    if isinstance(v, list | tuple):
        return _enc_list(list(v))
    return v


def _enc_list(v: list[Any]) -> Any:
    types = {type(x) for x in v} if len(v) >= MIN_RANGE else set()
    if len(v) >= MIN_FLOATS and float in types and types <= {int, float}:
        q = quantise(v)
        if q is not None:
            return {"~q": q}
    if types == {int}:
        step = v[1] - v[0]
        if all(b - a == step for a, b in zip(v, v[1:], strict=False)):
            return {"~r": [v[0], step, len(v)]}
    return [_enc(x) for x in v]


def quantise(v: list[float]) -> str | None:
    """base64 of (low, step, uint16 levels); None when the values are not finite or span more than
    1e300 (then they are rounded one by one)."""
    lo, hi = min(v), max(v)
    span = float(hi) - float(lo)
    if not span <= 1e300:  # NaN, or so wide that ``lo + q * step`` could overflow
        return None
    step = span / LEVELS
    levels = array("H", (round((x - lo) / step) if step > 0 else 0 for x in v))
    if levels.itemsize != 2:  # pragma: no cover - "H" is 2 bytes on every platform CPython runs on
        raise RuntimeError("array('H') is not 16-bit here")
    if array("H", [1]).tobytes() != b"\x01\x00":  # stored little-endian whatever the machine
        levels.byteswap()
    return base64.b64encode(struct.pack("<dd", float(lo), step) + levels.tobytes()).decode("ascii")


def dequantise(raw: bytes | memoryview) -> list[float]:
    """The values of ``quantise``'s bytes (after base64 decoding)."""
    lo, step = struct.unpack_from("<dd", raw)
    levels = array("H")
    levels.frombytes(bytes(raw[16:]))
    if array("H", [1]).tobytes() != b"\x01\x00":
        levels.byteswap()
    return [lo + q * step for q in levels]


class _Blob:
    """Reads the quantised vectors of a compressed row in the order they were appended."""

    def __init__(self, raw: memoryview) -> None:
        self.raw, self.at = raw, 0

    def take(self, n: int) -> list[float]:
        part = self.raw[self.at:self.at + 16 + 2 * n]
        self.at += 16 + 2 * n
        low, high = bytes(part[16:16 + n]), bytes(part[16 + n:])
        levels = bytearray(2 * n)
        levels[0::2], levels[1::2] = low, high
        return dequantise(bytes(part[:16]) + bytes(levels))


def _dec(v: Any, blob: memoryview | _Blob | None = None) -> Any:
    if isinstance(blob, memoryview):
        blob = _Blob(blob)
    if isinstance(v, dict):
        if len(v) == 1:
            (k, x), = v.items()
            if k == "~q":
                return blob.take(x) if isinstance(x, int) and blob is not None else dequantise(base64.b64decode(x))
            if k == "~r":
                start, step, n = x
                return [start + i * step for i in range(n)]
            if k == "~d":
                return {kk: _dec(xx, blob) for kk, xx in x.items()}
            if k == "~k":
                names, values = x
                return dict(zip(names, _dec(values, blob), strict=True))
        return {k: _dec(x, blob) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x, blob) for x in v]
    return v
