"""Shared fixtures: real data location, a fresh SQLite journal, the PostgreSQL test server, the CLI in-process."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

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


@pytest.fixture
def pg_schema_url() -> Iterator[Callable[[], str]]:
    """Makes fresh schemas in the shared PostgreSQL ``test`` database and returns a URL whose
    search_path is one of them (so a test sees only its own journal); dropped afterwards. In CI a
    PostgreSQL that cannot be reached fails the test, never skips it."""
    admin = create_engine(PG_URL)
    made: list[str] = []

    def make() -> str:
        schema = f"t_{secrets.token_hex(6)}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        made.append(schema)
        return f"{PG_URL}?options=-csearch_path%3D{schema}"

    yield make
    with admin.begin() as conn:
        for schema in made:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def bot_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run the real console entry point ``bot.cli.main`` in-process (no torch re-import per call)."""
    from bot.cli import main

    def run(*args: str, cwd: Path) -> CliResult:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["bot", *args])
        monkeypatch.delenv("BOT_DEBUG", raising=False)
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)
    return run
