"""A PostgreSQL backend killed mid-session is an outage (503), not a bug (500)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backend.db import Database, is_database_unavailable
from tests.faults.support import PostgresCluster


async def test_a_terminated_backend_mid_session_is_unavailable(
    private_postgres: PostgresCluster,
) -> None:
    victim, admin = Database(private_postgres.url), Database(private_postgres.url)
    try:
        async with victim.engine.connect() as connection:
            pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with admin.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(text("SELECT 1"))
    finally:
        await victim.dispose()
        await admin.dispose()

    assert is_database_unavailable(raised.value)
