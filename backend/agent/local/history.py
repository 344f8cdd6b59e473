"""Reading the conversation the model is given: turns, tool calls and their results."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.agent.tools import WRITE_TOOLS

_GENERIC_FAILURE = "An error occurred while running the tool"


@dataclass(frozen=True)
class ToolResult:
    """One tool call and what came back: JSON data, or an error message."""

    name: str
    arguments: dict[str, Any]
    data: dict[str, Any] | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.data is not None

    def task_ids(self) -> list[int]:
        if not self.ok or self.data is None:
            return []
        if isinstance(self.data.get("tasks"), list):
            return [t["id"] for t in self.tasks() if isinstance(t.get("id"), int)]
        for key in ("task_id", "id"):
            if isinstance(self.data.get(key), int):
                return [self.data[key]]
        return []

    def tasks(self) -> list[dict[str, Any]]:
        tasks = (self.data or {}).get("tasks")
        return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []

    def title(self) -> str | None:
        title = (self.data or {}).get("title")
        return title if isinstance(title, str) else None


@dataclass(frozen=True)
class Turn:
    """An earlier exchange: what the user said, the tools used, what the assistant replied."""

    user_text: str
    results: list[ToolResult] = field(default_factory=list)
    reply: str = ""


@dataclass(frozen=True)
class Conversation:
    user_text: str
    current: list[ToolResult]
    earlier: list[Turn]

    @property
    def last_turn(self) -> Turn | None:
        return self.earlier[-1] if self.earlier else None


def as_dict(item: object) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        return dumped if isinstance(dumped, dict) else {}
    return {}


def content_text(content: object) -> str:
    """Text of a message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if isinstance(content, Iterable):
        return "\n".join(t for t in (content_text(part) for part in content) if t)
    return ""


def parse_output(name: str, arguments: dict[str, Any], output: object) -> ToolResult:
    """A function_call_output's `output` (JSON text, text parts, or a dict) as a result."""
    text = ""
    for _ in range(3):  # a text part may hold JSON text that is itself a text part
        if isinstance(output, Mapping) and not _is_text_part(output):
            return ToolResult(name, arguments, dict(output), None)
        text = content_text(output).strip()
        output = _json_value(text)
        if output is None:
            break
    error = text or "the tool returned nothing"
    error = re.sub(r"^Error executing tool \w+:\s*", "", error)
    if error.startswith(_GENERIC_FAILURE):
        error = "the task service could not be reached"
    return ToolResult(name, arguments, None, error)


def _is_text_part(value: Mapping[str, Any]) -> bool:
    return value.get("type") in ("text", "input_text", "output_text") and isinstance(
        value.get("text"), str
    )


def _json_value(text: str) -> object:
    """JSON objects and text-part lists in `text`, or None for plain text."""
    if not text.startswith(("{", "[")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("result"), dict):
        return value["result"]
    if isinstance(value, list) and all(isinstance(v, Mapping) and _is_text_part(v) for v in value):
        return value if value else None
    return value if isinstance(value, dict) else None


def _arguments(raw: object) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        try:
            value = json.loads(raw or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def read_conversation(items: str | Sequence[object]) -> Conversation:
    if isinstance(items, str):
        return Conversation(items, [], [])
    parsed = [as_dict(item) for item in items]
    outputs = {
        str(i.get("call_id")): i.get("output")
        for i in parsed
        if i.get("type") == "function_call_output"
    }
    turns: list[Turn] = []
    user: str | None = None
    results: list[ToolResult] = []
    replies: list[str] = []
    for item in parsed:
        kind, role = item.get("type"), item.get("role")
        if role == "user" and kind in (None, "message"):
            # Notes before the first message (a reminder that fired) are a turn of their own.
            if user is not None or replies:
                turns.append(Turn(user or "", results, "\n".join(replies)))
            user, results, replies = content_text(item.get("content")), [], []
        elif kind == "function_call":
            name, call_id = str(item.get("name", "")), str(item.get("call_id"))
            result = parse_output(name, _arguments(item.get("arguments")), outputs.get(call_id))
            results.append(result)
        elif role == "assistant":
            replies.append(content_text(item.get("content")))
    return Conversation(user or "", results, turns)


def task_of(result: ToolResult) -> dict[str, Any]:
    data = dict(result.data or {})
    data.setdefault("id", data.get("task_id"))
    return data


def recent_tasks(conversation: Conversation) -> list[dict[str, Any]]:
    """The tasks the latest exchange that mentioned any was about ("it", "them")."""
    for turn in reversed(conversation.earlier):
        writes = [task_of(r) for r in turn.results if r.ok and r.name in WRITE_TOOLS]
        reads = [t for r in turn.results if r.ok for t in (r.tasks() or [task_of(r)])]
        said = [int(n) for n in re.findall(r"#(\d+)", turn.reply)]
        shown = [t for t in reads if t.get("id") in said]  # the reads shown, not all searched
        tasks = writes or [t for t in shown or reads if isinstance(t.get("id"), int)]
        tasks = tasks or [{"id": task_id} for task_id in said]
        if tasks:
            return list({t["id"]: t for t in tasks if isinstance(t.get("id"), int)}.values())
    return []


_LISTED = re.compile(r"^- #(?P<id>\d+) (?P<title>.+?)(?: \(done\))?(?: \u00b7 .*)?$", re.MULTILINE)


def listed(text: str) -> list[dict[str, Any]]:
    """The tasks a reply showed as a list ("- #4 Buy milk · due ..."), in order."""
    return [{"id": int(m.group("id")), "title": m.group("title")} for m in _LISTED.finditer(text)]


def shown_list(conversation: Conversation) -> list[dict[str, Any]]:
    """The list the assistant showed last ("the third one" is its third line)."""
    return next(
        (t for t in map(listed, (t.reply for t in reversed(conversation.earlier))) if t), []
    )


def deleted_tasks(conversation: Conversation) -> dict[int, str]:
    """Tasks deleted in this conversation and not restored since: id -> title."""
    deleted: dict[int, str] = {}
    for turn in conversation.earlier:
        for result in turn.results:
            if not result.ok or not result.task_ids():
                continue
            task_id = result.task_ids()[0]
            if result.name == "delete_task":
                deleted[task_id] = result.title() or ""
            elif result.name == "restore_task":
                deleted.pop(task_id, None)
    return deleted


def last_writes(conversation: Conversation) -> list[ToolResult]:
    """The successful changes of the latest turn that made any (for "undo")."""
    for turn in reversed(conversation.earlier):
        writes = [r for r in turn.results if r.ok and r.name in WRITE_TOOLS]
        if writes:
            return writes
    return []
