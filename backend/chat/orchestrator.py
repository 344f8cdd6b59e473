"""One chat turn, start to finish, with nothing kept in memory between turns.

begin (short transaction) → history → agent with MCP tools → finish (short transaction).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import openai
from agents import (
    AgentsException,
    MaxTurnsExceeded,
    ModelTimeoutError,
    RawResponsesStreamEvent,
    RunItemStreamEvent,
    Runner,
    RunResultStreaming,
    StreamEvent,
    ToolCallItem,
    ToolCallOutputItem,
)
from mcp.shared.exceptions import MCPError
from openai.types.responses import ResponseTextDeltaEvent

from backend.agent.runtime import AgentRuntime, ToolsConnectionError
from backend.chat import service as chat_service
from backend.chat.history import to_input_items
from backend.chat.schemas import ChatRequest, ChatResponse, ToolCall
from backend.chat.service import TurnRecord, TurnStart
from backend.clock import utc_now
from backend.db import Database
from backend.errors import AppError

logger = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
Consume = Callable[[RunResultStreaming, "TurnRecorder"], Awaitable[None]]

MAX_TURNS_REPLY = (
    "I stopped after too many steps without finishing. The tool calls listed here are the only "
    "changes I made."
)


class TurnFailed(AppError):
    """The turn could not finish; the user's message is kept and a retry is safe."""

    status_code = 502
    code = "model_error"


class ModelTimedOut(TurnFailed):
    status_code = 504
    code = "model_timeout"


class ToolsUnavailable(TurnFailed):
    status_code = 503
    code = "tools_unavailable"


class TurnLimitReached(TurnFailed):
    code = "max_turns_exceeded"


class TurnSuperseded(TurnFailed):
    status_code = 409
    code = "turn_superseded"


def _is_tool_failure(exc: BaseException | None) -> bool:
    """The MCP side broke (as opposed to the model): connection, transport or protocol."""
    while exc is not None:
        if isinstance(exc, ToolsConnectionError | MCPError | OSError):
            return True
        if isinstance(exc, AgentsException) and str(exc).startswith(
            ("Error running tool", "Error invoking MCP tool")
        ):
            return True
        exc = exc.__cause__
    return False


def _classify(exc: BaseException) -> TurnFailed:
    if isinstance(exc, MaxTurnsExceeded):
        return TurnLimitReached("The assistant needed too many steps and was stopped")
    if isinstance(exc, ModelTimeoutError | openai.APITimeoutError | TimeoutError):
        return ModelTimedOut("The model did not answer in time; please retry")
    if _is_tool_failure(exc):
        return ToolsUnavailable("The task tools are unreachable right now; please retry")
    return TurnFailed("The model failed to answer; please retry")


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        return str(output.get("text", ""))
    if isinstance(output, list):
        return "".join(_output_text(part) for part in output)
    return str(output)


@dataclass
class TurnRecorder:
    """Collects what the agent did from its stream events."""

    emit: Emit | None
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    # The id a front end already shows for the reply (ChatKit); stored with the message.
    reply_item_id: str | None = None

    async def observe(self, event: StreamEvent) -> None:
        if isinstance(event, RawResponsesStreamEvent):
            if isinstance(event.data, ResponseTextDeltaEvent):
                self.text.append(event.data.delta)
                if self.emit:
                    await self.emit("delta", {"text": event.data.delta})
        elif isinstance(event, RunItemStreamEvent):
            if event.name == "tool_called" and isinstance(event.item, ToolCallItem):
                await self._called(event.item)
            elif event.name == "tool_output" and isinstance(event.item, ToolCallOutputItem):
                await self._finished(event.item)

    async def _called(self, item: ToolCallItem) -> None:
        raw = item.raw_item
        call_id = str(getattr(raw, "call_id", "") or getattr(raw, "id", ""))
        try:
            arguments = json.loads(getattr(raw, "arguments", "") or "{}")
        except ValueError:
            arguments = {"raw": getattr(raw, "arguments", "")}
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
        if self.emit:
            await self.emit(
                "tool_call_started", {"call_id": call_id, "name": name, "arguments": arguments}
            )

    async def _finished(self, item: ToolCallOutputItem) -> None:
        raw = item.raw_item
        call_id = str(
            raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
        )
        call = self.calls.get(call_id)
        if call is None:
            return
        extra = item.custom_data or {}
        structured = extra.get("structured")
        call["is_error"] = bool(extra.get("is_error", False))
        call["result"] = (
            structured if structured and not call["is_error"] else _output_text(item.output)
        )
        call["duration_ms"] = round(
            (time.monotonic() - self.started.get(call_id, time.monotonic())) * 1000
        )
        if self.emit:
            await self.emit("tool_call_finished", _public_call(call) | {"call_id": call_id})

    def finished_calls(self) -> list[dict[str, Any]]:
        # A call without a result did not finish: it is not claimed as done.
        return [call for call in self.calls.values() if call["duration_ms"] is not None]


async def _observe_all(result: RunResultStreaming, recorder: TurnRecorder) -> None:
    async for event in result.stream_events():
        await recorder.observe(event)


def _public_call(call: dict[str, Any]) -> dict[str, Any]:
    return ToolCall(
        name=call["name"],
        arguments=call["arguments"],
        result=call["result"],
        is_error=call["is_error"],
    ).model_dump(mode="json")


def _response(conversation_id: int, reply: str, calls: list[dict[str, Any]]) -> ChatResponse:
    return ChatResponse(
        conversation_id=conversation_id,
        response=reply,
        tool_calls=[ToolCall.model_validate(_public_call(call)) for call in calls],
    )


@dataclass
class _Outcome:
    """How the agent part of a turn ended."""

    reply: str | None = None
    usage: tuple[int, int | None, int | None] = (0, None, None)
    failure: TurnFailed | None = None
    cancelled: asyncio.CancelledError | None = None
    error: str | None = None

    def finish(
        self, recorder: TurnRecorder, latency_ms: int
    ) -> tuple[TurnFailed | None, asyncio.CancelledError | None, TurnRecord]:
        failure = self.failure
        if self.cancelled is not None:
            failure = TurnFailed("The turn was cancelled", code="cancelled")
        reply = self.reply
        if isinstance(failure, TurnLimitReached):
            reply = MAX_TURNS_REPLY
        elif self.cancelled is not None:
            reply = "".join(recorder.text) or None  # keep what the user already saw
        record = TurnRecord(
            status="failed" if failure else "succeeded",
            reply=reply,
            reply_item_id=recorder.reply_item_id,
            tool_calls=recorder.finished_calls(),
            latency_ms=latency_ms,
            model_calls=self.usage[0],
            input_tokens=self.usage[1],
            output_tokens=self.usage[2],
            error_code=failure.code if failure else None,
            error_message=self.error if failure else None,
        )
        return failure, self.cancelled, record


@dataclass
class Orchestrator:
    database: Database
    runtime: AgentRuntime

    async def begin(
        self,
        user_id: str,
        request: ChatRequest,
        channel: str = "chat",
        item_id: str | None = None,
    ) -> TurnStart:
        async with self.database.session_scope(write=True) as session:
            return await chat_service.begin_turn(
                session,
                user_id,
                conversation_id=request.conversation_id,
                message=request.message,
                client_message_id=request.client_message_id,
                model_name=self.runtime.model_name,
                lease_seconds=self.runtime.settings.chat_lease_seconds,
                channel=channel,
                item_id=item_id,
            )

    async def resume(
        self,
        user_id: str,
        conversation_id: int,
        user_message_item_id: str,
        channel: str,
        replaced_item_ids: Sequence[str] = (),
    ) -> TurnStart:
        """A new run for a message already stored (a retry)."""
        async with self.database.session_scope(write=True) as session:
            return await chat_service.resume_turn(
                session,
                user_id,
                conversation_id,
                user_message_item_id,
                model_name=self.runtime.model_name,
                lease_seconds=self.runtime.settings.chat_lease_seconds,
                channel=channel,
                replaced_item_ids=replaced_item_ids,
            )

    async def complete(
        self,
        user_id: str,
        start: TurnStart,
        zone: ZoneInfo,
        emit: Emit | None = None,
        consume: Consume | None = None,
    ) -> ChatResponse:
        """Run the agent on the stored history, then record how it went. Raises TurnFailed.

        Whatever happens after `begin` — failure, cancellation, a crash in the recording
        itself — the run is closed and the lease released (the last by lease expiry only if
        the process dies).
        """
        if start.replay is not None:
            return _response(
                start.replay.conversation_id, start.replay.response, start.replay.tool_calls
            )
        recorder = TurnRecorder(emit)
        began = time.monotonic()
        heartbeat = asyncio.create_task(self._keep_lease(start))
        try:
            outcome = await self._attempt(user_id, start, zone, recorder, consume or _observe_all)
        finally:
            heartbeat.cancel()
        failure, cancelled, record = outcome.finish(
            recorder, round((time.monotonic() - began) * 1000)
        )
        # Shielded: a client leaving now must not stop the turn from being recorded.
        kept = await asyncio.shield(self._record(user_id, start, record))
        if cancelled is not None:
            raise cancelled
        if failure is not None:
            raise failure
        if not kept:
            raise TurnSuperseded(
                "This turn ran too long and another one took over the conversation"
            )
        return _response(start.conversation_id, record.reply or "", record.tool_calls)

    async def _attempt(
        self,
        user_id: str,
        start: TurnStart,
        zone: ZoneInfo,
        recorder: TurnRecorder,
        consume: Consume,
    ) -> _Outcome:
        try:
            async with self.database.session_scope() as session:
                history = await chat_service.recent_messages(
                    session, start.conversation_id, self.runtime.settings.chat_history_messages
                )
            reply, usage = await self._run_agent(
                user_id, to_input_items(history), zone, recorder, consume
            )
            return _Outcome(reply=reply, usage=usage)
        except asyncio.CancelledError as exc:
            return _Outcome(cancelled=exc, error="cancelled by the client")
        except Exception as exc:
            failure = _classify(exc)
            logger.warning(
                "turn failed: run=%s code=%s (%s)", start.run_id, failure.code, type(exc).__name__
            )
            return _Outcome(failure=failure, error=f"{type(exc).__name__}: {exc}")

    async def _record(self, user_id: str, start: TurnStart, record: TurnRecord) -> bool:
        try:
            async with self.database.session_scope(write=True) as session:
                return await chat_service.finish_turn(session, user_id, start, record)
        except Exception:
            logger.exception("could not record run %s; releasing its lease", start.run_id)
            await self.abandon(start, "record_failed")
            return True

    async def abandon(self, start: TurnStart, code: str) -> None:
        """Close a run that will not finish normally and free its conversation."""
        try:
            async with self.database.session_scope(write=True) as session:
                await chat_service.abandon_turn(session, start, code)
        except Exception:
            logger.exception("could not abandon run %s; its lease will expire", start.run_id)

    async def _keep_lease(self, start: TurnStart) -> None:
        """Renew the lease while the agent works, so a long turn is never run twice."""
        lease_seconds = self.runtime.settings.chat_lease_seconds
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                async with self.database.session_scope(write=True) as session:
                    await chat_service.renew_lease(session, start, lease_seconds)
            except Exception:
                logger.warning("could not renew the lease of run %s", start.run_id)

    async def _run_agent(
        self,
        user_id: str,
        items: list[Any],
        zone: ZoneInfo,
        recorder: TurnRecorder,
        consume: Consume,
    ) -> tuple[str, tuple[int, int | None, int | None]]:
        async with self.runtime.tools_for(user_id) as tools:
            agent = self.runtime.agent(tools, utc_now(), zone)
            result = Runner.run_streamed(
                agent,
                items,
                max_turns=self.runtime.settings.agent_max_turns,
                run_config=self.runtime.run_config(),
            )
            await consume(result, recorder)
        usage = result.context_wrapper.usage
        tokens = (usage.input_tokens or None, usage.output_tokens or None)
        return str(result.final_output or ""), (len(result.raw_responses), *tokens)

    async def run(
        self, user_id: str, request: ChatRequest, zone: ZoneInfo, emit: Emit | None = None
    ) -> ChatResponse:
        start = await self.begin(user_id, request)
        return await self.complete(user_id, start, zone, emit)
