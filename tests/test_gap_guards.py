"""Data guards for gaps (issue 13): zero-volume flat filler candles are dropped at load and
reported as gaps; no training or evaluation window or label spans a gap; a model strategy goes
flat ("window spans a gap") until its window is contiguous again, on both backtest paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bot.candles import CandleData, find_gaps
from bot.cli import app
from bot.feeds.replay import load_candles
from models.features import FEATURE_WARMUP
from models.gaps import REASON, Runs, run_starts, span, window_gap
from tests.test_cli import bot
from tests.test_lookahead import CASES, decisions

torch.set_num_threads(1)
HOUR = 3_600_000


def real_rows(btc_1h: Path, start: int, stop: int) -> pd.DataFrame:
    return pd.read_csv(btc_1h, dtype=str).iloc[start:stop].reset_index(drop=True)


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def with_filler(df: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """The exchange's filler: a bar without trades repeats the previous close, volume 0."""
    out = df.copy()
    for r in rows:
        prev = out.loc[r - 1, "close"]
        out.loc[r, ["open", "high", "low", "close"]] = prev
        out.loc[r, "volume"] = "0"
    return out


def drop_bars(data: CandleData, lo: int, hi: int) -> CandleData:
    """``data`` without bars [lo, hi): a real gap of hi - lo bars."""
    keep = np.r_[0:lo, hi:len(data)]
    t = data.time[keep]
    return CandleData(data.symbol, data.timeframe, t, data.open[keep], data.high[keep], data.low[keep],
                      data.close[keep], data.volume[keep], data.source, find_gaps(t, HOUR))


# -- a. zero-volume flat candles --------------------------------------------------------------------
def test_filler_candles_are_dropped_and_reported_as_gaps(btc_1h: Path, tmp_path: Path) -> None:
    df = with_filler(real_rows(btc_1h, 0, 400), [100, 101, 102, 250, 399])
    data = load_candles(write(df, tmp_path / "f.csv"), symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    assert len(data) == 395 and not np.any(data.volume == 0)
    g = data.gaps
    # 100-102 and 250 leave holes; the filler at the end leaves none but is still counted
    assert (g.count, g.missing_bars, g.filler, g.largest_ms) == (2, 4, 5, 4 * HOUR)
    assert g.describe(HOUR) == ("2 gaps, 4 missing bars, largest 3 bars after 2023-12-03T03:00:00Z; "
                                "5 zero-volume flat filler candles dropped (treated as gaps)")
    # A flat bar that traded (volume > 0) and a zero-volume bar that moved are real candles.
    df2 = real_rows(btc_1h, 0, 200)
    df2.loc[50, ["open", "high", "low", "close"]] = df2.loc[49, "close"]
    df2.loc[60, "volume"] = "0"
    kept = load_candles(write(df2, tmp_path / "g.csv"), symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    assert len(kept) == 200 and not kept.gaps.found


def test_backtest_warns_and_journals_filler_even_without_a_hole(btc_1h: Path, tmp_path: Path) -> None:
    df = with_filler(real_rows(btc_1h, 0, 300), [299])  # the last bar only: no gap in between
    path = write(df, tmp_path / "bybit_BTCUSDT_1h.csv")
    db = f"sqlite:///{tmp_path / 'j.db'}"
    r = CliRunner().invoke(app, ["backtest", "--strategy", "sma", "--data", str(path), "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    assert "warning: BTCUSDT: no gaps; 1 zero-volume flat filler candles dropped" in r.stderr
    ev = CliRunner().invoke(app, ["journal", "events", "--run", "latest", "--db", db, "--format", "json"])
    gaps = [e for e in json.loads(ev.stdout) if e["kind"] == "data_gaps"]
    assert len(gaps) == 1 and gaps[0]["payload"]["filler_dropped"] == 1 and gaps[0]["payload"]["count"] == 0


def test_every_candle_filler_is_one_clear_line(btc_1h: Path, tmp_path: Path) -> None:
    df = with_filler(real_rows(btc_1h, 0, 30), list(range(1, 30))).iloc[1:]
    r = bot("backtest", "--strategy", "sma", "--data", str(write(df, tmp_path / "x.csv")),
            "--db", f"sqlite:///{tmp_path / 'j.db'}")
    assert r.returncode == 2 and r.stderr.strip() == ("error: x.csv: every candle is a zero-volume flat "
                                                      "filler candle (no trades)")


# -- b. windows and labels never span a gap -----------------------------------------------------------
def test_runs_windows_and_labels_on_exact_times() -> None:
    t = np.array([0, 1, 2, 5, 6, 7, 8, 10], dtype=np.int64) * HOUR
    assert run_starts(t, HOUR).tolist() == [0, 0, 0, 3, 3, 3, 3, 7]
    runs = Runs(run_starts(t, HOUR))
    assert runs.labels_ok(np.arange(8), 2).tolist() == [True, False, False, True, True, False, False, False]
    long = np.r_[0:100, 103:203].astype(np.int64) * HOUR  # 3 bars missing after bar 99
    ok = Runs(run_starts(long, HOUR)).windows_ok(np.array([78, 79, 99, 100, 178, 179]), 16)
    assert ok.tolist() == [False, True, True, False, False, True]  # 64 warm-up + 16 window bars in one run
    assert window_gap(t[:3], HOUR, 4) is None  # warming up, no gap yet
    assert window_gap(t[:6], HOUR, 4) == {"after": 2 * HOUR, "missing_bars": 2, "contiguous_bars": 3,
                                          "needs": FEATURE_WARMUP + 4}


def oracle_ok(t: np.ndarray, ends: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """By brute force: every bar from the window's feature warm-up to the label is one bar apart."""
    lo = ends - (span(window) - 1)
    return np.array([np.all(np.diff(t[a: e + horizon + 1]) == HOUR) for a, e in zip(lo, ends, strict=True)])


def test_training_and_evaluation_leave_out_windows_that_span_a_gap(data_dir: Path, tmp_path: Path) -> None:
    from models.checkpoint import read_meta
    from models.dsc_train import DSCConfig, train_dsc

    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    data = drop_bars(drop_bars(full.slice(0, 1300), 700, 703), 1000, 1001)  # two real gaps
    w, h = 16, 2
    cfg = DSCConfig.model_validate({"window": w, "horizon": h, "channels": 8, "blocks": 2,
                                    "train": {"epochs": 1, "batch_size": 256, "threads": 1}})
    path = train_dsc(data, cfg, fee_rate=0.001, long_only=False, symbol="BTCUSDT", timeframe="1h",
                     out=tmp_path / "d.pt", progress=False)
    meta = read_meta(path)
    first = span(w) - 1
    ends = np.arange(first, len(data) - h)
    ok = oracle_ok(data.time, ends, w, h)
    assert meta.labels["gap_excluded"] == int((~ok).sum()) == 2 * (span(w) + h - 1)
    split = meta.labels["split"]
    assert split["train"] + split["val"] + split["test"] <= int(ok.sum())
    # bot evaluate on another gapped file: the same rule, said in a note; the gaps reported
    other = tmp_path / "bybit_BTCUSDT_1h.csv"
    df = pd.read_csv(data_dir / "bybit_BTCUSDT_1h.csv.gz", dtype=str).iloc[2000:2600]
    write(df.drop(index=df.index[[300, 301]]), other)
    r = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(path), "--data", str(other), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["gaps"] == {"count": 1, "missing_bars": 2, "largest_ms": 3 * HOUR,
                           "largest_at": int(df.timestamp.iloc[299]), "filler_dropped": 0}
    assert f"{span(w) + h - 1} windows left out: their window or label spans a gap in the data" in res["notes"]
    assert res["metrics"]["evaluated"]["samples"] == 598 - first - h - (span(w) + h - 1)
    assert "warning: BTCUSDT: 1 gaps, 2 missing bars" in r.stderr


def test_a_vol_label_whose_trailing_sigma_spans_a_gap_is_left_out(data_dir: Path) -> None:
    from models.checkpoint import ModelMeta
    from models.classifier import evaluated_ends, prepare
    from models.labels import Labeling, LabelRule
    from models.training import EvalRequest, TrainConfig

    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    data = drop_bars(full.slice(0, 1500), 800, 803)
    w, h, sigma = 16, 2, 200  # the sigma reads 200 bars back: further than the 79 of window + warm-up
    vol = Labeling(LabelRule(mode="vol", k=0.5, window=sigma), 0.0, 0.001, h)
    prep = prepare(data, vol, w, TrainConfig(), "1h", "dsc")
    ends = np.arange(sigma, len(data) - h)
    lo = np.minimum(ends - (span(w) - 1), ends - sigma)
    ok = np.array([np.all(np.diff(data.time[a: e + h + 1]) == HOUR) for a, e in zip(lo, ends, strict=True)])
    assert np.array_equal(prep.ends, ends[ok])
    assert prep.gap_excluded == int((~ok).sum()) == sigma + h
    assert prep.label_meta()["gap_excluded"] == sigma + h
    band = prepare(data, Labeling(LabelRule(), 0.0, 0.001, h), w, TrainConfig(), "1h", "dsc")
    assert band.gap_excluded == span(w) + h - 1  # the band reads no further back than the window
    # bot evaluate's windows follow the checkpoint's rule the same way, and say so; the overlap
    # rule (fitted on bars 0..100) skips bars before the label's look-back anyway
    meta = ModelMeta(kind="dsc", hparams={}, feature_names=[], window=w, horizon=h, normalizer={},
                     labels=vol.to_meta(), fitted={"symbol": "BTCUSDT", "timeframe": "1h",
                                                   "start": int(data.time[0]), "end": int(data.time[100])})
    req = EvalRequest(checkpoint=Path("unused.pt"), data=data, symbol="BTCUSDT", timeframe="1h", fee_rate=0.001,
                      long_only=False)
    sample, got, notes = evaluated_ends(meta, req)
    assert np.array_equal(got, ends[ok])
    assert (sample.first, sample.label) == (101, "out-of-sample")
    assert len(notes) == 2 and "(out of sample)" in notes[0]
    assert notes[1] == f"{sigma + h} windows left out: their window or label spans a gap in the data"


@pytest.fixture(scope="module")
def contiguous(data_dir: Path) -> CandleData:
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    return full.slice(5000, 5500)


@pytest.mark.parametrize("name", ["dsc", "rollout", "gru_sizer"])
def test_a_window_across_a_gap_is_flat_until_contiguous_again(name: str, contiguous: CandleData,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    factory = CASES[name](contiguous, tmp_path_factory.mktemp(f"gap_{name}"))
    gapped = drop_bars(contiguous, 300, 305)  # 5 bars missing after bar 299
    slow = decisions(factory(), gapped, precompute=False)
    fast = decisions(factory(), gapped, precompute=True)
    assert slow.keys() == fast.keys()
    for t, a in slow.items():
        b = fast[t]
        assert a[0] == b[0] and abs(a[1] - b[1]) <= 1e-6, t
    k = span(factory().window)
    flat = [t for t, v in slow.items() if v[2].get("reason") == REASON]
    # bars 300 .. 300 + k - 2 of the gapped file: k - 1 flat decisions, then the model again
    assert flat == [int(x) for x in gapped.time[300: 300 + k - 1]]
    e = slow[flat[0]][2]
    assert slow[flat[0]][0] == 0.0 and e["signal"] == "flat" and e["kind"] == name
    assert e["gap"] == {"after": int(gapped.time[299]), "missing_bars": 5, "contiguous_bars": 1, "needs": k}
    assert "window spans a gap (5 bars missing after" in e["rule"]["text"]
    assert slow[flat[-1]][2]["gap"]["contiguous_bars"] == k - 1
    after = slow[int(gapped.time[300 + k - 1])][2]
    assert "reason" not in after and after["kind"] == name
    # Before the gap the decisions are those of the contiguous file.
    same = decisions(factory(), contiguous, precompute=False)
    before = [t for t in slow if t <= int(gapped.time[299])]
    assert before and all(slow[t][0] == same[t][0] for t in before)
