"""Config from the environment: ``BOT_<SECTION>__<KEY>`` variables, between config.yaml and --set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from storage import queries as q
from storage.db import open_database

ROOT = Path(__file__).resolve().parents[1]


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_precedence_defaults_yaml_environment_set(tmp_path: Path) -> None:
    cfg_file = _yaml(tmp_path, "risk:\n  max_drawdown: 0.1\n  cooldown_bars: 3\n")
    env = {"BOT_RISK__MAX_DRAWDOWN": "0.2", "BOT_BROKER__FEE_RATE": "0.002"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    defaults = load_config(empty, environ={})
    assert defaults.risk.max_drawdown == 0.0 and defaults.broker.fee_rate == 0.001
    from_yaml = load_config(cfg_file, environ={})
    assert from_yaml.risk.max_drawdown == 0.1 and from_yaml.risk.cooldown_bars == 3
    from_env = load_config(cfg_file, environ=env)
    assert from_env.risk.max_drawdown == 0.2  # environment over config.yaml
    assert from_env.risk.cooldown_bars == 3  # what the environment leaves alone stays the file's
    assert from_env.broker.fee_rate == 0.002  # environment over the defaults
    from_set = load_config(cfg_file, ["risk.max_drawdown=0.3"], environ=env)
    assert from_set.risk.max_drawdown == 0.3 and from_set.broker.fee_rate == 0.002  # --set over environment


def test_command_line_flags_win_over_the_environment(tmp_path: Path) -> None:
    env = {"BOT_STORAGE__URL": f"sqlite:///{tmp_path / 'env.db'}", "BOT_STRATEGY__NAME": "dsc"}
    cfg = load_config(None, [], {"storage.url": f"sqlite:///{tmp_path / 'flag.db'}", "strategy.name": "sma"},
                      environ=env)
    assert cfg.storage.url.endswith("flag.db") and cfg.strategy.name == "sma"
    assert load_config(None, [], environ=env).storage.url.endswith("env.db")


def test_one_market_shorthand_and_typed_values() -> None:
    cfg = load_config(None, environ={
        "BOT_MARKET__SYMBOL": "ethusdt", "BOT_MARKET__CATEGORY": "spot", "BOT_STRATEGY__NAME": "sma",
        "BOT_STRATEGY__PARAMS__FAST": "5", "BOT_STRATEGY__PARAMS__ALLOW_SHORT": "false",
        "BOT_STRATEGY__CHECKPOINT": "null", "BOT_EXCHANGE__TESTNET": "false", "BOT_EXCHANGE__TIMEOUT_S": "2.5",
    })
    assert cfg.market.symbol == "ETHUSDT" and cfg.market.category == "spot"
    assert cfg.strategy.params == {"fast": 5, "allow_short": False}  # YAML values, as --set parses them
    assert cfg.strategy.checkpoint is None and cfg.exchange.testnet is False and cfg.exchange.timeout_s == 2.5


def test_names_are_case_insensitive() -> None:
    cfg = load_config(None, environ={"bot_risk__Max_Drawdown": "0.25", "BOT_Logging__LEVEL": "error"})
    assert cfg.risk.max_drawdown == 0.25 and cfg.logging.level == "error"


def test_markets_list_by_index_and_one_market_keys(tmp_path: Path) -> None:
    two = _yaml(tmp_path, "markets:\n  - symbol: BTCUSDT\n  - symbol: ETHUSDT\n    allocation: 0.4\n")
    cfg = load_config(two, environ={"BOT_MARKETS__1__STRATEGY__PARAMS__SLOW": "12", "BOT_MARKETS__0__TIMEFRAME": "4h"})
    assert cfg.markets[1].strategy.params == {"slow": 12} and cfg.markets[0].timeframe == "4h"
    with pytest.raises(ConfigError) as exc:
        load_config(two, environ={"BOT_MARKETS__2__SYMBOL": "SOLUSDT"})
    assert "BOT_MARKETS__2__SYMBOL" in str(exc.value) and "not an index" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(two, environ={"BOT_STRATEGY__NAME": "dsc"})
    assert str(exc.value) == ("environment variable BOT_STRATEGY__NAME sets one market; this config lists 2 "
                              "markets: set it on each, e.g. BOT_MARKETS__0__STRATEGY__NAME")
    one = _yaml(tmp_path, "markets:\n  - symbol: BTCUSDT\n")
    assert load_config(one, environ={"BOT_MARKET__SYMBOL": "SOLUSDT"}).market.symbol == "SOLUSDT"


def test_other_bot_variables_are_not_config() -> None:
    env = {"BOT_DEBUG": "1", "BOT_DATA_DIR": "/nowhere", "BOT_SIGNAL_AT": "run_begun", "BOT_ALERT_URLS": "x y",
           "BOT_API_TOKEN": "t0ken", "BOT_TEST_PG_URL": "postgresql://x", "BOTANY__X": "1", "XBOT_RISK__X": "1"}
    assert load_config(None, environ=env) == load_config(None, environ={})


@pytest.mark.parametrize(("name", "message"), [
    ("BOT_BRKR__FEE_RATE", "environment variable BOT_BRKR__FEE_RATE: unknown config section 'brkr'"),
    ("BOT_RISK__MAX_DRAWDWN", "environment variable BOT_RISK__MAX_DRAWDWN: unknown config key 'risk.max_drawdwn'"),
    ("BOT_RISK__MAX_DRAWDOWN__X", "unknown config key 'risk.max_drawdown.x'"),
    ("BOT_MARKET__COLOUR", "environment variable BOT_MARKET__COLOUR: unknown config key 'market.colour'"),
    ("BOT_MARKETS__FIRST__SYMBOL", "unknown config key 'markets.first'"),
    ("BOT_RISK____X", "environment variable BOT_RISK____X: empty key"),
])
def test_unknown_names_are_refused_by_name(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, environ={name: "0.1"})
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"BOT_RISK__MAX_DRAWDOWN": "2"}, "risk.max_drawdown: Input should be less than 1 (from BOT_RISK__MAX_DRAWDOWN)"),
    ({"BOT_MARKET__TIMEFRAME": "7m"}, "unknown timeframe '7m'"),
    ({"BOT_BROKER__FEE_RATE": "abc"}, "(from BOT_BROKER__FEE_RATE)"),
])
def test_bad_values_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, environ=env)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_bad_value_replaced_on_the_command_line_is_not_blamed() -> None:
    cfg = load_config(None, ["risk.max_drawdown=0.5"], environ={"BOT_RISK__MAX_DRAWDOWN": "2"})
    assert cfg.risk.max_drawdown == 0.5
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["risk.max_drawdown=3"], environ={"BOT_RISK__MAX_DRAWDOWN": "0.1"})
    assert "BOT_RISK__MAX_DRAWDOWN" not in str(exc.value)


def _bot(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_the_cli_reads_the_environment(btc_1h: Path, tmp_path: Path) -> None:
    db = tmp_path / "from_env.db"
    env = {"BOT_STORAGE__URL": f"sqlite:///{db}", "BOT_BROKER__INITIAL_CASH": "5000",
           "BOT_STRATEGY__PARAMS__FAST": "5", "BOT_LOGGING__LEVEL": "error"}
    r = _bot("backtest", "--data", str(btc_1h), "--to", "2024-01-15", "--json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert db.exists() and summary["candles"] > 0
    r = _bot("journal", "runs", "--format", "json", env=env, cwd=tmp_path)  # the journal found from the env too
    assert r.returncode == 0, r.stderr
    assert [run["id"] for run in json.loads(r.stdout)] == [summary["run_id"]]
    (run,) = q.list_runs(open_database(f"sqlite:///{db}"), 5)
    assert float(run["initial_cash"]) == 5000 and run["config"]["markets"][0]["strategy"]["params"] == {"fast": 5}


def test_the_cli_refuses_an_unknown_variable_in_one_line(tmp_path: Path) -> None:
    r = _bot("journal", "runs", env={"BOT_STORAGE__URI": f"sqlite:///{tmp_path / 'x.db'}"}, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: environment variable BOT_STORAGE__URI: unknown config key 'storage.uri'"
    assert not (tmp_path / "x.db").exists()
