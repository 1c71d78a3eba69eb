"""The compose file's services, run as written, without Docker (no engine runs here): the `bot`
service's command and environment (from .env.example) start a paper run that journals to the
PostgreSQL its BOT_STORAGE__URL names, its healthcheck command passes, and the `dashboard`
service's command serves that journal. Only what a container changes is changed: the host
name `postgres` is this machine's server, `/data` is the shared data folder, the fixed ports are
free ones (this machine may run something on 9100 or 8080)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage import queries as q
from storage.db import open_database
from tests.conftest import DATA_DIR, PG_URL
from tests.test_docker import ENV_EXAMPLE, SERVICES, interpolate

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_here(value: str, ports: dict[str, str]) -> str:
    value = interpolate(value, ENV_EXAMPLE).replace("@postgres:5432/", "@127.0.0.1:5432/")
    value = value.replace("/data/", f"{DATA_DIR}/")
    for fixed, free in ports.items():
        value = value.replace(fixed, free)
    return value


def service(name: str, ports: dict[str, str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(command, environment, healthcheck command) of a compose service, as run here."""
    svc = SERVICES[name]
    env = {k: as_here(str(v), ports) for k, v in (svc.get("environment") or {}).items()}
    env["BOT_DATA_DIR"] = str(DATA_DIR)
    health = [as_here(a, ports) for a in svc["healthcheck"]["test"][1:]]
    return [as_here(a, ports) for a in svc["command"]], env, health


def compose_database(url: str) -> None:
    """The role and database the compose URL names, on this machine's server (trust auth)."""
    u = make_url(url)
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": u.username}).scalar():
            conn.execute(text(f'CREATE ROLE "{u.username}" LOGIN'))
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": u.database}).scalar():
            conn.execute(text(f'CREATE DATABASE "{u.database}" OWNER "{u.username}"'))
    admin.dispose()


def healthy(cmd: list[str], env: dict[str, str], proc: subprocess.Popen[Any], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode != 0:
        assert proc.poll() is None, f"{what} exited: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{what}'s healthcheck never passed"
        time.sleep(1)


def test_compose_services_run_as_written_journal_to_their_postgresql(tmp_path: Path) -> None:
    ports = {"9100": str(free_port()), "8080": str(free_port())}
    command, env, health = service("bot", ports)
    url = env["BOT_STORAGE__URL"]
    assert make_url(url).host == "127.0.0.1" and make_url(url).drivername == "postgresql+psycopg"
    compose_database(url)
    base = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")} | {"BOT_LOGGING__LEVEL": "warning"}
    cmd = [sys.executable, "-m", "bot", *command]
    assert health[0] == "python"
    health[0] = sys.executable
    db = open_database(url)
    before = {r["id"] for r in q.list_runs(db, limit=1000)}
    bot = subprocess.Popen(cmd, cwd=ROOT, env=base | env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    try:
        healthy(health, base | env, bot, "the bot")
        deadline = time.monotonic() + 120
        while True:  # its run, in the compose PostgreSQL
            new = [r for r in q.list_runs(db, limit=1000) if r["id"] not in before]
            if new and new[0]["bars"] >= 3:
                break
            assert time.monotonic() < deadline, "no run with bars in the compose database"
            time.sleep(0.5)
        [run] = new
        assert run["mode"] == "paper" and run["status"] == "running"
        assert run["data_source"].endswith("bybit_BTCUSDT_1h.csv.gz")
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{ports['9100']}/metrics", timeout=10).read().decode()
        assert f'run_id="{run["id"]}"' in scrape

        # The dashboard service: its command over the same journal, its healthcheck, its answer.
        dcmd, denv, dhealth = service("dashboard", ports)
        dhealth[0] = sys.executable
        dash = subprocess.Popen([sys.executable, "-m", "bot", *dcmd], cwd=ROOT, env=base | denv,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            healthy(dhealth, base | denv, dash, "the dashboard")
            req = urllib.request.Request(f"http://127.0.0.1:{ports['8080']}/api/runs",
                                         headers={"Authorization": f"Bearer {denv['BOT_API_TOKEN']}"})
            listed = urllib.request.urlopen(req, timeout=10).read().decode()
            assert run["id"] in listed and ENV_EXAMPLE["POSTGRES_PASSWORD"] not in listed
        finally:
            dash.send_signal(signal.SIGTERM)
            dash.communicate(timeout=60)
    finally:
        bot.send_signal(signal.SIGTERM)
        _, err = bot.communicate(timeout=120)
    assert bot.returncode == 0, err[-2000:]  # SIGTERM stops a paper run cleanly, resumable
    assert q.resolve_run(db, run["id"])["status"] == "stopped"
    assert ENV_EXAMPLE["POSTGRES_PASSWORD"] not in err
    db.dispose()
