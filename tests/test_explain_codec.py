"""Compact explanations (storage/explain_codec.py): any JSON tree round trips within the documented
bounds, old rows read as before on SQLite and PostgreSQL, a journaled rollout backtest reads back
what its strategy explained, and a 48-step attribution costs a bounded number of bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Engine, select, type_coerce, update

from bot.domain import Decision, DecisionStatus
from storage import explain_codec as codec
from storage import pages
from storage import queries as q
from storage import schema as s
from storage.db import open_database
from storage.journal import Journal
from tests.conftest import PG_URL

floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
scalars = st.none() | st.booleans() | st.integers(-(2**62), 2**62) | floats | st.text(max_size=8)
vectors = st.lists(floats | st.integers(-(10**6), 10**6), min_size=8, max_size=64)
times = st.builds(lambda a, d, n: [a + i * d for i in range(n)], st.integers(0, 2**45), st.integers(-10**7, 10**7),
                  st.integers(0, 60))
keys = st.text(max_size=6) | st.sampled_from(["~q", "~r", "~d", "~k", "~1", "~z1:"])
#: Per-feature attributions: dicts of numbers, quantised like vectors when 8 or more.
named = st.dictionaries(st.text(max_size=8), floats | st.integers(-5, 5), min_size=6, max_size=20)
trees = st.recursive(scalars | vectors | times | named,
                     lambda kids: st.lists(kids, max_size=10) | st.dictionaries(keys, kids, max_size=5),
                     max_leaves=40)


def _quantised(values: list[Any]) -> float | None:
    """The quantisation bound of values the codec stores as a vector, else None."""
    nums = [x for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
    span = max(nums) - min(nums) if nums else 0.0
    if len(values) >= 8 and len(nums) == len(values) and any(isinstance(x, float) for x in values) and span <= 1e300:
        return span
    return None


def assert_close(got: Any, want: Any) -> None:
    """``got`` is ``want`` after the codec: same shape, exact ints, strings, booleans and nulls,
    float vectors within (max - min) / 131070 (spanning at most 1e300; wider ones are rounded one by
    one), other floats within 9 significant digits."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        span = _quantised(list(want.values()))
        for k in want:
            if span is not None:
                assert isinstance(got[k], float) and abs(got[k] - want[k]) <= span / 131070 + 1e-12 * max(
                    abs(want[k]), span)
            else:
                assert_close(got[k], want[k])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        span = _quantised(want)
        if span is not None:
            for g, w in zip(got, want, strict=True):
                assert isinstance(g, float) and abs(g - w) <= span / 131070 + 1e-12 * max(abs(w), span)
        else:
            for g, w in zip(got, want, strict=True):
                assert_close(g, w)
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=5e-9, abs_tol=0.0)
    else:
        assert type(got) is type(want) and got == want


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_any_json_tree_round_trips_within_the_bounds(tree: Any) -> None:
    stored = codec.encode(tree)
    json.dumps(stored, allow_nan=False)  # what the JSON column writes
    assert_close(codec.decode(json.loads(json.dumps(stored))), tree)


@given(st.lists(floats.filter(lambda x: abs(x) < 1e300), min_size=8, max_size=200))
def test_a_vector_is_quantised_within_half_a_step_of_its_range(v: list[float]) -> None:
    got = codec.decode(codec.encode({"v": v}))["v"]
    bound = (max(v) - min(v)) / 131070
    assert all(abs(g - w) <= bound * (1 + 1e-9) + 1e-300 for g, w in zip(got, v, strict=True))
    assert max(abs(g - w) for g, w in zip(got, v, strict=True)) <= max(abs(x) for x in v) / 65535 * (1 + 1e-9)


def test_integers_and_time_sequences_are_exact() -> None:
    tree = {"times": list(range(1_700_000_000_000, 1_700_000_000_000 + 48 * 3_600_000, 3_600_000)),
            "ids": [5, 3, 9, 1, 2, 8, 7, 4, 6], "n": 2**60, "flag": True, "none": None}
    assert codec.decode(codec.encode(tree)) == tree
    assert codec.decode(codec.encode({"~q": 3})) == {"~q": 3}  # a dict that looks like a marker is data


def rollout_like(seed: int = 0) -> dict[str, Any]:
    """An explanation with a 48-step attribution (the contract's shape, docs/explanations.md)."""
    steps = [round(0.012 + ((i * 7919 + seed) % 97) / 97 * 0.008, 6) for i in range(47)] + [0.267244]
    return {"kind": "rollout", "probs": {"down": 0.4575406978530929, "flat": 0.3563292377401742,
                                         "up": 0.18613006440673288},
            "confidence": 0.4575406978530929, "signal": "short",
            "attribution": {"method": "rollout", "toward": None, "target": "p(predicted class)", "steps": steps,
                            "bar_ms": 3_600_000, "features": None,
                            "faithfulness": {"k": 5, "windows": 2000, "older_top_k_drop": 0.000512,
                                             "older_random_k_drop": 0.000311, "newest_drop": 0.0123, "rank": 3}},
            "rule": {"threshold": 0.34, "text": "p(down) = 0.46 >= 0.34 -> short"}}


def test_a_48_step_attribution_is_stored_in_at_most_300_bytes() -> None:
    for seed in range(20):
        e = rollout_like(seed)
        stored = json.dumps(codec.encode(e))
        assert len(stored) <= 300, len(stored)
        assert len(json.dumps(e)) >= 3 * len(stored)
        assert_close(codec.decode(json.loads(stored)), e)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, sqlite_url: str) -> Engine:
    return open_database(sqlite_url if request.param == "sqlite" else PG_URL)


def test_rows_written_before_the_codec_read_as_before(db: Engine) -> None:
    j = Journal.start_run(db, mode="backtest", strategy="rollout", symbol="BTCUSDT", timeframe="1h",
                          category="linear", config={}, initial_cash=1000, data_source=None)
    new, old = rollout_like(1), rollout_like(2)
    j.record_decision(f"{j.run_id}-1", Decision("BTCUSDT", 1, 0.0, 0.5, "m", new), 100.0, DecisionStatus.HOLD)
    j.record_decision(f"{j.run_id}-2", Decision("BTCUSDT", 2, 0.0, 0.5, "m", old), 100.0, DecisionStatus.HOLD)
    j.finish("completed")
    raw = type_coerce(s.decisions.c.explanation, JSON)  # the column as it was: JSON, no codec
    with db.begin() as conn:
        stored = conn.execute(select(raw).where(s.decisions.c.id == f"{j.run_id}-1")).scalar_one()
        assert isinstance(stored, str) and stored.startswith(codec.ZIP)  # the compressed form
        conn.execute(update(s.decisions).where(s.decisions.c.id == f"{j.run_id}-2")
                     .values({s.decisions.c.explanation: type_coerce(old, JSON)}))  # as written before
    rows = {r["id"]: r["explanation"] for r in q.decisions(db, j.run_id)}
    assert rows[f"{j.run_id}-2"] == old
    assert_close(rows[f"{j.run_id}-1"], new)
    assert_close(q.find_decision(db, f"{j.run_id}-1")["explanation"], new)
    page, _ = pages.page(db, "decisions", j.run_id, limit=10)
    assert {r["id"]: r["explanation"] for r in page}[f"{j.run_id}-2"] == old


def test_a_journaled_rollout_backtest_reads_back_what_the_strategy_explained(data_dir: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import app as core  # noqa: PLC0415
    from bot.config import load_config  # noqa: PLC0415
    from bot.feeds.replay import load_candles  # noqa: PLC0415
    from models.rollout_runtime import parse_config  # noqa: PLC0415
    from models.rollout_train import train_rollout  # noqa: PLC0415
    from tests.test_rollout_strategy import PARAMS, run, strategy  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    data = full.slice(3000, 3800)
    params = {**PARAMS, "window": 48}
    ckpt = str(train_rollout(data.slice(0, 600), parse_config(params), fee_rate=0.001, long_only=False,
                             symbol="BTCUSDT", timeframe="1h", out=tmp_path / "r.pt", progress=False))
    want = {t: d.explanation for t, d in run(strategy(ckpt, **params), data, precompute=True).items()}
    url = f"sqlite:///{tmp_path / 'j.db'}"
    cfg = load_config(None, [], {"strategy.name": "rollout", "strategy.params": params, "storage.url": url,
                                 "strategy.checkpoint": ckpt})
    db = open_database(url)
    summary = core.backtest(cfg, data, strategy(ckpt, **params), db, show_progress=False)
    got = {d["bar_time"]: d["explanation"] for d in q.decisions(db, summary["run_id"])}
    assert got and set(got) <= set(want)
    for t, e in got.items():
        assert_close(e, want[t])
    plain = sum(len(json.dumps(want[t])) for t in got)
    before = sum(len(json.dumps(old_shape(want[t], t))) for t in got)
    with db.connect() as conn:
        stored = sum(len(r[0]) for r in conn.exec_driver_sql("SELECT explanation FROM decisions"))
    assert plain > 2 * stored, (plain, stored)
    # Against a rollout decision as journaled before issue 14 (measured 3.2x here; the issue asks
    # for 4x of the whole decision row, not met yet: README, "Compact explanations").
    assert before >= 3 * stored, (before, stored)


def old_shape(e: dict[str, Any], bar_time: int) -> dict[str, Any]:
    """A rollout explanation as the strategy journaled it before issue 14 (plain JSON): the step
    weights to 6 decimals with a 13-digit open time each, the top 5 steps, a regime word."""
    a = e["attribution"]
    n = len(a["steps"])
    times = [bar_time - (n - 1 - i) * a["bar_ms"] for i in range(n)]
    weights = [round(float(x), 6) for x in a["steps"]]
    top = sorted(range(n), key=lambda i: -weights[i])[:5]
    return {"kind": "rollout", "probs": e["probs"], "confidence": e["confidence"], "signal": e["signal"],
            "attribution": weights, "times": times,
            "top_steps": [{"time": times[i], "weight": weights[i]} for i in top],
            "regime": "mixed", "recent_share": e["recent_share"], "head_fusion": e["head_fusion"]}
