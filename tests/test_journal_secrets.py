"""A database password given in ``storage.url`` (``--db`` or ``BOT_STORAGE__URL``) never reaches the
journal, the logs or an error message; a resume still opens the journal it was told to."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from bot.config import config_to_dict, load_config
from bot.redact import hide_password, mask, mask_text
from bot.resume import plan, start_entry
from storage import schema as s
from storage.db import open_database
from storage.journal import Journal
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[1]


def _pg_with_password() -> tuple[str, str]:
    """The test server's URL carrying a password, and that password (the server's own if the URL
    has one; else a fresh one, which the test server's trust authentication accepts)."""
    url = make_url(PG_URL)
    password = url.password or f"pw-{secrets.token_hex(8)}"
    return url.set(password=password).render_as_string(hide_password=False), str(password)


def _bot(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_config_to_dict_masks_url_passwords(tmp_path: Path) -> None:
    cfg = load_config(None, [], environ={
        "BOT_STORAGE__URL": "postgresql+psycopg://bot:hunter2@db:5432/bot?sslpassword=k3y&application_name=bot"})
    stored = config_to_dict(cfg)
    assert stored["storage"]["url"] == "postgresql+psycopg://bot:***@db:5432/bot?sslpassword=***&application_name=bot"
    assert "hunter2" not in json.dumps(stored) and "k3y" not in json.dumps(stored)
    assert cfg.storage.url.startswith("postgresql+psycopg://bot:hunter2@")  # the run itself still connects with it
    plain = f"sqlite:///{tmp_path / 'j.db'}"
    assert config_to_dict(load_config(None, [], {"storage.url": plain}, environ={}))["storage"]["url"] == plain
    assert hide_password("postgresql://u:p@ss:w0rd@h:notaport/db") == "postgresql://u:***@h:notaport/db"


def test_masking_free_text_and_trees() -> None:
    """An error text quoting a URL, and a JSON tree (the API's answers, the journal's config)."""
    said = mask_text("cannot connect to 'postgresql://u:p@ss:w0rd@h/db?password=x9': refused")
    assert said == "cannot connect to 'postgresql://u:***@h/db?password=***': refused"
    tree = mask({"storage": {"url": "postgresql://u:pw1@h/db"}, "params": {"api_key": "K", "fast": 3},
                 "notes": ["see https://example.org/x"]})
    assert tree == {"storage": {"url": "postgresql://u:***@h/db"}, "params": {"api_key": "***", "fast": 3},
                    "notes": ["see https://example.org/x"]}


def test_no_password_in_the_journal_or_the_logs(btc_1h: Path, tmp_path: Path) -> None:
    url, password = _pg_with_password()
    env = {"BOT_STORAGE__URL": url, "BOT_LOGGING__LEVEL": "debug", "BOT_LOGGING__FORMAT": "json"}
    out = []
    r = _bot("run", "--mode", "paper", "--feed", "replay", "--data", str(btc_1h), "--from", "2024-01-01",
             "--to", "2024-01-08", "--speed", "0", "--json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out.append(r.stdout + r.stderr)
    run_id = json.loads(r.stdout)["run_id"]
    assert '"event"' in r.stderr  # the run did log (JSON lines at debug level), without the password
    for args in (["journal", "runs", "--format", "json"], ["journal", "events", "--run", run_id, "--format", "json"],
                 ["journal", "summary", "--run", run_id, "--format", "json"], ["db", "upgrade"]):
        r = _bot(*args, env=env, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        out.append(r.stdout + r.stderr)
    assert all(password not in text for text in out)

    db = open_database(url)
    try:
        with db.connect() as conn:
            run = conn.execute(select(s.runs).where(s.runs.c.id == run_id)).one()._mapping
            rows = [dict(run)]
            for table in ("decisions", "orders", "fills", "trades", "equity_blocks", "events"):
                t = s.metadata.tables[table]
                rows += [dict(x._mapping) for x in conn.execute(select(t).where(t.c.run_id == run_id))]
    finally:
        db.dispose()
    assert len(rows) > 100  # every table of the run was read, not an empty one
    assert run["config"]["storage"]["url"] == hide_password(url) and ":***@" in run["config"]["storage"]["url"]
    assert password not in json.dumps(rows, default=str)


def test_no_password_in_database_errors(tmp_path: Path) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    for url in (f"postgresql+psycopg://postgres:{password}@127.0.0.1:1/test",  # nothing listens there
                f"postgresql+psycopg://postgres:{password}@127.0.0.1:port/test"):  # not a URL sqlalchemy parses
        r = _bot("journal", "runs", env={"BOT_STORAGE__URL": url}, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "postgres:***@127.0.0.1" in r.stderr
        assert password not in r.stdout + r.stderr


def test_a_resume_opens_the_current_storage_url_not_the_masked_copy() -> None:
    url, password = _pg_with_password()
    cfg = load_config(None, ["strategy.params.fast=4"], environ={"BOT_STORAGE__URL": url})
    db = open_database(url)
    try:
        first = 1_704_067_200_000
        journal = Journal.start_run(db, mode="paper", strategy="sma", symbol="BTCUSDT", timeframe="1h",
                                    category="linear", config=config_to_dict(cfg), initial_cash=10_000,
                                    data_source=None, start_event=(first, "paper_start", start_entry([], first)))
        try:
            resumed = plan(db, cfg, journal.run_id, "paper")
            with db.connect() as conn:
                stored = conn.execute(select(s.runs.c.config).where(s.runs.c.id == journal.run_id)).scalar_one()
        finally:  # an unfinished paper run left in the shared test database would wait to be resumed
            with db.begin() as conn:
                conn.execute(delete(s.runs).where(s.runs.c.id == journal.run_id))
    finally:
        db.dispose()
    assert password not in json.dumps(stored)
    assert resumed.cfg.storage.url == url  # the invocation's URL, password included
    assert resumed.cfg.strategy.params == {"fast": 4}  # the run's own sections come from the journal
