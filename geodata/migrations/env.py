"""Alembic environment: runs migrations on the connection Rutas hands over."""

from alembic import context

from geodata.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
