"""Configuration: typed, frozen, unknown keys refused, --set overrides, secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from bot.secrets import Secrets

ROOT = Path(__file__).resolve().parents[1]


def test_committed_default_config_is_valid() -> None:
    cfg = load_config(ROOT / "config.yaml")
    assert cfg.market.symbol == "BTCUSDT" and cfg.strategy.name == "sma"
    assert cfg.broker.fee_rate == 0.001 and cfg.broker.slippage_bps == 0


def test_set_overrides_are_typed() -> None:
    cfg = load_config(None, ["risk.max_drawdown=0.2", "strategy.params.fast=5", "market.category=spot",
                             "exchange.testnet=false"])
    assert cfg.risk.max_drawdown == 0.2
    assert cfg.strategy.params["fast"] == 5
    assert cfg.market.category == "spot" and cfg.exchange.testnet is False


def test_config_is_frozen() -> None:
    cfg = load_config(None)
    with pytest.raises(Exception):
        cfg.broker.fee_rate = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(("overrides", "message"), [
    (["market.colour=red"], "market.colour: unknown key"),
    (["brokr.fee_rate=0.1"], "brokr: unknown key"),
    (["broker.fee_rate=abc"], "broker.fee_rate"),
    (["broker.fee_rate=-1"], "broker.fee_rate"),
    (["market.timeframe=7m"], "unknown timeframe"),
    (["market.category=futures"], "market.category"),
    (["noequals"], "expected dotted.key=value"),
    (["market.category=spot", "risk.max_exposure=2"], "spot markets allow at most 1"),
])
def test_bad_values_are_one_clear_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_malformed_yaml(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("market:\n  symbol: [BTC\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_secrets_only_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BYBIT_API_KEY", "k-123")
    monkeypatch.setenv("BYBIT_API_SECRET", "s-456")
    sec = Secrets()
    assert sec.api_key is not None and sec.api_key.get_secret_value() == "k-123"
    assert "s-456" not in repr(sec) and "s-456" not in str(sec)
    # config.yaml has no place for them: an api_key key there is an unknown key.
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["exchange.api_key=abc"])
