"""The local model's decision for one call: the next tool calls, or the reply."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from backend.agent.local.dates import Clock
from backend.agent.local.followups import followup_intents
from backend.agent.local.history import read_conversation
from backend.agent.local.parsing import parse_message
from backend.agent.local.planner import plan
from backend.agent.local.replies import canned
from backend.agent.local.steps import Call

MAX_MESSAGE_CHARS = 1000
TOO_LONG = (
    "That's a long message! I'm the built-in offline assistant and understand short task "
    'requests such as "add call mom tomorrow at 5pm" or "what\'s pending?". '
    "For open conversation, set OPENAI_API_KEY."
)
NO_TOOLS = (
    "I can't reach your task list right now, so I couldn't do that. Please try again in a moment."
)


def respond(
    instructions: str | None, items: str | Sequence[object], tool_names: Collection[str]
) -> list[Call] | str:
    clock = Clock.from_instructions(instructions)
    conversation = read_conversation(items)
    text = conversation.user_text.strip()
    if not text:
        return canned("greeting")
    if len(text) > MAX_MESSAGE_CHARS:
        return TOO_LONG
    intents = followup_intents(conversation, clock) or parse_message(text, clock)
    decision = plan(intents, conversation, clock)
    if isinstance(decision, list) and any(call.name not in tool_names for call in decision):
        return NO_TOOLS
    return decision
