"""Database engines and migrations.

SQLite runs in WAL mode with foreign keys on; PostgreSQL through psycopg 3. Alembic migrations
are applied automatically whenever the journal is opened, and by ``bot db upgrade``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

try:
    import fcntl
except ImportError:  # not on Windows: concurrent first opens of one SQLite file are not serialised
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from bot.errors import StorageError
from bot.redact import hide_password
from storage.schema import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"


def safe_url(url: str) -> str:
    """The URL with any password hidden (also when it does not parse), for messages and logs."""
    return hide_password(url)


def _normalise(url: str) -> str:
    # "postgresql://" would pick psycopg2; this project ships psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = _normalise(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StorageError(f"bad database URL {safe_url(url)!r}: expected sqlite:///file.db or "
                           "postgresql+psycopg://user@host/db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=10000")  # first: the pragmas below wait for a busy file too
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    elif backend == "postgresql":
        try:
            engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot use database {safe_url(url)}: {exc}") from None
    else:
        raise StorageError(f"unsupported database {backend!r}: use sqlite or postgresql")
    try:
        # A new file turns to WAL on its first connection, which needs the file to itself: beside
        # another process's migration of it that fails at once ("database is locked", busy
        # timeout or not), so the first connection waits for the migration lock too.
        with _sqlite_file_lock(engine), engine.connect():
            pass
    except (OperationalError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else ""
        raise StorageError(f"cannot connect to database {safe_url(url)}: {reason}") from None
    return engine


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415 - slow import, needed only here

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # configparser interpolates "%": a URL-encoded password or query (%40, %3D) must be escaped.
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


#: Any number: the key of the advisory lock that lets one process at a time migrate a PostgreSQL journal.
MIGRATION_LOCK = 7_301_948_112


def upgrade(engine: Engine) -> str:
    """Apply every pending migration; return the head revision.

    On PostgreSQL the migration holds a transaction-level advisory lock, and on a SQLite file an
    exclusive lock on ``<file>.migrate.lock`` beside it, so bots that open a new journal at the
    same moment migrate it one after the other (the others then find it at head)."""
    from alembic import command  # noqa: PLC0415 - slow import, needed only here

    cfg = alembic_config(engine)
    try:
        with _sqlite_file_lock(engine), engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            _move_version_row(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StorageError(f"database migration failed on {safe_url(str(engine.url))}: "
                           f"{str(exc).splitlines()[0]}") from None
    with engine.connect() as conn:
        row = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").first()
    return row[0] if row else ""


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Hold an exclusive ``flock`` beside a SQLite journal file (SQLite's own locking does not
    cover a migration's DDL: pysqlite runs it outside a transaction)."""
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:" or fcntl is None:
        yield
        return
    with open(f"{Path(db).expanduser()}.migrate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _move_version_row(conn: Connection) -> None:
    """A journal made before ``journal_version`` kept its head (0001, 0002, ...) in
    ``alembic_version``: move it over, leaving that table to Optuna's storage."""
    names = set(inspect(conn).get_table_names())
    if "alembic_version" not in names or VERSION_TABLE in names:
        return
    rows = [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    if len(rows) != 1 or not re.fullmatch(r"\d{4}", rows[0]):
        return  # another tool's record (Optuna's own), not the journal's
    conn.exec_driver_sql(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    conn.exec_driver_sql(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{rows[0]}')")
    conn.exec_driver_sql("DROP TABLE alembic_version")


def open_database(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


#: This process's journal engine per URL: the jobs of a pool or Ray worker (bot/jobs.py) open
#: and migrate a journal once, not once per job.
_OPEN: dict[str, Engine] = {}


def database_for(url: str, engine: Engine | None = None) -> Engine:
    """The journal at ``url`` opened once per process (``engine``: the one this process has already)."""
    if engine is not None:
        return _OPEN.setdefault(url, engine)
    if url not in _OPEN:
        _OPEN[url] = open_database(url)
    return _OPEN[url]


def has_journal(engine: Engine) -> bool:
    return inspect(engine).has_table("runs")
