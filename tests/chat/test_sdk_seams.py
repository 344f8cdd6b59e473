"""The few places that lean on SDK internals fail here, loudly, when an SDK release moves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents.testing import ScriptedModel
from mcp import ClientSession

from backend.agent import runtime as runtime_module
from backend.agent.runtime import AgentRuntime
from backend.db import Database
from tests.chat.conftest import chat_settings


async def test_per_request_mcp_sessions_share_compiled_output_validators(
    tmp_path: Path,
    database_url: str,
    mcp_url: str,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[str] = []
    original = ClientSession._output_schema_validator  # the private method the cache wraps

    def counting(self: ClientSession, name: str, schema: dict[str, Any]) -> Any:
        compiled.append(name)
        return original(self, name, schema)

    monkeypatch.setattr(ClientSession, "_output_schema_validator", counting)
    monkeypatch.setattr(runtime_module, "_COMPILED_OUTPUT_SCHEMAS", {})
    runtime = AgentRuntime.create(chat_settings(tmp_path, database_url, mcp_url), ScriptedModel([]))
    for _ in range(3):
        async with runtime.tools_for("alice") as tools:
            assert tools.session is not None
            result = await tools.call_tool("list_tasks", {})
            assert not result.is_error
    assert compiled == ["list_tasks"]  # once for three sessions
