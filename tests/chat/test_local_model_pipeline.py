"""The utterance table for the offline model, end to end through POST /api/{user}/chat."""

from __future__ import annotations

import json
import uuid

import httpx

from backend.agent.local_model import LocalModel
from backend.clock import Clock
from backend.config import Settings
from backend.db import Database
from tests.agent.tables import MAIN_TABLE
from tests.agent.test_local_model import McpDriver
from tests.agent.utterances import NOW, SeenCall, TurnOutcome, run_case
from tests.chat.conftest import AppFactory
from tests.conftest import auth


class ChatDriver(McpDriver):
    """Seeds and reads tasks like the MCP driver; talks through the chat API."""

    def __init__(self, client: httpx.AsyncClient, database: Database, settings: Settings) -> None:
        self.client = client
        self.database = database
        self.settings = settings  # for the relay that feeds the task history between turns
        self.conversations: dict[str, int] = {}

    async def say(self, user_id: str, text: str, zone: str) -> TurnOutcome:
        await self._feed_history()  # the changes of earlier turns
        body: dict[str, object] = {"message": text}
        if user_id in self.conversations:
            body["conversation_id"] = self.conversations[user_id]
        response = await self.client.post(
            f"/api/{user_id}/chat", json=body, headers={**auth(user_id), "X-Timezone": zone}
        )
        assert response.status_code == 200, response.text
        payload = response.json()
        self.conversations[user_id] = payload["conversation_id"]
        calls = [
            SeenCall(
                call["name"],
                call["arguments"],
                call["result"] if isinstance(call["result"], str) else json.dumps(call["result"]),
            )
            for call in payload["tool_calls"]
        ]
        return TurnOutcome(payload["response"], calls)


async def test_utterance_table_through_the_chat_pipeline(
    chat_client: AppFactory, database: Database, clock: Clock, settings: Settings
) -> None:
    # The table's dates assume NOW: the model, the task service and the MCP tools all
    # read the one clock.
    clock.freeze(NOW)
    failures: dict[str, list[str]] = {}
    async with chat_client(LocalModel()) as client:
        driver = ChatDriver(client, database, settings)
        for case in MAIN_TABLE:
            user_id = f"user-{case.id}-{uuid.uuid4().hex[:6]}"
            problems = await run_case(case, driver, user_id)
            if problems:
                failures[case.id] = problems
    report = "\n".join(f"{case_id}:\n  " + "\n  ".join(p) for case_id, p in failures.items())
    assert len(MAIN_TABLE) >= 300
    assert not failures, f"{len(failures)} of {len(MAIN_TABLE)} cases failed:\n{report}"
