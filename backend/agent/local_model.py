"""`local`: the offline, deterministic model shipped with the project.

It implements the Agents SDK `Model` interface. Each call reads the conversation it is given
(it keeps nothing between calls) and answers with tool calls for the MCP task tools, or with
the reply once their results are in. Nothing here touches the network.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from agents import Handoff, Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from backend.agent.local.respond import respond

MODEL_NAME = "local"
CHARS_PER_TOKEN = 4


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def _message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=_new_id("msg"),
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )


def _function_call(name: str, arguments: dict[str, Any]) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        type="function_call",
        id=_new_id("fc"),
        call_id=_new_id("call"),
        name=name,
        arguments=json.dumps(arguments, ensure_ascii=False),
        status="completed",
    )


def _tool_names(tools: list[Tool]) -> set[str]:
    return {
        name for name in (getattr(tool, "name", None) for tool in tools) if isinstance(name, str)
    }


class LocalModel(Model):
    """Turns everyday task requests into MCP tool calls, then confirms what they did."""

    name = MODEL_NAME

    def _decide(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        tools: list[Tool],
    ) -> tuple[list[TResponseOutputItem], Usage]:
        decision = respond(system_instructions, input, _tool_names(tools))
        output: list[TResponseOutputItem]
        if isinstance(decision, str):
            output = [_message(decision)]
            produced = decision
        else:
            output = [_function_call(call.name, call.arguments) for call in decision]
            produced = "".join(f"{call.name}{call.arguments}" for call in decision)
        read = (system_instructions or "") + json.dumps(input, default=str, ensure_ascii=False)
        usage = Usage(
            requests=1,
            input_tokens=_tokens(read),
            output_tokens=_tokens(produced),
            total_tokens=_tokens(read) + _tokens(produced),
        )
        return output, usage

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        output, usage = self._decide(system_instructions, input, tools)
        return ModelResponse(output=output, usage=usage, response_id=_new_id("resp"))

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        output, usage = self._decide(system_instructions, input, tools)
        for event in _ResponseStream(output, usage).events():
            yield event


class _ResponseStream:
    """The Responses API event sequence for one finished response."""

    def __init__(self, output: list[TResponseOutputItem], usage: Usage) -> None:
        self.output = output
        self.usage = usage
        self.response_id = _new_id("resp")
        self.created_at = time.time()
        self.sequence = 0

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence - 1

    def _response(
        self, status: Literal["in_progress", "completed"], output: list[TResponseOutputItem]
    ) -> Response:
        return Response(
            id=self.response_id,
            created_at=self.created_at,
            model=MODEL_NAME,
            object="response",
            output=output,
            status=status,
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=True,
            usage=self._response_usage() if status == "completed" else None,
        )

    def _response_usage(self) -> ResponseUsage:
        return ResponseUsage(
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            total_tokens=self.usage.total_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        )

    def events(self) -> Iterator[TResponseStreamEvent]:
        yield ResponseCreatedEvent(
            type="response.created",
            sequence_number=self._next(),
            response=self._response("in_progress", []),
        )
        yield ResponseInProgressEvent(
            type="response.in_progress",
            sequence_number=self._next(),
            response=self._response("in_progress", []),
        )
        for index, item in enumerate(self.output):
            if isinstance(item, ResponseOutputMessage):
                yield from self._message_events(index, item)
            elif isinstance(item, ResponseFunctionToolCall):
                yield from self._call_events(index, item)
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                output_index=index,
                item=item,
                sequence_number=self._next(),
            )
        yield ResponseCompletedEvent(
            type="response.completed",
            sequence_number=self._next(),
            response=self._response("completed", self.output),
        )

    def _message_events(
        self, index: int, item: ResponseOutputMessage
    ) -> Iterator[TResponseStreamEvent]:
        part = item.content[0]
        text = part.text if isinstance(part, ResponseOutputText) else ""
        item_id = item.id
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            output_index=index,
            sequence_number=self._next(),
            item=item.model_copy(update={"content": [], "status": "in_progress"}),
        )
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added",
            item_id=item_id,
            output_index=index,
            content_index=0,
            sequence_number=self._next(),
            part=ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[]),
        )
        for delta in _chunks(text):
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id=item_id,
                output_index=index,
                content_index=0,
                delta=delta,
                logprobs=[],
                sequence_number=self._next(),
            )
        yield ResponseTextDoneEvent(
            type="response.output_text.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
            sequence_number=self._next(),
        )
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=part,
            sequence_number=self._next(),
        )

    def _call_events(
        self, index: int, item: ResponseFunctionToolCall
    ) -> Iterator[TResponseStreamEvent]:
        item_id = item.id or ""
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            output_index=index,
            sequence_number=self._next(),
            item=item.model_copy(update={"arguments": "", "status": "in_progress"}),
        )
        yield ResponseFunctionCallArgumentsDeltaEvent(
            type="response.function_call_arguments.delta",
            item_id=item_id,
            output_index=index,
            delta=item.arguments,
            sequence_number=self._next(),
        )
        yield ResponseFunctionCallArgumentsDoneEvent(
            type="response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            arguments=item.arguments,
            sequence_number=self._next(),
        )


def _chunks(text: str, words_per_chunk: int = 3) -> Iterator[str]:
    """A few words per delta, whitespace kept, so the deltas join back to the text."""
    words = re.findall(r"\S+\s*|\s+", text)
    for start in range(0, len(words), words_per_chunk):
        yield "".join(words[start : start + words_per_chunk])
