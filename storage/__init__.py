"""The journal: SQLAlchemy schema, Alembic migrations, batched writes and queries."""
