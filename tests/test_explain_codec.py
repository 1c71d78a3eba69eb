"""Compact explanations (storage/explain_codec.py): any JSON tree round trips within the documented
bounds, rows of the JSON column before migration 0005 come back the same after it on SQLite and
PostgreSQL, a journaled rollout backtest reads back what its strategy explained, and a 48-step
attribution costs a bounded number of bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from storage import explain_codec as codec
from storage import explain_legacy as legacy
from storage import pages
from storage import queries as q
from storage.db import alembic_config, open_database, upgrade

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


def _vector_bound(values: list[Any]) -> tuple[int, float] | None:
    """(index of the exact peak, bound of the others) for values the codec stores as a vector,
    else None."""
    nums = [x for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
    if len(values) < 8 or len(nums) != len(values) or not any(isinstance(x, float) for x in values):
        return None
    peak = max(range(len(nums)), key=lambda i: abs(nums[i]))
    rest = nums[:peak] + nums[peak + 1:]
    span = max(rest) - min(rest)
    return (peak, span / 510) if span <= 1e300 else None


def _assert_vector(got: list[Any], want: list[Any], peak: int, bound: float) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert isinstance(g, float)
        if i == peak:
            assert g == w
        else:
            assert abs(g - w) <= bound + 1e-12 * max(abs(w), bound * 510), (i, g, w, bound)


def assert_close(got: Any, want: Any) -> None:
    """``got`` is ``want`` after the codec: same shape, exact ints, strings, booleans and nulls,
    float vectors with their largest |x| exact and the others within (max - min) / 510 of the
    others (spanning at most 1e300; wider ones are rounded one by one), other floats within 9
    significant digits."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        vec = _vector_bound(list(want.values()))
        if vec is not None:
            _assert_vector(list(got.values()), list(want.values()), *vec)
        else:
            for k in want:
                assert_close(got[k], want[k])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        vec = _vector_bound(want)
        if vec is not None:
            _assert_vector(got, want, *vec)
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
    assert stored is None if tree is None else isinstance(stored, bytes) and stored[:1] == codec.VERSION
    assert_close(codec.decode(stored), tree)


@given(st.lists(floats.filter(lambda x: abs(x) < 1e300), min_size=8, max_size=200))
def test_a_vector_keeps_its_peak_and_the_rest_within_half_a_step(v: list[float]) -> None:
    got = codec.decode(codec.encode({"v": v}))["v"]
    peak = max(range(len(v)), key=lambda i: abs(v[i]))
    rest = v[:peak] + v[peak + 1:]
    bound = (max(rest) - min(rest)) / 510
    assert got[peak] == v[peak]
    assert all(abs(g - w) <= bound * (1 + 1e-9) + 1e-300 for i, (g, w) in enumerate(zip(got, v, strict=True)))


def test_non_finite_values_come_back_as_they_were() -> None:
    tree = {"v": [float("nan"), *[1.5] * 8], "w": [float("inf"), *[0.25] * 9], "x": float("-inf")}
    got = codec.decode(codec.encode(tree))
    assert math.isnan(got["v"][0]) and got["v"][1:] == [1.5] * 8
    assert got["w"] == tree["w"] and got["x"] == float("-inf")
    # a NaN or an infinity among the others (not the largest |x|) keeps the vector exact to 9 digits
    tree = {"v": [0.5, 2.0, float("nan"), -1.25, 3.5, 0.125, 1.0, 9.0], "w": [*[0.25] * 8, float("-inf"), 7.0]}
    got = codec.decode(codec.encode(tree))
    assert math.isnan(got["v"][2]) and got["v"][:2] + got["v"][3:] == tree["v"][:2] + tree["v"][3:]
    assert got["w"] == tree["w"]


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


def test_a_48_step_attribution_is_stored_in_at_most_200_bytes() -> None:
    for seed in range(20):
        e = rollout_like(seed)
        stored = codec.encode(e)
        assert len(stored) <= 200, len(stored)
        assert len(json.dumps(e)) >= 5 * len(stored)
        assert_close(codec.decode(stored), e)


#: rollout_like(2) as the JSON column held it before migration 0005 (storage/explain_codec.py at
#: 831575e): compressed and base85-encoded, and the uncompressed tree form; a plain tree is the third.
LEGACY_ZIP = ("~z1:L*wGH+r-q|)WpEd(gNWKV^cF@BTFM=3z%yREzAs!4GhdoFr0;?8}2@s!*InsW(;CP6;<MaP<}E3Yr@P^26{jVQ$r&hc?&FUY"
              "-os<$AH3yM#iw5W?YLas~MXh<u!0pQ~+f(6EjGLGd59x=d;?{T83YBS$j$*ci10umv;FbdcjW1JFR`u-n&19P5iUEmmPojN7f>^"
              "q;KV^rwocVu@#dxpL@xrYM)R&XZxkke43sq{~1`B*jX6an1Kkw1oMDQm;?h%f(^v`4*&")
#: (the codec wrote it for a tree with a NaN, which only SQLite's JSON took; here with a null).
LEGACY_TREE = {"~1": {"x": None, "w": {"~q": "AAAAAAAAAAAcABwAHADsPgAAkiQkSbZtSZLbtm3b//8="}}}


def test_the_legacy_reader_decodes_the_old_forms_within_their_16_bits() -> None:
    want = rollout_like(2)
    got = legacy.decode(LEGACY_ZIP)
    steps, stored = want["attribution"]["steps"], got["attribution"]["steps"]
    span = max(steps) - min(steps)
    assert all(abs(g - w) <= span / 131070 * (1 + 1e-9) for g, w in zip(stored, steps, strict=True))
    assert_close(got, want)  # the scalars to 9 significant digits (the vectors' bound is looser than 16 bits)
    assert legacy.decode(want) == want  # rows from before any codec: the plain tree


@pytest.fixture(params=["sqlite", "postgresql"])
def old_journal(request: pytest.FixtureRequest, sqlite_url: str, pg_schema_url: Any) -> Engine:
    """A journal at revision 0004 (decisions.explanation still JSON) on SQLite or in a fresh
    PostgreSQL schema."""
    url = sqlite_url if request.param == "sqlite" else pg_schema_url()
    engine = create_engine(url)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    return engine


def test_migration_0005_rewrites_every_old_row_and_reads_back_the_same(old_journal: Engine) -> None:
    old = {"plain": rollout_like(1), "tree": LEGACY_TREE, "zip": LEGACY_ZIP, "null": None}
    with old_journal.begin() as conn:
        conn.execute(text("INSERT INTO runs (id, mode, status, strategy, symbol, timeframe, category, config, "
                          "initial_cash, started_at, updated_at, bars) VALUES ('r1', 'backtest', 'completed', "
                          "'rollout', 'BTCUSDT', '1h', 'linear', '{}', '1000', '2024-01-01', '2024-01-01', 0)"))
        for i, (name, value) in enumerate(old.items()):
            conn.execute(text("INSERT INTO decisions (id, run_id, bar_time, symbol, target, confidence, model_id, "
                              "price, status, explanation) VALUES (:id, 'r1', :t, 'BTCUSDT', 0, 0.5, 'm', 100, "
                              "'hold', :e)"), {"id": f"r1-{name}", "t": i, "e": json.dumps(value)})
    assert upgrade(old_journal) == ScriptDirectory.from_config(alembic_config(old_journal)).get_current_head()
    got = {r["id"]: r["explanation"] for r in q.decisions(old_journal, "r1")}
    assert_close(got["r1-plain"], rollout_like(1))
    assert_close(got["r1-zip"], legacy.decode(LEGACY_ZIP))
    assert got["r1-tree"]["x"] is None
    assert_close(got["r1-tree"]["w"], legacy.decode(LEGACY_TREE)["w"])
    assert got["r1-null"] is None
    with old_journal.connect() as conn:
        raw = dict(conn.execute(text("SELECT id, explanation FROM decisions")).all())
    assert all(bytes(raw[f"r1-{n}"])[:1] == codec.VERSION for n in ("plain", "tree", "zip"))
    assert q.find_decision(old_journal, "r1-zip")["explanation"] == got["r1-zip"]
    page, _ = pages.page(old_journal, "decisions", "r1", limit=10)
    by_id = {r["id"]: r["explanation"] for r in page}
    assert by_id.keys() == got.keys() and by_id["r1-zip"] == got["r1-zip"] and by_id["r1-plain"] == got["r1-plain"]


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
    assert plain > 6 * stored, (plain, stored)
    # Against a rollout decision as journaled before issue 14 (the whole row: bench/journal_size.py).
    assert before >= 6 * stored, (before, stored)
    db.dispose()
    assert row_bytes(tmp_path / "j.db") <= 2114 / 4  # the decisions table and its indexes, 2,114 B before


def row_bytes(path: Path) -> float:
    """Bytes per decision of the decisions table and its two indexes, after VACUUM (SQLite dbstat)."""
    import sqlite3  # noqa: PLC0415

    con = sqlite3.connect(path)
    try:
        con.execute("VACUUM")
        n = con.execute("SELECT count(*) FROM decisions").fetchone()[0]
        size = con.execute("SELECT sum(pgsize) FROM dbstat WHERE name IN ('decisions', "
                           "'sqlite_autoindex_decisions_1', 'ix_decisions_run_time')").fetchone()[0]
    finally:
        con.close()
    return size / n


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
