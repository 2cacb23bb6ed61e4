"""Alembic environment: runs against the connection handed in by `azdev_ica.db.migrate`."""

from __future__ import annotations

from alembic import context

from azdev_ica.db.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` used by hand
    raise RuntimeError("run migrations through `ica db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode copies tables instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
