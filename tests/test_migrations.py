"""The migrated schema is exactly what the models declare; SQLite runs with its pragmas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from backend.db import Database
from backend.models import TaskTag


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": True},
    )
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrations_produce_exactly_the_models_schema(database: Database) -> None:
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)

    assert differences == []


async def test_migrations_create_every_model_table(database: Database) -> None:
    async with database.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(sync.dialect.get_table_names(sync)))

    assert set(SQLModel.metadata.tables) | {"alembic_version"} == tables


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    # Its own SQLite file: the pragmas are a SQLite matter whichever database the suite uses.
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        await _check_pragmas(database)
    finally:
        await database.dispose()


async def _check_pragmas(database: Database) -> None:
    for write in (False, True):
        async with database.session_scope(write=write) as session:
            journal: Any = (await session.execute(text("PRAGMA journal_mode"))).scalar_one()
            foreign_keys: Any = (await session.execute(text("PRAGMA foreign_keys"))).scalar_one()
            busy: Any = (await session.execute(text("PRAGMA busy_timeout"))).scalar_one()

        assert str(journal).lower() == "wal"
        assert foreign_keys == 1
        assert busy > 0


async def add_orphan_tag(database: Database) -> None:
    async with database.session_scope(write=True) as session:
        session.add(TaskTag(task_id=987654, tag="orphan"))


async def test_a_tag_for_a_missing_task_is_refused_by_the_foreign_key(
    database: Database,
) -> None:
    with pytest.raises(IntegrityError):
        await add_orphan_tag(database)

    async with database.session_scope() as session:
        count: int = (await session.execute(text("SELECT count(*) FROM task_tag"))).scalar_one()
    assert count == 0
