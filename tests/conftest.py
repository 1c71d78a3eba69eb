"""Shared fixtures: real data location, a fresh SQLite journal, the PostgreSQL test server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webhook import Receiver

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
PG_URL = os.environ.get("BOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"real market data not found at {DATA_DIR} (set BOT_DATA_DIR)")
    return DATA_DIR


@pytest.fixture
def btc_1h(data_dir: Path) -> Path:
    return data_dir / "bybit_BTCUSDT_1h.csv.gz"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()  # a webhook on 127.0.0.1 (tests/webhook.py)
    yield r
    r.close()
