"""What the local model understood a message to ask for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["complete", "reopen", "delete", "restore", "update"]
ReplyKind = Literal[
    "greeting",
    "thanks",
    "ok",
    "bye",
    "help",
    "unknown",
    "statement",
    "suggest_add",
    "empty_add",
    "refuse_bulk",
    "declined",
    "cancelled",
    "too_many",
    "unclear_change",
    "now",
]


@dataclass(frozen=True)
class Target:
    """Which task(s): ids, words from the title, or "it"/"them" (the task just discussed)."""

    ids: tuple[int, ...] = ()
    words: str | None = None
    pronoun: Literal["one", "many"] | None = None

    def describe(self) -> str:
        if self.ids:
            return ", ".join(f"#{i}" for i in self.ids)
        return f"'{self.words}'" if self.words else "that task"


@dataclass(frozen=True)
class AddIntent:
    title: str
    fields: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        return {"title": self.title, **self.fields}


@dataclass(frozen=True)
class ListIntent:
    arguments: dict[str, Any]
    adjectives: tuple[str, ...] = ()
    qualifiers: tuple[str, ...] = ()
    count_only: bool = False


@dataclass(frozen=True)
class ShowIntent:
    target: Target


@dataclass(frozen=True)
class ActIntent:
    action: Action
    target: Target
    changes: dict[str, Any] = field(default_factory=dict)
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryIntent:
    """ "When did I finish X?" (`action` = completed), or the whole story of a task (None)."""

    target: Target
    action: str | None = None


@dataclass(frozen=True)
class RemindersIntent:
    """ "What reminders do I have?" (`missed` False) or "did I miss any reminders?" (True)."""

    missed: bool = False


@dataclass(frozen=True)
class SnoozeIntent:
    """Re-arm a reminder: `minutes` from now, or at `until` (ISO). No target: the latest one."""

    target: Target | None = None
    minutes: int | None = None
    until: str | None = None


@dataclass(frozen=True)
class SkipIntent:
    """Skip this occurrence of a repeating task."""

    target: Target


@dataclass(frozen=True)
class UndoIntent:
    pass


@dataclass(frozen=True)
class ReplyIntent:
    kind: ReplyKind
    text: str = ""


Intent = (
    AddIntent
    | ListIntent
    | ShowIntent
    | ActIntent
    | HistoryIntent
    | UndoIntent
    | ReplyIntent
    | RemindersIntent
    | SnoozeIntent
    | SkipIntent
)
