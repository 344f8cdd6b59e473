"""Stored messages → model input items. A tool call and its result travel together."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from agents import TResponseInputItem


class StoredMessage(Protocol):
    """What the model's history reads of a message: an ORM Message or a lean history row."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def tool_calls(self) -> list[dict[str, Any]] | None: ...
    @property
    def deleted_at(self) -> datetime | None: ...


def _result_text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


def to_input_items(messages: Iterable[StoredMessage]) -> list[TResponseInputItem]:
    items: list[TResponseInputItem] = []
    for message in messages:
        if message.role == "user":
            items.append({"role": "user", "content": message.content})
            continue
        for call in message.tool_calls or []:
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["call_id"],
                    "name": call["name"],
                    "arguments": json.dumps(call["arguments"], ensure_ascii=False),
                }
            )
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": _result_text(call["result"]),
                }
            )
        if message.content and message.deleted_at is None:  # a replaced answer's text is gone
            items.append({"role": "assistant", "content": message.content})
    return items
