"""Live safety: no keys -> refused; mainnet without --confirm-live -> refused; wrong keys end in
one clear line that carries neither the key nor the secret (Bybit's 10004 reply echoes the
signed string, key included); the kill switch flattens the real position on the venue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot import app as core
from bot.errors import ConfigError, ExchangeFatalError
from bot.live import RunOptions, credentials
from bot.timeutil import ms_to_iso
from broker.bybit import BybitHttp
from broker.bybit.errors import scrub
from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from storage import queries as q
from tests.live_helpers import KEY, SECRET, check_consistency, live_cfg, modules, set_keys, sim_cfg

H = 3_600_000


def test_cli_refuses_mainnet_without_confirmation_and_missing_keys(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": SECRET}
    r = subprocess.run([sys.executable, "-m", "bot", "run", "--mode", "live", "--set", "exchange.testnet=false"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--confirm-live" in r.stderr and "Traceback" not in r.stderr
    assert SECRET not in r.stderr + r.stdout


def test_keys_are_required_and_mainnet_needs_confirmation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("BYBIT_API_KEY", raising=False)
    monkeypatch.delenv("BYBIT_API_SECRET", raising=False)
    cfg = live_cfg("http://127.0.0.1:1", "ws://127.0.0.1:1", "sqlite://")
    with pytest.raises(ConfigError, match="BYBIT_API_KEY"):
        credentials(cfg, confirm_live=False)
    set_keys(monkeypatch)
    main = cfg.model_copy(update={"exchange": cfg.exchange.model_copy(update={"testnet": False, "rest_url": None})})
    with pytest.raises(ConfigError, match="--confirm-live"):
        credentials(main, confirm_live=False)
    assert credentials(main, confirm_live=True) == (KEY, SECRET)
    assert credentials(cfg, confirm_live=False) == (KEY, SECRET)  # testnet / local simulator


def test_scrub_removes_keys_signatures_and_signed_strings() -> None:
    text = (f"error sign! origin_string[1700000000000{KEY}5000accountType=UNIFIED] "
            f"headers {{'X-BAPI-API-KEY': '{KEY}', 'X-BAPI-SIGN': '{'ab' * 32}'}} secret={SECRET}")
    out = scrub(text, [KEY, SECRET])
    assert KEY not in out and SECRET not in out and "ab" * 32 not in out and "origin_string[***]" in out


async def test_wrong_secret_fails_cleanly_without_leaking(btc_1h: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    async with SimServer(sim_cfg(btc_1h, 200.0, history=300), modules()) as sim:
        http = BybitHttp(KEY, "not-the-secret", rest_url=sim.rest_url, timeout_s=2.0)
        with pytest.raises(ExchangeFatalError) as e:
            await http.check_keys()
        http.close()
        msg = str(e.value)
        assert e.value.code == 10004 and "\n" not in msg
        assert KEY not in msg and "not-the-secret" not in msg and "BYBIT_API_KEY" in msg
    out = capsys.readouterr()
    assert KEY not in out.out + out.err and "not-the-secret" not in out.out + out.err


async def test_kill_switch_flattens_on_the_venue(btc_1h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    set_keys(monkeypatch)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    async with SimServer(sim_cfg(btc_1h, 250.0, history=400), modules()) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, "risk.max_drawdown=0.002", "risk.kill_action=flatten",
                       "strategy.params.fast=2", "strategy.params.slow=5")
        end = (sim.state.now_ms() // H + 30) * H
        summary = await core.live(cfg, date_to=ms_to_iso(end), options=RunOptions(stream_check_s=0.1))
        acct = account_of(sim.state)
        db = core.open_journal_db(db_url)
        check_consistency(db, summary["run_id"], acct)
        book = acct.books.get("BTCUSDT")
    events = q.events(db, summary["run_id"])
    kills = [e for e in events if e["kind"] == "kill_switch"]
    assert len(kills) == 1 and kills[0]["payload"]["action"] == "flatten"
    assert book is not None and book.size == 0  # flat on the exchange, and nothing traded since
    frozen_after = [d for d in q.decisions(db, summary["run_id"]) if d["bar_time"] > kills[0]["time"]]
    assert all(d["target"] in (0.0, None) or d["status"] != "order" for d in frozen_after)
    # Nothing secret reached the journal or the logs.
    blob = json.dumps([events, q.orders(db, summary["run_id"])], default=str)
    out = capsys.readouterr()
    for s in (KEY, SECRET):
        assert s not in blob and s not in out.out + out.err
