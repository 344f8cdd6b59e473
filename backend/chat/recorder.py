"""What a turn did, read off the agent's stream: typed events, tool calls, the reply."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents import (
    RawResponsesStreamEvent,
    RunItemStreamEvent,
    RunResultStreaming,
    StreamEvent,
    ToolCallItem,
    ToolCallOutputItem,
)
from openai.types.responses import ResponseTextDeltaEvent

from backend.agent.tools import WRITE_TOOLS
from backend.chat.schemas import ChatResponse, ToolCall
from backend.models import new_public_id


@dataclass(frozen=True)
class ReplyDelta:
    """A piece of the reply text, as the model streams it."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallFinished:
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any
    is_error: bool

    @property
    def changed_tasks(self) -> bool:
        return self.name in WRITE_TOOLS and not self.is_error


@dataclass(frozen=True)
class AgentStreamEvent:
    """The Agents SDK's own event, for front ends that render it themselves (ChatKit)."""

    event: StreamEvent


@dataclass(frozen=True)
class TurnDone:
    response: ChatResponse


@dataclass(frozen=True)
class TurnError:
    """The turn ended without an answer; `error` is an AppError (status, code, message)."""

    error: Exception


TurnEvent = (
    ReplyDelta | ToolCallStarted | ToolCallFinished | AgentStreamEvent | TurnDone | TurnError
)
Publish = Callable[[TurnEvent], None]


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        return str(output.get("text", ""))
    if isinstance(output, list):
        return "".join(_output_text(part) for part in output)
    return str(output)


class _MessageIds:
    """Gives each assistant message item our own unique id, in every event that names it.

    Models may repeat placeholder ids across items and turns; the id ChatKit shows must be
    the one the reply is stored under.
    """

    def __init__(self) -> None:
        self._current: dict[str, str] = {}
        self.last: str | None = None

    def apply(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        item: Any = getattr(event, "item", None)
        is_message = getattr(item, "type", "") == "message"
        if kind == "response.output_item.added" and is_message:
            ours = new_public_id("msg")
            self._current[item.id] = ours
            item.id = ours
        elif kind == "response.output_item.done" and is_message:
            ours = self._current.pop(item.id, "") or new_public_id("msg")
            item.id = self.last = ours
        elif getattr(event, "item_id", None) in self._current:
            event.item_id = self._current[event.item_id]


@dataclass
class TurnRecorder:
    """Collects what the agent did from its stream events and publishes them as turn events."""

    publish: Publish
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    result: RunResultStreaming | None = None
    _ids: _MessageIds = field(default_factory=_MessageIds)

    @property
    def reply_item_id(self) -> str | None:
        return self._ids.last

    def observe(self, event: StreamEvent) -> ToolCallFinished | None:
        """Record one event and publish it; returns the tool call it finished, if any."""
        finished = None
        if isinstance(event, RawResponsesStreamEvent):
            self._ids.apply(event.data)
            if isinstance(event.data, ResponseTextDeltaEvent):
                self.text.append(event.data.delta)
                self.publish(ReplyDelta(event.data.delta))
        elif isinstance(event, RunItemStreamEvent):
            if event.name == "tool_called" and isinstance(event.item, ToolCallItem):
                self._called(event.item)
            elif event.name == "tool_output" and isinstance(event.item, ToolCallOutputItem):
                finished = self._finished(event.item)
        self.publish(AgentStreamEvent(event))
        if finished is not None:
            self.publish(finished)
        return finished

    def _called(self, item: ToolCallItem) -> None:
        raw = item.raw_item
        call_id = str(getattr(raw, "call_id", "") or getattr(raw, "id", ""))
        try:
            arguments = json.loads(getattr(raw, "arguments", "") or "{}")
        except ValueError:
            arguments = {"raw": getattr(raw, "arguments", "")}
        if not isinstance(arguments, dict):
            arguments = {"raw": arguments}
        name = str(getattr(raw, "name", "unknown"))
        self.started[call_id] = time.monotonic()
        self.calls[call_id] = {
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "result": None,
            "is_error": True,  # until a result says otherwise
            "duration_ms": None,
        }
        self.publish(ToolCallStarted(call_id, name, arguments))

    def _finished(self, item: ToolCallOutputItem) -> ToolCallFinished | None:
        raw = item.raw_item
        call_id = str(
            raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
        )
        call = self.calls.get(call_id)
        if call is None:
            return None
        extra = item.custom_data or {}
        structured = extra.get("structured")
        call["is_error"] = bool(extra.get("is_error", False))
        call["result"] = (
            structured if structured and not call["is_error"] else _output_text(item.output)
        )
        call["duration_ms"] = round(
            (time.monotonic() - self.started.get(call_id, time.monotonic())) * 1000
        )
        return ToolCallFinished(
            call_id, call["name"], call["arguments"], call["result"], call["is_error"]
        )

    def finished_calls(self) -> list[dict[str, Any]]:
        # A call without a result did not finish: it is not claimed as done.
        return [call for call in self.calls.values() if call["duration_ms"] is not None]

    def usage(self) -> tuple[int, int | None, int | None]:
        """Model calls and tokens used so far, also when the run failed part way."""
        if self.result is None:
            return 0, None, None
        usage = self.result.context_wrapper.usage
        calls = max(len(self.result.raw_responses), usage.requests or 0)
        return calls, usage.input_tokens or None, usage.output_tokens or None


def _public_call(call: dict[str, Any]) -> dict[str, Any]:
    return ToolCall(
        name=call["name"],
        arguments=call["arguments"],
        result=call["result"],
        is_error=call["is_error"],
    ).model_dump(mode="json")


def chat_response(conversation_id: int, reply: str, calls: list[dict[str, Any]]) -> ChatResponse:
    return ChatResponse(
        conversation_id=conversation_id,
        response=reply,
        tool_calls=[ToolCall.model_validate(_public_call(call)) for call in calls],
    )
