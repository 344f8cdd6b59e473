"""One chat turn, start to finish: begin → history → agent → record → release.

Both front doors — the chat route (JSON or Server-Sent Events) and ChatKit — start turns
here and read the same typed events; they only translate them to their wire formats.

Policy for a client that leaves mid-turn: the turn goes on, finishes and is recorded, and a
retry with the same `client_message_id` gets the stored answer. Only an explicit cancel
(ChatKit's stop button) cancels a turn; it keeps the partial reply it had streamed.

The reply is never reported before it is stored. If the closing write fails because the
database is unavailable, the client gets 503 `database_unavailable` and the write is
retried in the background until the database is back, so the run is closed, the lease
released and a retry answered from the record, without running any tool twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import openai
from agents import MaxTurnsExceeded, ModelTimeoutError, Runner

from backend.agent.runtime import AgentRuntime, ToolBudget, ToolsConnectionError
from backend.chat import service as chat_service
from backend.chat.history import to_input_items
from backend.chat.recorder import TurnDone, TurnError, TurnEvent, TurnRecorder, chat_response
from backend.chat.schemas import ChatRequest, ChatResponse
from backend.chat.service import TurnRecord, TurnStart
from backend.clock import utc_now
from backend.db import Database, DatabaseOutage, is_database_unavailable
from backend.errors import AppError
from backend.observability import Metrics, run_id_var

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_TURNS_REPLY = (
    "I stopped after too many steps without finishing. The tool calls listed here are the only "
    "changes I made."
)
LIMIT_REPLIES = {
    "tool_call_limit": "I stopped: that needed more tool calls than I may make for one "
    "message. The tool calls listed here are the only changes I made; ask again for the rest.",
    "destructive_call_limit": "I stopped: that would delete or overwrite more tasks than I "
    "may for one message. The tool calls listed here are the only changes I made; ask again "
    "for the rest.",
}
RECOVERY_FIRST_DELAY = 0.25
RECOVERY_MAX_DELAY = 2.0

# Turns run as tasks of their own, so a client leaving does not stop them; keep a reference
# until they end, and a way to wait for them at shutdown.
_running: set[asyncio.Future[Any]] = set()


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


class TurnCrashed(TurnFailed):
    """A bug, not the model: the run is still closed and the lease released."""

    status_code = 500
    code = "internal_error"


class TurnCancelled(TurnFailed):
    status_code = 499
    code = "cancelled"


def _caused_by(exc: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__
    return False


def classify(exc: BaseException) -> TurnFailed:
    """The client-facing failure for what broke the agent part of a turn."""
    if isinstance(exc, MaxTurnsExceeded):
        return TurnLimitReached("The assistant needed too many steps and was stopped")
    if _caused_by(exc, (ToolsConnectionError,)):
        return ToolsUnavailable("The task tools are unreachable right now; please retry")
    if _caused_by(exc, (ModelTimeoutError, openai.APITimeoutError, TimeoutError)):
        return ModelTimedOut("The model did not answer in time; please retry")
    return TurnFailed("The model failed to answer; please retry")


class Turn:
    """A running turn: its events in order, then its outcome."""

    def __init__(self, start: TurnStart, work: Callable[[Turn], Awaitable[ChatResponse]]) -> None:
        self.start = start
        self._events: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(work))
        _track(self._task)

    def publish(self, event: TurnEvent) -> None:
        self._events.put_nowait(event)

    async def _run(self, work: Callable[[Turn], Awaitable[ChatResponse]]) -> ChatResponse:
        try:
            response = await work(self)
            self.publish(TurnDone(response))
            return response
        except AppError as exc:
            self.publish(TurnError(exc))
            raise
        except asyncio.CancelledError:
            self.publish(TurnError(TurnCancelled("The turn was cancelled")))
            raise
        except Exception as exc:
            logger.exception("turn of run %s crashed", self.start.run_id)
            error = AppError("Internal server error")
            self.publish(TurnError(error))
            raise error from exc
        finally:
            self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[TurnEvent]:
        """Every event once, ending with TurnDone or TurnError."""
        while (event := await self._events.get()) is not None:
            yield event

    async def result(self) -> ChatResponse:
        """The response, or the turn's AppError; waiting here never cancels the turn."""
        return await asyncio.shield(self._task)

    def cancel(self) -> None:
        self._task.cancel()


async def wait_for_running_turns(grace_seconds: float) -> None:
    """At shutdown: let the turns in flight finish and record."""
    if _running:
        await asyncio.wait(list(_running), timeout=grace_seconds)


def _settled(task: asyncio.Future[Any]) -> None:
    _running.discard(task)
    if not task.cancelled():
        task.exception()  # the outcome reached the client as an event; nothing to log twice


@dataclass
class _Outcome:
    """How the agent part of a turn ended."""

    reply: str | None = None
    failure: AppError | None = None
    error: str | None = None
    stopped: str | None = None  # the per-turn limit that stopped it

    def record(self, recorder: TurnRecorder, latency_ms: int) -> TurnRecord:
        reply = self.reply
        status = "succeeded"
        if self.stopped is not None:
            reply, status = LIMIT_REPLIES[self.stopped], "stopped"
        elif isinstance(self.failure, TurnLimitReached):
            reply, status = MAX_TURNS_REPLY, "failed"
        elif isinstance(self.failure, TurnCancelled):
            reply, status = "".join(recorder.text) or None, "failed"  # what the user saw
        elif self.failure is not None:
            status = "failed"
        calls, input_tokens, output_tokens = recorder.usage()
        return TurnRecord(
            status=status,
            reply=reply,
            reply_item_id=recorder.reply_item_id,
            tool_calls=recorder.finished_calls(),
            latency_ms=latency_ms,
            model_calls=calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            error_code=self.stopped or (self.failure.code if self.failure else None),
            error_message=self.error,
        )


@dataclass
class TurnRunner:
    database: Database
    runtime: AgentRuntime
    metrics: Metrics = field(default_factory=Metrics)

    async def begin(self, user_id: str, request: ChatRequest, channel: str = "chat") -> TurnStart:
        """The first short transaction: conversation, lease, user message, run record, history."""
        async with self.database.session_scope(write=True) as session:
            start = await chat_service.begin_turn(
                session,
                user_id,
                conversation_id=request.conversation_id,
                message=request.message,
                client_message_id=request.client_message_id,
                model_name=self.runtime.model_name,
                lease_seconds=self.runtime.settings.chat_lease_seconds,
                channel=channel,
                history_limit=self.runtime.settings.chat_history_messages,
            )
        return replace(start, channel=channel)

    async def begin_for_stored(
        self, user_id: str, conversation_id: int, user_message_item_id: str, channel: str
    ) -> TurnStart:
        """A turn for a user message already stored (ChatKit: a new message or a retry)."""
        async with self.database.session_scope(write=True) as session:
            start = await chat_service.answer_stored_message(
                session,
                user_id,
                conversation_id,
                user_message_item_id,
                model_name=self.runtime.model_name,
                lease_seconds=self.runtime.settings.chat_lease_seconds,
                channel=channel,
                history_limit=self.runtime.settings.chat_history_messages,
            )
        return replace(start, channel=channel)

    def run(self, user_id: str, start: TurnStart, zone: ZoneInfo) -> Turn:
        """Start the agent part of a begun turn; it runs on even if the caller goes away."""

        async def work(turn: Turn) -> ChatResponse:
            return await self._work(turn, user_id, start, zone)

        return Turn(start, work)

    async def chat(
        self, user_id: str, request: ChatRequest, zone: ZoneInfo, channel: str = "chat"
    ) -> ChatResponse:
        start = await self.begin(user_id, request, channel)
        return await self.run(user_id, start, zone).result()

    async def close_stale_runs(self) -> None:
        """At start-up: close runs whose process died (their lease has lapsed)."""
        try:
            async with self.database.session_scope(write=True) as session:
                closed = await chat_service.close_stale_runs(session)
        except Exception as exc:
            logger.warning("could not close stale runs at start-up: %s", type(exc).__name__)
            return
        if closed:
            logger.info("closed %d runs left running by a stopped process", closed)

    async def _work(
        self, turn: Turn, user_id: str, start: TurnStart, zone: ZoneInfo
    ) -> ChatResponse:
        if start.replay is not None:
            replay = start.replay
            return chat_response(replay.conversation_id, replay.response, replay.tool_calls)
        # This task's log lines name the run (JSON logs); the request's lines are unaffected.
        run_id_var.set(start.run_id)
        recorder = TurnRecorder(turn.publish)
        began = time.monotonic()
        lease_lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_lease(start, recorder, lease_lost))
        cancelled: asyncio.CancelledError | None = None
        try:
            outcome = await self._attempt(user_id, start, zone, recorder)
        except asyncio.CancelledError as exc:
            cancelled = exc
            outcome = _Outcome(failure=TurnCancelled("cancelled"), error="cancelled by the client")
        except Exception as exc:  # a bug: the run is still closed and the lease released
            logger.exception("turn of run %s crashed", start.run_id)
            failure = TurnCrashed("The turn failed; please retry")
            outcome = _Outcome(failure=failure, error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
        if lease_lost.is_set():  # the heartbeat stopped the agent: another turn took over
            outcome = _Outcome(failure=_superseded(), error="the lease was lost mid-turn")
        record = outcome.record(recorder, round((time.monotonic() - began) * 1000))
        # Shielded and tracked: a cancel now must not stop the turn from being recorded, and
        # shutdown waits for it.
        closing = asyncio.ensure_future(self._close(user_id, start, record, outcome.failure))
        self._count(start, record)
        _track(closing)
        await asyncio.shield(closing)
        if cancelled is not None:
            raise cancelled
        if outcome.failure is not None:
            raise outcome.failure
        return chat_response(start.conversation_id, record.reply or "", record.tool_calls)

    def _count(self, start: TurnStart, record: TurnRecord) -> None:
        """Metrics of a turn that ended, once, by the status its run is recorded with."""
        try:
            self.metrics.turn_ended(record.status, start.channel, record.latency_ms / 1000)
            for call in record.tool_calls:
                self.metrics.chat_tool_call(call.get("name"), bool(call.get("is_error")))
        except Exception:  # a metrics bug must never cost the user their answer
            logger.exception("Could not count the metrics of run %s", start.run_id)

    async def _attempt(
        self, user_id: str, start: TurnStart, zone: ZoneInfo, recorder: TurnRecorder
    ) -> _Outcome:
        budget = ToolBudget.from_settings(self.runtime.settings)
        try:
            history = to_input_items(await self._history(start))
        except DatabaseOutage as exc:
            return _Outcome(failure=exc, error=f"{type(exc.__cause__).__name__}: {exc.__cause__}")
        try:
            reply = await self._run_agent(user_id, start, history, zone, recorder, budget)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = classify(exc)
            logger.warning(
                "turn failed: run=%s code=%s (%s)", start.run_id, failure.code, type(exc).__name__
            )
            return _Outcome(failure=failure, error=f"{type(exc).__name__}: {exc}")
        if budget.exhausted is not None:
            return _Outcome(stopped=budget.exhausted)
        if not reply.strip():
            error = "the model's answer held no text and no tool call"
            if recorder.finished_calls():
                error = "the model's final answer held no text"
            failure = TurnFailed("The model returned an empty answer; please retry")
            return _Outcome(failure=failure, error=error)
        return _Outcome(reply=reply)

    async def _history(self, start: TurnStart) -> list[Any]:
        """What the model is given: the newest messages, ending at this turn's own message.

        Read when the turn began, in that transaction; read here only for a start that
        came without it.
        """
        if start.history is not None:
            return list(start.history)
        async with self.database.session_scope() as session:
            return await chat_service.recent_messages(
                session,
                start.conversation_id,
                self.runtime.settings.chat_history_messages,
                answering_seq=start.user_seq or None,
            )

    async def _run_agent(
        self,
        user_id: str,
        start: TurnStart,
        items: list[Any],
        zone: ZoneInfo,
        recorder: TurnRecorder,
        budget: ToolBudget,
    ) -> str:
        async with self.runtime.tools_for(user_id, budget, start.channel, zone.key) as tools:
            agent = self.runtime.agent(tools, utc_now(), zone)
            result = Runner.run_streamed(
                agent,
                items,
                max_turns=self.runtime.settings.agent_max_turns,
                run_config=self.runtime.run_config(),
            )
            recorder.result = result
            try:
                async for event in result.stream_events():
                    finished = recorder.observe(event)
                    if finished is not None and finished.changed_tasks:
                        await self._journal(start, recorder)
                    if budget.exhausted is not None:
                        result.cancel(mode="after_turn")  # the current step's calls finish first
            finally:
                # Left early (cancelled, or an error here): the run task would go on alone.
                if not result.is_complete:
                    result.cancel()
        return str(result.final_output or "")

    async def _journal(self, start: TurnStart, recorder: TurnRecorder) -> None:
        """Keep the finished calls in the run record now, in case this process dies."""
        try:
            async with self.database.session_scope(write=True) as session:
                await chat_service.journal_tool_calls(
                    session, start.run_id, recorder.finished_calls()
                )
        except Exception as exc:  # the final record carries them too
            logger.warning("could not journal run %s: %s", start.run_id, type(exc).__name__)

    async def _close(
        self, user_id: str, start: TurnStart, record: TurnRecord, failure: AppError | None
    ) -> None:
        """The last short transaction; raises unless the record is stored.

        The one place a begun turn is closed: by its record, or — when the database is
        unavailable — by a background retry that stores the same record once it is back.
        """
        try:
            kept = await self._finish(user_id, start, record)
        except Exception as exc:
            if not is_database_unavailable(exc):
                logger.exception("could not record run %s", start.run_id)
                await self._abandon(start, "record_failed")
                raise TurnCrashed("The answer could not be stored; please retry") from exc
            logger.warning(
                "could not record run %s (%s); retrying until the database is back",
                start.run_id,
                type(exc).__name__,
            )
            _track(asyncio.create_task(self._record_when_back(user_id, start, record)))
            if failure is not None and not isinstance(failure, TurnCancelled):
                raise failure from exc
            raise DatabaseOutage(
                "The database is unavailable, so the answer could not be stored; retry with "
                "the same client_message_id in a few seconds"
            ) from exc
        if not kept:
            raise _superseded()

    async def _finish(self, user_id: str, start: TurnStart, record: TurnRecord) -> bool:
        async with self.database.session_scope(write=True) as session:
            return await chat_service.finish_turn(session, user_id, start, record)

    async def _record_when_back(self, user_id: str, start: TurnStart, record: TurnRecord) -> None:
        try:
            kept = await _when_database_is_back(lambda: self._finish(user_id, start, record))
        except Exception:
            logger.exception("could not record run %s after an outage", start.run_id)
            await self._abandon(start, "record_failed")
            return
        logger.info("recorded run %s after an outage (kept=%s)", start.run_id, kept)

    async def _abandon(self, start: TurnStart, code: str) -> None:
        """Close the run and free the conversation, retrying through an outage."""

        async def abandon() -> None:
            async with self.database.session_scope(write=True) as session:
                await chat_service.abandon_turn(session, start, code)

        try:
            await _when_database_is_back(abandon, first_try_now=True)
        except Exception:
            logger.exception("could not close run %s; its lease will expire", start.run_id)

    async def _keep_lease(
        self, start: TurnStart, recorder: TurnRecorder, lost: asyncio.Event
    ) -> None:
        """Renew the lease while the agent works, so a long turn is never run twice.

        If another turn took the conversation over, stop the agent now: it must not go on
        changing tasks beside the new owner.
        """
        lease_seconds = self.runtime.settings.chat_lease_seconds
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                async with self.database.session_scope(write=True) as session:
                    held = await chat_service.renew_lease(session, start, lease_seconds)
            except Exception:
                logger.warning("could not renew the lease of run %s", start.run_id)
                continue
            if not held:
                logger.warning("run %s lost its lease; stopping it", start.run_id)
                lost.set()
                if recorder.result is not None:
                    recorder.result.cancel()
                return


def _superseded() -> TurnSuperseded:
    return TurnSuperseded("This turn ran too long and another one took over the conversation")


def _track(task: asyncio.Future[Any]) -> None:
    """Keep a reference to background work, and let shutdown wait for it."""
    _running.add(task)
    task.add_done_callback(_settled)


async def _when_database_is_back(
    write: Callable[[], Awaitable[T]], *, first_try_now: bool = False
) -> T:
    """Run `write` until it gets through an outage (backoff capped at RECOVERY_MAX_DELAY)."""
    delay = 0.0 if first_try_now else RECOVERY_FIRST_DELAY
    while True:
        await asyncio.sleep(delay)
        try:
            return await write()
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
        delay = min(max(delay * 2, RECOVERY_FIRST_DELAY), RECOVERY_MAX_DELAY)
