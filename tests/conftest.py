"""Shared fixtures: real data location, a fresh SQLite journal, the PostgreSQL test server, the CLI in-process."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.webhook import Receiver

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
# rich sizes tables to the terminal; a fixed width makes every run (a terminal, CI, an xdist worker
# with no terminal) print the same tables, in-process and in the bots the tests start.
os.environ["COLUMNS"] = "160"
os.environ.pop("LINES", None)
PG_SERVER = os.environ.get("BOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Each test process (an xdist worker, or a plain run) journals to its own schema of that database, so
# parallel workers never see each other's runs; made in pytest_configure, dropped in pytest_unconfigure.
_WORKER_SCHEMA = f"w_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


def _in_schema(schema: str) -> str:
    return make_url(PG_SERVER).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


PG_URL = _in_schema(_WORKER_SCHEMA)


def _admin(sql: str) -> None:
    admin = create_engine(PG_SERVER)
    try:
        with admin.begin() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


def pytest_configure(config: pytest.Config) -> None:
    try:
        _admin(f"CREATE SCHEMA IF NOT EXISTS {_WORKER_SCHEMA}")
    except Exception as exc:  # noqa: BLE001 - a test that needs PostgreSQL then fails with its own error
        print(f"PostgreSQL test server not usable ({type(exc).__name__}): its tests will fail", file=sys.stderr)


def pytest_unconfigure(config: pytest.Config) -> None:
    try:
        _admin(f"DROP SCHEMA IF EXISTS {_WORKER_SCHEMA} CASCADE")
    except Exception:  # noqa: BLE001, S110 - nothing to clean up on a server that is not there
        pass


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
    admin = create_engine(PG_SERVER)
    made: list[str] = []

    def make() -> str:
        schema = f"t_{secrets.token_hex(6)}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        made.append(schema)
        return _in_schema(schema)

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


#: Files whose bots trade a simulator's real-time clock (bars of a fraction of a second) and kill
#: or restart processes: they run in two queues, one file at a time each, so that two of them at
#: most share the machine; every other file is a group of its own (``--dist loadgroup``: a file
#: stays on one worker, its module fixtures computed once).
REAL_TIME_FILES = sorted([
    "test_live_catch_up.py", "test_live_chaos.py", "test_live_crash.py", "test_live_faults.py",
    "test_live_funding.py", "test_live_markets.py", "test_live_parity.py", "test_live_partial.py",
    "test_live_protection.py", "test_live_reconcile.py", "test_live_safety.py", "test_live_spot.py",
    "test_order_logs.py", "test_paper_faults.py", "test_paper_restart.py", "test_retrain.py",
    "test_startup_signals.py",
])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.name
        group = f"real-time-{REAL_TIME_FILES.index(name) % 2}" if name in REAL_TIME_FILES else name
        item.add_marker(pytest.mark.xdist_group(group))
