"""Alembic environment for the store.

Two ways in:
- programmatic (`store.engine.migrate`): the caller passes an open connection in
  `config.attributes["connection"]` and owns its transaction;
- command line: `alembic -c store/alembic.ini [-x url=...] upgrade head`, with the URL from
  `-x url=` or else `DATABASE_URL`.
"""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from store.engine import make_engine, migration_options, normalize_url

config = context.config

if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "no database URL: pass `-x url=sqlite:///path/to.db` or set DATABASE_URL"
        )
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **migration_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """`--sql`: print the DDL instead of running it."""
    url = normalize_url(_url())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **migration_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
