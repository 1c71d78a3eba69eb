"""decisions.explanation: the codec's bytes in a binary column instead of JSON text

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:00:00.000000

The column held JSON: a plain tree, ``{"~1": tree}`` or a base85 string of compressed bytes
(storage/explain_legacy.py). It becomes BLOB (SQLite) / bytea (PostgreSQL) holding
storage/explain_codec.py's bytes: no base85 (a quarter of the text), 8-bit vectors with the peak
exact, a dictionary of today's explanation shapes. Every row is read with the old decoder and
written with the new encoder, a few thousand rows per statement; a row's tree is unchanged except
for the new quantisation. Downgrade writes plain JSON back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from storage import explain_codec, explain_legacy

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BATCH = 2000


def _rows(conn: sa.Connection, table: sa.TableClause) -> Iterator[list[sa.Row[Any]]]:
    """The decisions' (id, explanation) in id order, BATCH rows at a time."""
    last = ""
    while True:
        rows = conn.execute(sa.select(table.c.id, table.c.explanation.label("old")).where(table.c.id > last)
                            .order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _convert(old_type: sa.types.TypeEngine[Any], new_type: sa.types.TypeEngine[Any],
             recode: Callable[[Any], Any]) -> None:
    op.add_column("decisions", sa.Column("explanation_new", new_type))
    conn = op.get_bind()
    table = sa.table("decisions", sa.column("id", sa.String), sa.column("explanation", old_type),
                     sa.column("explanation_new", new_type))
    write = sa.update(table).where(table.c.id == sa.bindparam("key")).values(explanation_new=sa.bindparam("value"))
    for rows in _rows(conn, table):
        conn.execute(write, [{"key": r.id, "value": recode(r.old)} for r in rows])
    op.execute("ALTER TABLE decisions DROP COLUMN explanation")  # SQLite >= 3.35 and PostgreSQL
    op.execute("ALTER TABLE decisions RENAME COLUMN explanation_new TO explanation")


def upgrade() -> None:
    _convert(sa.JSON(), sa.LargeBinary(), lambda old: explain_codec.encode(explain_legacy.decode(old)))


def downgrade() -> None:
    _convert(sa.LargeBinary(), sa.JSON(), explain_codec.decode)
