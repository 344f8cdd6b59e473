"""A chat turn's MCP token carries the user's zone: a task the model adds without naming a
zone still keeps its repeats in the user's local time."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from backend.auth.mcp_tokens import McpTokenConfig, mint_mcp_token, verify_mcp_token
from backend.db import Database
from tests.mcp_server.conftest import open_session, task_row


def test_the_zone_claim_is_kept_only_when_it_names_a_real_zone(
    token_config: McpTokenConfig,
) -> None:
    good = mint_mcp_token(token_config, "alice", channel="chat", zone="Europe/Berlin")
    bad = mint_mcp_token(token_config, "alice", channel="chat", zone="../../etc/passwd")

    assert verify_mcp_token(token_config, good).zone == "Europe/Berlin"
    assert verify_mcp_token(token_config, bad).zone is None


async def test_add_task_takes_the_zone_of_the_turn_unless_the_call_names_one(
    mcp_app: Starlette, token_config: McpTokenConfig, database: Database
) -> None:
    token = mint_mcp_token(token_config, "alice", channel="chat", zone="America/New_York")
    async with open_session(mcp_app, token) as alice:
        created: list[dict[str, Any]] = [
            await alice.ok("add_task", title="Water plants", recurrence="FREQ=WEEKLY;BYDAY=MO"),
            await alice.ok(
                "add_task", title="Call Ana", recurrence="daily", time_zone="Asia/Tokyo"
            ),
        ]

    assert [row["time_zone"] for row in created] == ["America/New_York", "Asia/Tokyo"]
    stored = await task_row(database, created[0]["task_id"])
    assert stored["time_zone"] == "America/New_York"
    assert stored["series_id"]
