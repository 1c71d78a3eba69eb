"""What a checkpoint was fitted on, and the one overlap rule (models/provenance.py, bot/app/guards.py):
in-sample bars are found by time range whatever the file's first bar, never scored or traded unless
--allow-in-sample (then every output says so), and a checkpoint of another market is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from bot.candles import CandleData
from bot.errors import ModelError
from bot.feeds.replay import load_candles
from bot.timeutil import ms_to_iso
from models.checkpoint import ModelMeta, read_meta
from models.provenance import Fitted, fitted_of, sample_range, widen
from storage import queries as q
from storage.db import open_database
from tests.helpers import one_line_error
from tests.test_dsc_strategy import TINY, tiny_checkpoint

torch.set_num_threads(1)
H = 3_600_000
TINY_SETS = ["--set", "strategy.params=" + json.dumps(TINY)]


def write(data: CandleData, path: Path, rows: slice | np.ndarray) -> Path:
    cols = {"timestamp": data.time, "open": data.open, "high": data.high, "low": data.low, "close": data.close,
            "volume": data.volume}
    pd.DataFrame({k: v[rows] for k, v in cols.items()}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> CandleData:
    return load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=H)


@pytest.fixture(scope="module")
def work(btc: CandleData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("provenance")
    ck = tiny_checkpoint(btc.slice(0, 1500), d / "tiny.pt")
    fitted = fitted_of(read_meta(ck))
    return {"dir": d, "ckpt": ck, "fitted": fitted, "db": f"sqlite:///{d / 'j.db'}",
            "train": write(btc, d / "train.csv", slice(0, 1500)),      # the training file itself
            "full": write(btc, d / "full.csv", slice(0, 2600)),        # starts with the training candles
            "drop1": write(btc, d / "drop1.csv", slice(1, 2600)),      # the same without its first bar
            "replay": write(btc, d / "replay.csv", slice(1000, 1500)),  # starts inside the fitted range
            "four_hour": write(btc, d / "btc_4h.csv", np.arange(0, 2600, 4))}


def evaluate(bot_cli, work: dict[str, Any], data: str | Path, *extra: str) -> dict[str, Any]:
    r = bot_cli("evaluate", "--checkpoint", str(work["ckpt"]), "--data", str(data), "--json", *extra,
                cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fitted_range_is_training_plus_validation(work: dict[str, Any], btc: CandleData) -> None:
    meta = read_meta(work["ckpt"])
    f = work["fitted"]
    assert (f.symbol, f.timeframe, f.start, f.note) == ("BTCUSDT", "1h", int(btc.time[0]), "")
    # The fit's last bar is the last validation window's label bar; the test part lies after it.
    assert f.end == int(btc.time[f.bars - 1]) and f.end < meta.train_range["test_start"]
    assert meta.labels["split"]["val"] > 0 and f.bars < 1500
    from models.provenance import data_hash

    assert meta.data_hash == data_hash(btc, f.bars)  # the hash names exactly the fitted bars


def test_the_rule_goes_by_time_range_and_market() -> None:
    f = Fitted("BTCUSDT", "1h", 100 * H, 199 * H, 100)
    t = np.arange(150, 260) * H  # starts inside the range
    s = sample_range(f, "BTCUSDT", "1h", t)
    assert s.first == 50 and int(t[s.first]) == 200 * H and s.in_sample is None and "out of sample" in s.notes[0]
    assert sample_range(f, "BTCUSDT", "1h", np.arange(200, 260) * H).first == 0  # all after: nothing skipped
    assert sample_range(f, "BTCUSDT", "1h", np.arange(0, 90) * H).first == 0      # all before
    assert sample_range(f, "ETHUSDT", "1h", t).first == 0  # another market's candles are not in-sample
    assert sample_range(f, "BTCUSDT", "4h", t).first == 0
    allowed = sample_range(f, "BTCUSDT", "1h", t, allow_in_sample=True)
    assert allowed.first == 0 and allowed.in_sample is not None and allowed.in_sample["bars"] == 50
    assert allowed.label == "in-sample" and allowed.notes[0].startswith("in-sample: 50 of the 110 bars")
    with pytest.raises(ModelError, match="nothing out of sample remains"):
        sample_range(f, "BTCUSDT", "1h", np.arange(150, 200) * H)
    # A retrain on top of this fit (gru_sizer --stage 2) spans both ranges of the same market.
    later = {"symbol": "BTCUSDT", "timeframe": "1h", "start": 150 * H, "end": 300 * H, "bars": 151}
    assert widen(later, f)["start"] == 100 * H and widen(later, f)["end"] == 300 * H
    assert widen({**later, "symbol": "ETHUSDT"}, f)["start"] == 150 * H  # another market's fit: kept apart


def test_evaluate_scores_only_after_the_fitted_range_whatever_the_first_bar(bot_cli, work: dict[str, Any],
                                                                           data_dir: Path) -> None:
    end = work["fitted"].end
    full = evaluate(bot_cli, work, work["full"])
    drop1 = evaluate(bot_cli, work, work["drop1"])  # used to be scored from bar 0, mostly in-sample
    for out in (full, drop1):
        ev = out["metrics"]["evaluated"]
        assert out["sample"] == "out-of-sample" and "in_sample" not in out
        assert ev["from"] == end + H and any("out of sample" in n for n in out["notes"])
    assert drop1["metrics"]["evaluated"]["samples"] == full["metrics"]["evaluated"]["samples"]
    # Another file of the same market holding those times (Binance BTCUSDT 1h, 2020-01 .. 2024-04).
    other = evaluate(bot_cli, work, data_dir / "binanceusdm_BTCUSDT_1h.csv.gz")
    assert other["metrics"]["evaluated"]["from"] == end + H and other["sample"] == "out-of-sample"


def test_allow_in_sample_labels_evaluate(bot_cli, work: dict[str, Any]) -> None:
    f = work["fitted"]
    out = evaluate(bot_cli, work, work["drop1"], "--allow-in-sample")
    ev = out["metrics"]["evaluated"]
    assert out["sample"] == "in-sample" and ev["from"] < f.end
    info = out["in_sample"]
    assert info["to"] == ms_to_iso(f.end) and info["bars"] == (f.end - ev["from"]) // H + 1
    r = bot_cli("evaluate", "--checkpoint", str(work["ckpt"]), "--data", str(work["drop1"]), "--allow-in-sample",
                cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    assert "(in-sample)" in r.stdout and "in-sample: these figures include bars the model was fitted on" in r.stdout


def test_backtest_from_inside_the_fitted_range_trades_after_it(bot_cli, work: dict[str, Any]) -> None:
    end = work["fitted"].end
    r = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data", str(work["full"]),
                "--from", "2024-01-01", "--db", work["db"], "--json", *TINY_SETS, cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["start"] == ms_to_iso(end + H) and "in_sample" not in s
    assert s["candles"] == 2600 - work["fitted"].bars
    assert f"only the {s['candles']} bars after {ms_to_iso(end)} are traded (out of sample)" in r.stderr
    # Nothing after the range: one line, exit 2, nothing journaled.
    runs = len(q.list_runs(open_database(work["db"])))
    r = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data", str(work["full"]),
                "--from", "2024-01-01", "--to", "2024-01-15", "--db", work["db"], *TINY_SETS, cwd=work["dir"])
    one_line_error(r, "nothing out of sample remains")
    assert len(q.list_runs(open_database(work["db"]))) == runs


def test_allow_in_sample_labels_every_backtest_output(bot_cli, work: dict[str, Any], tmp_path: Path) -> None:
    f = work["fitted"]
    r = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data", str(work["full"]),
                "--from", "2024-01-01", "--allow-in-sample", "--db", work["db"], "--json", *TINY_SETS,
                cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    first = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
    want = {"symbol": "BTCUSDT", "bars": (f.end - first) // H + 1, "from": ms_to_iso(first),
            "to": ms_to_iso(f.end), "fitted": f.describe()}
    assert s["start"] == ms_to_iso(first) and s["in_sample"] == want
    assert "in-sample:" in r.stderr
    db = open_database(work["db"])
    run = q.resolve_run(db, s["run_id"])
    assert run["config"]["markets"][0]["strategy"]["allow_in_sample"] is True  # the journaled config
    assert run["summary"]["in_sample"] == want                                   # the journaled summary
    assert [e["payload"] for e in q.events(db, s["run_id"], kind="in_sample")] == [want]
    js = bot_cli("journal", "summary", "--run", s["run_id"], "--db", work["db"], "--format", "json", cwd=work["dir"])
    assert json.loads(js.stdout)["in_sample"] == want
    table = bot_cli("journal", "summary", "--run", s["run_id"], "--db", work["db"], cwd=work["dir"])
    assert "in-sample:" in table.stdout and "not out of sample" in table.stdout
    from bot.report import write_report

    page = Path(write_report(db, s["run_id"], tmp_path / "report", png=False).html).read_text()
    assert 'id="in-sample"' in page and ">in-sample</span>" in page
    printed = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data",
                      str(work["full"]), "--from", "2024-01-01", "--allow-in-sample", "--db", work["db"],
                      *TINY_SETS, cwd=work["dir"])
    assert printed.returncode == 0 and f"in-sample: {want['bars']:,} traded bars" in printed.stdout


def test_paper_replay_of_the_training_data_trades_after_the_fitted_range(bot_cli, work: dict[str, Any],
                                                                         btc: CandleData) -> None:
    f = work["fitted"]
    r = bot_cli("run", "--mode", "paper", "--feed", "replay", "--strategy", "dsc", "--checkpoint",
                str(work["ckpt"]), "--data", str(work["replay"]), "--db", work["db"], "--json", *TINY_SETS,
                cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["mode"] == "paper" and s["start"] == ms_to_iso(f.end + H)
    assert s["candles"] == int(np.sum(btc.time[1000:1500] > f.end)) and "out of sample" in r.stderr


def test_other_symbol_refused_and_allowed_fills_carry_the_market(bot_cli, work: dict[str, Any],
                                                                 data_dir: Path) -> None:
    eth = str(data_dir / "bybit_ETHUSDT_1h.csv.gz")
    args = ["backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data", eth, "--from", "2025-06-01",
            "--to", "2025-06-15", "--db", work["db"], "--set", "market.symbol=ETHUSDT", "--set",
            "market.tick_size=0.01", *TINY_SETS]
    r = bot_cli(*args, cwd=work["dir"])
    one_line_error(r, "was fitted on BTCUSDT 1h, the market is ETHUSDT 1h: pass --allow-other-market")
    r = bot_cli("evaluate", "--checkpoint", str(work["ckpt"]), "--data", eth, "--set", "market.symbol=ETHUSDT",
                cwd=work["dir"])
    one_line_error(r, "the market is ETHUSDT 1h")
    r = bot_cli(*args, "--allow-other-market", "--json", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert "other market" in r.stderr and s["symbol"] == "ETHUSDT" and s["candles"] == 14 * 24
    db = open_database(work["db"])
    fills, decisions = q.fills(db, s["run_id"]), q.decisions(db, s["run_id"])
    assert fills and {x["symbol"] for x in fills} == {"ETHUSDT"} == {x["symbol"] for x in decisions}
    [event] = q.events(db, s["run_id"], kind="other_market")
    assert event["payload"]["fitted_symbol"] == "BTCUSDT" and event["payload"]["symbol"] == "ETHUSDT"


def test_other_timeframe_refused(bot_cli, work: dict[str, Any]) -> None:
    r = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data", str(work["four_hour"]),
                "--set", "market.timeframe=4h", "--db", work["db"], *TINY_SETS, cwd=work["dir"])
    one_line_error(r, "was fitted on BTCUSDT 1h, the market is BTCUSDT 4h")
    r = bot_cli("evaluate", "--checkpoint", str(work["ckpt"]), "--data", str(work["four_hour"]),
                "--set", "market.timeframe=4h", cwd=work["dir"])
    one_line_error(r, "the market is BTCUSDT 4h")


def _rewrite_meta(src: Path, dst: Path, change: Any) -> Path:
    """A copy of checkpoint ``src`` whose metadata ``change`` edited (as an older build wrote it)."""
    raw = torch.load(src, map_location="cpu", weights_only=True)
    meta = json.loads(raw["meta_json"])
    change(meta)
    raw["meta_json"] = json.dumps(meta, sort_keys=True)
    torch.save(raw, dst)
    return dst


def test_old_checkpoints_load_and_say_what_cannot_be_checked(bot_cli, work: dict[str, Any]) -> None:
    f = work["fitted"]

    def old_dsc(m: dict[str, Any]) -> None:  # before `fitted`: train_range ended at the fit's last bar
        m.pop("fitted")
        m["train_range"] = {"symbol": "BTCUSDT", "timeframe": "1h", "start": f.start, "end": f.end, "bars": f.bars,
                            "fit_end_index": f.bars - 1, "source": "train.csv"}

    old = _rewrite_meta(work["ckpt"], work["dir"] / "old.pt", old_dsc)
    assert fitted_of(read_meta(old)) == f  # everything is still known
    out = evaluate(bot_cli, {**work, "ckpt": old}, work["drop1"])
    assert out["metrics"]["evaluated"]["from"] == f.end + H and out["sample"] == "out-of-sample"

    def bare(m: dict[str, Any]) -> None:
        m.pop("fitted")
        m["train_range"] = {}

    blind = _rewrite_meta(work["ckpt"], work["dir"] / "blind.pt", bare)
    out = evaluate(bot_cli, {**work, "ckpt": blind}, work["drop1"])
    assert out["sample"] == "unchecked" and out["metrics"]["evaluated"]["from"] < f.end
    assert "checkpoint records no training range: in-sample bars cannot be detected" in out["notes"][0]
    # gru_sizer before `fitted`: the range ends `horizon` bars after its validation part.
    meta = ModelMeta(kind="gru_sizer", hparams={}, feature_names=[], window=16, horizon=3, normalizer={},
                     train_range={"symbol": "BTCUSDT", "timeframe": "1h", "start": 0, "end": 999 * H,
                                  "val_bars": [600 * H, 800 * H], "test_bars": [830 * H, 998 * H]})
    g = fitted_of(meta)
    assert (g.start, g.end) == (0, 803 * H) and "exact unless that stretch had gaps" in g.note


def test_gru_sizer_backtest_on_its_own_training_file_skips_the_fitted_bars(bot_cli, btc: CandleData,
                                                                          tmp_path: Path) -> None:
    from tests.test_gru_strategy import PARAMS

    data = write(btc, tmp_path / "own.csv", slice(len(btc) - 1000, len(btc)))
    sets = ["--set", "strategy.params=" + json.dumps(PARAMS)]
    ck = tmp_path / "gru.pt"
    r = bot_cli("train", "--strategy", "gru_sizer", "--data", str(data), "--out", str(ck), "--json", *sets,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    meta = read_meta(ck)
    f = fitted_of(meta)
    val_end = meta.train_range["val_bars"][1]
    assert f.end == val_end + PARAMS["horizon"] * H and f.end < meta.train_range["test_bars"][0]
    db = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot_cli("backtest", "--strategy", "gru_sizer", "--checkpoint", str(ck), "--data", str(data), "--db", db,
                "--json", *sets, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["start"] == ms_to_iso(f.end + H) and s["candles"] == 1000 - f.bars and "in_sample" not in s
    r = bot_cli("backtest", "--strategy", "gru_sizer", "--checkpoint", str(ck), "--data", str(data), "--db", db,
                "--json", "--allow-in-sample", *sets, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["candles"] == 1000 and s["in_sample"]["bars"] == f.bars
    out = json.loads(bot_cli("evaluate", "--checkpoint", str(ck), "--data", str(data), "--json",
                             cwd=tmp_path).stdout)
    assert out["sample"] == "out-of-sample" and out["metrics"]["sizer"]["mean_exposure"] >= 0


def test_venue_runs_refuse_a_first_bar_inside_the_fitted_range(work: dict[str, Any]) -> None:
    from bot.app.guards import guard_venue
    from bot.config import MarketConfig
    from strategies.base import StrategyContext
    from strategies.dsc import DSCStrategy

    f = work["fitted"]
    strategy = DSCStrategy.from_config(TINY, StrategyContext("BTCUSDT", "1h", False, 0.001, str(work["ckpt"])))
    m = MarketConfig()
    with pytest.raises(ModelError, match="would trade bars it was fitted on"):
        guard_venue(strategy, m, f.end - 5 * H, None)
    after = guard_venue(strategy, m, f.end + H, None)
    assert after.events == [] and after.in_sample is None
    allowed = m.model_copy(update={"strategy": m.strategy.model_copy(update={"allow_in_sample": True})})
    g = guard_venue(strategy, allowed, f.end - 5 * H, None)
    assert g.in_sample is not None and g.in_sample["bars"] == 6 and g.events[0][0] == "in_sample"
    with pytest.raises(ModelError, match="the market is ETHUSDT 1h"):
        guard_venue(strategy, m.model_copy(update={"symbol": "ETHUSDT"}), f.end + H, None)
