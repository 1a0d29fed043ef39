"""Alembic environment: the connection is handed in by :meth:`fundalloc.store.Store.migrate`."""

from alembic import context

from fundalloc.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through `alembic` on the command line
    from sqlalchemy import create_engine
    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
