"""The journal's explanation format before migration 0005 (read only, for that migration).

Until migration 0005, ``decisions.explanation`` was a JSON column holding one of three forms:
a plain JSON tree (rows from before any codec), ``{"~1": tree}`` (the encoded tree, uncompressed)
or the string ``"~z1:" + base85(raw deflate(compact JSON of {"~1": tree}, NUL, vector bytes))``
with :data:`ZDICT` as the preset dictionary. In the tree, ``{"~q": ...}`` is a vector quantised to
16 bits over its range (low and step as float64, then uint16 levels: base64 in the uncompressed
form; in the compressed form only the length, its bytes after the NUL with the low bytes of all
levels before their high bytes), ``{"~k": [keys, {"~q": ...}]}`` a dict of numbers, ``{"~r":
[start, step, n]}`` a regular integer sequence, ``{"~d": {...}}`` a dict whose only key starts with
``~``. :func:`decode` turns any of them into the plain tree; migration 0005 re-encodes every row
with :mod:`storage.explain_codec`. Frozen: stored rows decode only with these exact bytes.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from array import array
from typing import Any

from storage.explain_codec import expand

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

_DECOMPRESSOR = zlib.decompressobj(-15, ZDICT)


def decode(stored: Any) -> Any:
    """The plain JSON tree of a value of the old JSON column (a plain tree comes back as it is)."""
    if isinstance(stored, str) and stored.startswith(ZIP):
        z = _DECOMPRESSOR.copy()
        raw = z.decompress(base64.b85decode(stored[len(ZIP):])) + z.flush()
        cut = raw.index(b"\0")
        return expand(json.loads(raw[:cut])[TREE], _Blob(memoryview(raw)[cut + 1:]).take)
    if isinstance(stored, dict) and len(stored) == 1 and TREE in stored:
        return expand(stored[TREE], lambda x: dequantise(base64.b64decode(x)))
    return stored


def dequantise(raw: bytes | memoryview) -> list[float]:
    """The values of (low, step as float64, uint16 levels little-endian)."""
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
