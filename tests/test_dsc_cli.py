"""dsc through the real CLI: train / evaluate / backtest, and bad input as one line + exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn

from bot.feeds.replay import load_candles
from models.checkpoint import ModelMeta, save_checkpoint
from models.labels import LabelRule, class_balance, make_labels
from tests.helpers import one_line_error
from tests.test_dsc_strategy import TINY, tiny_checkpoint

BOT = str(Path(sys.executable).parent / "bot")
ROOT = Path(__file__).resolve().parents[1]
TINY_SETS = ["--set", "strategy.params=" + json.dumps(TINY)]


def test_console_script_one_line_error(tmp_path: Path) -> None:
    """The installed ``bot`` script itself: a missing checkpoint is one line and exit code 2."""
    r = subprocess.run([BOT, "evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--data",
                        str(tmp_path / "none.csv")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "BOT_DEBUG"})
    one_line_error(r, "checkpoint not found")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dsc_cli")
    btc = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    ck = tiny_checkpoint(btc.slice(0, 1500), d / "tiny.pt")
    cols = {"timestamp": btc.time, "open": btc.open, "high": btc.high, "low": btc.low, "close": btc.close,
            "volume": btc.volume}
    small = d / "small.csv"
    pd.DataFrame({k: v[:1300] for k, v in cols.items()}).to_csv(small, index=False)
    few = d / "few.csv"
    pd.DataFrame({k: v[:50] for k, v in cols.items()}).to_csv(few, index=False)
    bad = pd.DataFrame({k: v[2000:2400].copy() for k, v in cols.items()})  # after the fitted range
    bad.loc[200:, "volume"] = 1e308  # absurd volume: finite in the file, overflows to NaN in the VWAP
    badf = d / "absurd.csv"
    bad.to_csv(badf, index=False)
    corrupted = d / "corrupted.pt"
    corrupted.write_bytes(ck.read_bytes()[:300])
    other = save_checkpoint(d / "other.pt", nn.Linear(2, 2), ModelMeta(
        kind="rollout", hparams={}, feature_names=["x"], window=16, horizon=2, normalizer={}))
    mystery = save_checkpoint(d / "mystery.pt", nn.Linear(2, 2), ModelMeta(
        kind="mystery", hparams={}, feature_names=["x"], window=16, horizon=2, normalizer={}))
    return {"dir": d, "ckpt": ck, "mystery": mystery, "small": small, "few": few, "absurd": badf,
            "corrupted": corrupted,
            "other": other, "eth": data_dir / "bybit_ETHUSDT_1h.csv.gz"}


def test_evaluate_json_on_another_market(bot_cli, work: dict[str, Path]) -> None:
    r = bot_cli("evaluate", "--checkpoint", str(work["ckpt"]), "--data", str(work["eth"]), "--json",
                "--set", "market.symbol=ETHUSDT", "--allow-other-market", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ev = out["metrics"]["evaluated"]
    assert 0 <= ev["accuracy"] <= 1 and ev["samples"] > 10_000
    assert set(ev["baselines"]) == {"majority_class", "same_as_last_bar", "volatility_only"}
    assert len(ev["confusion"]) == 3 and "trading_after_fees" in ev
    skill = ev["skill"]  # direction and rank correlation with intervals, next to accuracy
    assert 0 <= skill["directional_auc"] <= 1 and -1 <= skill["spearman"] <= 1
    lo, hi = skill["directional_auc_ci"]
    assert lo <= skill["directional_auc"] <= hi and skill["directional_windows"] > 5000
    assert len(ev["verdict"]) == 3 and "directional skill: AUC" in ev["verdict"][0]
    deletion = out["deletion"]  # every method on the file's out-of-sample windows
    assert set(deletion) == {"signed_grad_x_input", "abs_grad_x_input"}
    for row in deletion.values():
        assert row["k"] == 5 and row["windows"] == 2000 and row["older_random_k_drop"] is not None
    assert out["selection"]["split"] == "validation"


def test_evaluate_prints_the_deletion_table(bot_cli, work: dict[str, Path]) -> None:
    r = bot_cli("evaluate", "--checkpoint", str(work["ckpt"]), "--data", str(work["eth"]),
                "--set", "market.symbol=ETHUSDT", "--allow-other-market", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    assert "deletion test of every attribution method" in r.stdout
    assert "signed_grad_x_input" in r.stdout and "abs_grad_x_input" in r.stdout and "newest-bar" in r.stdout
    assert "directional_auc_ci" in r.stdout and "volatility_only.balanced_accuracy" in r.stdout
    assert "evaluated: " in r.stdout and "the volatility-only baseline" in r.stdout


def test_train_writes_checkpoint_and_card(bot_cli, work: dict[str, Path]) -> None:
    out = work["dir"] / "cli.pt"
    r = bot_cli("train", "--strategy", "dsc", "--data", str(work["small"]), "--out", str(out), "--json", *TINY_SETS,
            cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["kind"] == "dsc" and card["window"] == 16 and "test" in card["metrics"]
    assert out.exists() and (work["dir"] / "cli.card.json").exists() and (work["dir"] / "cli.explain.onnx").exists()


def test_backtest_with_checkpoint(bot_cli, work: dict[str, Path]) -> None:
    db = f"sqlite:///{work['dir'] / 'j.db'}"
    r = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["ckpt"]), "--data", str(work["eth"]),
            "--from", "2025-06-01", "--to", "2025-07-01", "--db", db, "--json", *TINY_SETS,
                "--set", "market.symbol=ETHUSDT", "--allow-other-market", "--set", "market.tick_size=0.01",
                cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["strategy"] == "dsc" and summary["model_id"].startswith("dsc-") and summary["decisions"] > 500


@pytest.mark.parametrize("case, match", [
    ("missing", "checkpoint not found"),
    ("corrupted", "corrupted"),
    ("mystery", "no evaluator for model kind 'mystery'"),
    ("few", "too little data"),
    ("absurd", "vwap_dist_24 is NaN/inf"),
])
def test_bad_input_is_one_line_exit_2(bot_cli, work: dict[str, Path], case: str, match: str) -> None:
    ckpt = {"missing": work["dir"] / "nope.pt", "corrupted": work["corrupted"], "mystery": work["mystery"]}.get(
        case, work["ckpt"])
    data = work[case] if case in ("few", "absurd") else work["small"]
    r = bot_cli("evaluate", "--checkpoint", str(ckpt), "--data", str(data), cwd=work["dir"])
    one_line_error(r, match)


def test_bad_input_backtest_and_train(bot_cli, work: dict[str, Path]) -> None:
    db = f"sqlite:///{work['dir'] / 'j2.db'}"
    r = bot_cli("backtest", "--strategy", "dsc", "--checkpoint", str(work["other"]), "--data", str(work["small"]),
            "--db", db, *TINY_SETS, cwd=work["dir"])
    one_line_error(r, "holds a 'rollout' model")
    r = bot_cli("train", "--strategy", "dsc", "--data", str(work["few"]), "--out", str(work["dir"] / "x.pt"),
            *TINY_SETS, cwd=work["dir"])
    one_line_error(r, "too little data")
    r = bot_cli("train", "--strategy", "dsc", "--data", str(work["small"]), "--set", "strategy.params.window=2",
            *TINY_SETS[:0], "--set", "strategy.params.bogus=1", cwd=work["dir"])
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_vol_labels_are_recorded_and_evaluate_scores_by_them(bot_cli, work: dict[str, Path]) -> None:
    out = work["dir"] / "vol.pt"
    r = bot_cli("train", "--strategy", "dsc", "--data", str(work["small"]), "--out", str(out), "--json", *TINY_SETS,
                "--set", "strategy.params.label.mode=vol", "--set", "strategy.params.label.k=0.7", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    labels = json.loads(r.stdout)["labels"]
    assert labels["mode"] == "vol" and labels["k"] == 0.7 and labels["sigma_window"] == 24
    assert "threshold" not in labels and labels["vol_baseline"]["window"] == 24
    r = bot_cli("evaluate", "--checkpoint", str(out), "--data", str(work["eth"]), "--json",
                "--set", "market.symbol=ETHUSDT", "--allow-other-market", cwd=work["dir"])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["sample"] == "out-of-sample" and res["notes"][0].startswith("other market: ")
    ev = res["metrics"]["evaluated"]
    eth = load_candles(work["eth"], symbol="ETHUSDT", timeframe="1h", bar_ms=3_600_000)
    ends = np.arange(int(np.searchsorted(eth.time, ev["from"])), int(np.searchsorted(eth.time, ev["to"])) + 1)
    vol = make_labels(eth.close, 2, 0.0, 0.001, LabelRule(mode="vol", k=0.7))[ends]
    assert ev["class_balance"] == class_balance(vol)["shares"]  # the checkpoint's rule, not the default band
    assert ev["class_balance"] != class_balance(make_labels(eth.close, 2, 0.0, 0.001)[ends])["shares"]
    r = bot_cli("train", "--strategy", "dsc", "--data", str(work["small"]), *TINY_SETS,
                "--set", "strategy.params.label.mode=sideways", cwd=work["dir"])
    one_line_error(r, "strategy.params.label.mode")
