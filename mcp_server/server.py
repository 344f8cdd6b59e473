"""The MCP server: task tools for AI agents, calling the same task service as the REST API."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar, cast

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AwareDatetime, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from backend.agent.tools import TOOLS, WRITE_TOOLS
from backend.auth.mcp_tokens import ALL_SCOPES, READ_SCOPE, TURN_CHANNELS, mcp_token_config
from backend.config import Settings
from backend.db import Database, is_database_unavailable
from backend.errors import AppError
from backend.events import consumers
from backend.events.outbox import Channel
from backend.models import Task
from backend.observability import Metrics
from backend.reminders import notifications
from backend.tasks import service
from backend.tasks.schemas import (
    MAX_DESCRIPTION,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_RECURRENCE,
    MAX_REMIND_BEFORE_MINUTES,
    MAX_SEARCH,
    MAX_SNOOZE_MINUTES,
    MAX_TAG,
    MAX_TAGS,
    MAX_TASK_ID,
    MAX_TITLE,
    Snooze,
    TaskCreate,
    TaskQuery,
    TaskUpdate,
)
from mcp_server.auth import McpTokenVerifier, WriteScopeGate
from mcp_server.schemas import (
    HistoryEntryView,
    NotificationList,
    NotificationView,
    TaskChanged,
    TaskCreated,
    TaskHistory,
    TaskList,
    TaskView,
)

SERVER_VERSION = "0.1.0"

INSTRUCTIONS = """Manage the signed-in user's todo list. Every tool acts only on that user's tasks.
Find a task's id with list_tasks (use `search` with words from its title) before changing it.
Times are ISO 8601 with a UTC offset, e.g. 2026-12-01T17:00:00+01:00.
Deletes are soft: restore_task undoes one (list_tasks with status="deleted" finds them)."""

logger = logging.getLogger(__name__)

# The code leads, as in the REST answer, so a model or a log reader tells an outage from a bug.
DATABASE_UNAVAILABLE_ERROR = (
    "database_unavailable: The task database is unavailable; try again shortly"
)
T = TypeVar("T")
UserResolver = Callable[[], str]

TaskIdArg = Annotated[
    int, Field(description="The task's id, as shown by list_tasks.", ge=1, le=MAX_TASK_ID)
]
TitleArg = Annotated[
    str,
    Field(
        description=f"Short title, 1-{MAX_TITLE} characters.", min_length=1, max_length=MAX_TITLE
    ),
]
DescriptionArg = Annotated[
    str | None,
    Field(
        description=f"Optional longer notes, up to {MAX_DESCRIPTION} characters.",
        max_length=MAX_DESCRIPTION,
    ),
]
TagArg = Annotated[str, Field(max_length=MAX_TAG)]
PriorityArg = Annotated[
    Literal["low", "medium", "high", "urgent"] | None,
    Field(description="How important the task is."),
]
TagsArg = Annotated[
    list[TagArg] | None,
    Field(
        description=f"Up to {MAX_TAGS} short labels such as 'work' or 'home' (lowercased).",
        max_length=MAX_TAGS,
    ),
]
DueArg = Annotated[
    AwareDatetime | None,
    Field(description="When it is due: ISO 8601 with a UTC offset, e.g. 2026-12-01T17:00:00Z."),
]
RemindArg = Annotated[
    AwareDatetime | None,
    Field(description="When to remind the user: ISO 8601 with a UTC offset."),
]
RemindBeforeArg = Annotated[
    int | None,
    Field(
        description="Remind this many minutes before due_at (60 = an hour before); the "
        "reminder moves with the due time. Needs due_at. Use instead of remind_at.",
        ge=0,
        le=MAX_REMIND_BEFORE_MINUTES,
    ),
]
TimeZoneArg = Annotated[
    str | None,
    Field(
        description="The user's IANA time zone (from your instructions), e.g. Europe/Paris: "
        "a repeating task keeps its local time in it across daylight-saving changes.",
        max_length=64,
    ),
]
RecurrenceArg = Annotated[
    str | None,
    Field(
        description="Repeat rule: daily, weekly, monthly, or an RFC 5545 RRULE such as "
        "FREQ=WEEKLY;BYDAY=MO. Use 'none' to stop repeating.",
        max_length=MAX_RECURRENCE,
    ),
]


def _strict(tool: Tool) -> Tool:
    """Reject unknown arguments instead of silently dropping them."""
    base = tool.fn_metadata.arg_model
    tool.fn_metadata.arg_model = type(
        base.__name__,
        (base,),
        {
            "model_config": ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            "__module__": base.__module__,
        },
    )
    tool.parameters["additionalProperties"] = False
    return tool


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def http_user() -> str:
    """The user of the verified access token (HTTP transport)."""
    token = get_access_token()
    if token is None or not token.subject:
        raise ToolError("Not authenticated")
    return token.subject


def http_channel() -> Channel:
    """Where the change came from: a chat turn's token says which; other clients are `mcp`."""
    token = get_access_token()
    channel = (token.claims or {}).get("channel") if token is not None else None
    return cast(Channel, channel) if channel in TURN_CHANNELS else "mcp"


def http_zone() -> str | None:
    """The user's zone a chat turn's token carries (None for other clients)."""
    token = get_access_token()
    zone = (token.claims or {}).get("tz") if token is not None else None
    return zone if isinstance(zone, str) else None


def stdio_channel() -> Channel:
    return "mcp"


def _require_scope(scope: str) -> None:
    token = get_access_token()
    if token is not None and scope not in token.scopes:
        raise ToolError(f"insufficient_scope: this tool needs the {scope} scope")


async def _changed(
    session: AsyncSession, user_id: str, task: Task, status: Literal["completed", "deleted"]
) -> TaskChanged:
    """The change, with the next occurrence it created when the task repeats."""
    assert task.id is not None
    successor = (
        await service.next_occurrence(session, user_id, task.id)
        if task.series_id is not None
        else None
    )
    if successor is not None and successor.deleted_at is not None:
        successor = None  # a series delete took it too
    return TaskChanged(
        task_id=task.id,
        status=status,
        title=task.title,
        next_task_id=None if successor is None else successor.id,
        next_due_at=None if successor is None else successor.due_at,
    )


class TaskTools:
    """The tool functions; each call opens its own database session."""

    def __init__(
        self,
        database: Database,
        resolve_user: UserResolver,
        resolve_channel: Callable[[], Channel] = stdio_channel,
        metrics: Metrics | None = None,
    ) -> None:
        self.database = database
        self.resolve_user = resolve_user
        self.resolve_channel = resolve_channel
        self.metrics = metrics or Metrics()

    async def _run(self, tool: str, action: Callable[[AsyncSession, str], Awaitable[T]]) -> T:
        """Run `action` for the caller in one transaction, with the scope the table gives `tool`.

        Counted by outcome: ok, or error (refused scope, bad input, not found, outage, bug).
        Arguments the SDK rejects before calling the tool are not counted here.
        """
        began = time.perf_counter()
        ok = False
        try:
            result = await self._call(tool, action)
            ok = True
            return result
        finally:
            self.metrics.mcp_tool_call(tool, ok, time.perf_counter() - began)

    async def _call(self, tool: str, action: Callable[[AsyncSession, str], Awaitable[T]]) -> T:
        spec = TOOLS[tool]
        _require_scope(spec.scope)
        user_id = self.resolve_user()
        try:
            async with self.database.session_scope(write=spec.changes_tasks) as session:
                return await action(session, user_id)
        except ValidationError as exc:
            raise ToolError(_validation_message(exc)) from exc
        except Exception as exc:
            if is_database_unavailable(exc):
                # One line, no traceback: an outage is expected and the SDK would log the rest.
                logger.error("database unavailable in MCP tool %s: %s", tool, type(exc).__name__)
                raise ToolError(DATABASE_UNAVAILABLE_ERROR) from exc
            if isinstance(exc, AppError):
                raise ToolError(exc.message) from exc
            raise

    async def add_task(
        self,
        title: TitleArg,
        description: DescriptionArg = None,
        priority: PriorityArg = None,
        tags: TagsArg = None,
        due_at: DueArg = None,
        remind_at: RemindArg = None,
        remind_before_minutes: RemindBeforeArg = None,
        recurrence: RecurrenceArg = None,
        time_zone: TimeZoneArg = None,
    ) -> TaskCreated:
        """Create a task for the user and return it with its new id.

        Use for "add", "remind me to", "I need to". Put dates in due_at (not in the title);
        keep the title short and in the user's words. "Remind me to X at 5pm" sets both
        due_at and remind_at to 5pm; "remind me an hour before" is remind_before_minutes=60.
        For repeating tasks ("every Monday at 9") set recurrence, the first due_at and
        time_zone. A reminder fires once, as a notification and a note in the chat."""
        fields: dict[str, Any] = {
            "title": title,
            "description": description,
            "priority": priority,
            "tags": tags,
            "due_at": due_at,
            "remind_at": remind_at,
            "remind_before_minutes": remind_before_minutes,
            "recurrence": recurrence,
            "time_zone": time_zone,
        }

        async def create(session: AsyncSession, user_id: str) -> TaskCreated:
            data = TaskCreate.model_validate({k: v for k, v in fields.items() if v is not None})
            task = await service.create_task(
                session, user_id, data, channel=self.resolve_channel(), zone=http_zone()
            )
            view = TaskView.of(task)
            return TaskCreated(task_id=view.id, **view.model_dump())

        return await self._run("add_task", create)

    async def list_tasks(
        self,
        status: Annotated[
            Literal["all", "pending", "completed", "deleted"],
            Field(
                description="pending = not done yet; completed = done; deleted = deleted "
                "tasks (restore_task brings one back). all, pending and completed never "
                "include deleted tasks."
            ),
        ] = "all",
        priority: PriorityArg = None,
        tags: Annotated[
            list[TagArg] | None,
            Field(description="Only tasks carrying every one of these tags.", max_length=MAX_TAGS),
        ] = None,
        search: Annotated[
            str | None,
            Field(
                description="Words to find in the title or description (case-insensitive).",
                max_length=MAX_SEARCH,
            ),
        ] = None,
        due_before: Annotated[
            AwareDatetime | None, Field(description="Only tasks due before this time.")
        ] = None,
        due_after: Annotated[
            AwareDatetime | None, Field(description="Only tasks due at or after this time.")
        ] = None,
        overdue: Annotated[
            bool, Field(description="Only unfinished tasks whose due time has passed.")
        ] = False,
        has_reminder: Annotated[
            bool,
            Field(
                description="Only unfinished tasks with a reminder still to come (for "
                "'what reminders do I have?'; sort by remind_at)."
            ),
        ] = False,
        sort: Annotated[
            Literal["created_at", "updated_at", "due_at", "remind_at", "priority", "title"],
            Field(description="Sort key."),
        ] = "created_at",
        order: Annotated[
            Literal["asc", "desc"] | None,
            Field(description="Default: newest first for dates created/updated, else ascending."),
        ] = None,
        limit: Annotated[
            int, Field(description=f"Page size, 1-{MAX_PAGE}.", ge=1, le=MAX_PAGE)
        ] = 50,
        offset: Annotated[
            int, Field(description="Tasks to skip, for paging.", ge=0, le=MAX_OFFSET)
        ] = 0,
    ) -> TaskList:
        """List the user's tasks, optionally filtered, sorted and paged.

        Use it to answer questions about tasks and to find a task's id from words in its title
        before completing, updating or deleting it. `total` counts all matches. To bring back
        a deleted task, find it with status="deleted" (and `search`), then call restore_task."""
        query_fields: dict[str, Any] = {
            "status": status,
            "priority": priority,
            "tag": tags or [],
            "q": search,
            "due_before": due_before,
            "due_after": due_after,
            "overdue": overdue,
            "has_reminder": has_reminder,
            "sort": sort,
            "order": order,
            "limit": limit,
            "offset": offset,
        }

        async def run_list(session: AsyncSession, user_id: str) -> TaskList:
            query = TaskQuery.model_validate(query_fields)
            result = await service.list_tasks(session, user_id, query)
            return TaskList(tasks=[TaskView.of(t) for t in result.items], total=result.total)

        return await self._run("list_tasks", run_list)

    async def get_task(self, task_id: TaskIdArg) -> TaskView:
        """Get one task by id, with all its details."""

        async def get(session: AsyncSession, user_id: str) -> TaskView:
            return TaskView.of(await service.get_task(session, user_id, task_id))

        return await self._run("get_task", get)

    async def complete_task(self, task_id: TaskIdArg) -> TaskChanged:
        """Mark a task as done. Completing a task that is already done changes nothing.

        Completing a repeating task creates its next occurrence: next_task_id and
        next_due_at say which (tell the user when it is next due)."""

        async def complete(session: AsyncSession, user_id: str) -> TaskChanged:
            task = await service.set_completion(
                session, user_id, task_id, True, channel=self.resolve_channel()
            )
            return await _changed(session, user_id, task, "completed")

        return await self._run("complete_task", complete)

    async def reopen_task(self, task_id: TaskIdArg) -> TaskChanged:
        """Mark a done task as not done (pending) again."""

        async def reopen(session: AsyncSession, user_id: str) -> TaskChanged:
            task = await service.set_completion(
                session, user_id, task_id, False, channel=self.resolve_channel()
            )
            return TaskChanged(task_id=task_id, status="pending", title=task.title)

        return await self._run("reopen_task", reopen)

    async def update_task(
        self,
        task_id: TaskIdArg,
        title: Annotated[
            str | None,
            Field(
                description=f"New title, 1-{MAX_TITLE} characters.",
                min_length=1,
                max_length=MAX_TITLE,
            ),
        ] = None,
        description: Annotated[
            str | None,
            Field(
                description="New notes; an empty string clears them.", max_length=MAX_DESCRIPTION
            ),
        ] = None,
        priority: PriorityArg = None,
        tags: Annotated[
            list[TagArg] | None,
            Field(
                description="The full new tag list (replaces the old one); [] clears.",
                max_length=MAX_TAGS,
            ),
        ] = None,
        due_at: DueArg = None,
        clear_due_at: Annotated[bool, Field(description="True removes the due time.")] = False,
        remind_at: RemindArg = None,
        remind_before_minutes: RemindBeforeArg = None,
        clear_reminder: Annotated[
            bool, Field(description="True removes the reminder (remind_at and the offset).")
        ] = False,
        recurrence: RecurrenceArg = None,
        time_zone: TimeZoneArg = None,
    ) -> TaskChanged:
        """Change a task. Only the arguments you pass change; everything else stays as it is.

        To snooze a reminder use snooze_reminder. A new remind_at on a repeating task sets how
        long before its due time every occurrence reminds. recurrence='none' stops a task
        repeating (this occurrence stays)."""
        changes: dict[str, Any] = {
            "title": title,
            "priority": priority,
            "tags": tags,
            "due_at": due_at,
            "remind_at": remind_at,
            "remind_before_minutes": remind_before_minutes,
            "recurrence": recurrence,
            "time_zone": time_zone,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        if description is not None:
            changes["description"] = description or None
        if clear_due_at:
            changes["due_at"] = None
        if clear_reminder:
            changes["remind_at"] = None
            changes["remind_before_minutes"] = None

        async def update(session: AsyncSession, user_id: str) -> TaskChanged:
            if not changes:
                raise ToolError("Nothing to change: pass at least one field to update")
            task = await service.update_task(
                session,
                user_id,
                task_id,
                TaskUpdate.model_validate(changes),
                channel=self.resolve_channel(),
                zone=http_zone(),
            )
            return TaskChanged(task_id=task_id, status="updated", title=task.title)

        return await self._run("update_task", update)

    async def delete_task(
        self,
        task_id: TaskIdArg,
        scope: Annotated[
            Literal["occurrence", "series"],
            Field(
                description="Only for a repeating task: 'occurrence' deletes this one and the "
                "series goes on with the next; 'series' deletes every occurrence, done ones "
                "too. Ask the user which one they mean."
            ),
        ] = "occurrence",
    ) -> TaskChanged:
        """Delete a task. It can be brought back with restore_task."""

        async def delete(session: AsyncSession, user_id: str) -> TaskChanged:
            task = await service.delete_task(
                session, user_id, task_id, channel=self.resolve_channel(), scope=scope
            )
            return await _changed(session, user_id, task, "deleted")

        return await self._run("delete_task", delete)

    async def restore_task(self, task_id: TaskIdArg) -> TaskChanged:
        """Bring back a deleted task (undo delete_task)."""

        async def restore(session: AsyncSession, user_id: str) -> TaskChanged:
            task = await service.restore_task(
                session, user_id, task_id, channel=self.resolve_channel()
            )
            return TaskChanged(task_id=task_id, status="restored", title=task.title)

        return await self._run("restore_task", restore)

    async def task_history(
        self,
        task_id: TaskIdArg,
        limit: Annotated[
            int,
            Field(description=f"How many of the latest changes, 1-{MAX_PAGE}.", ge=1, le=MAX_PAGE),
        ] = 20,
    ) -> TaskHistory:
        """Show what happened to a task: each change with when, from where and what changed.

        Use it for "when did I finish X?" or "what did I change on X?": find the task's id
        with list_tasks first. Deleted tasks keep their history. Entries are oldest first;
        a change made a moment ago may take a few milliseconds to appear."""

        async def history(session: AsyncSession, user_id: str) -> TaskHistory:
            page = await consumers.task_history(session, user_id, task_id, limit=limit)
            entries = [
                HistoryEntryView(
                    version=row.version,
                    action=cast(Any, row.action),
                    channel=row.channel,
                    at=row.occurred_at,
                    changes=row.changes or {},
                )
                for row in reversed(page.entries)
            ]
            return TaskHistory(task_id=task_id, title=page.task.title, entries=entries)

        return await self._run("task_history", history)

    async def skip_occurrence(self, task_id: TaskIdArg) -> TaskChanged:
        """Skip this occurrence of a repeating task ("skip this week's X"): it is put away
        and the next occurrence is created (next_task_id, next_due_at). The series goes on;
        to end it, use update_task with recurrence='none'."""

        async def skip(session: AsyncSession, user_id: str) -> TaskChanged:
            result = await service.skip_occurrence(
                session, user_id, task_id, channel=self.resolve_channel()
            )
            return TaskChanged(
                task_id=task_id,
                status="skipped",
                title=result.skipped.title,
                next_task_id=None if result.next is None else result.next.id,
                next_due_at=None if result.next is None else result.next.due_at,
            )

        return await self._run("skip_occurrence", skip)

    async def snooze_reminder(
        self,
        task_id: TaskIdArg,
        minutes: Annotated[
            int | None,
            Field(description="Remind again in this many minutes.", ge=1, le=MAX_SNOOZE_MINUTES),
        ] = None,
        until: Annotated[
            AwareDatetime | None,
            Field(description="Or remind again at this time (ISO 8601 with a UTC offset)."),
        ] = None,
    ) -> TaskView:
        """Snooze a task's reminder ("snooze that for 10 minutes", "remind me again
        tomorrow morning"): pass minutes or until, not both. It fires again then, even if it
        fired already; a repeating task's later occurrences keep their usual reminder."""

        async def snooze(session: AsyncSession, user_id: str) -> TaskView:
            sent = {"minutes": minutes, "until": until}
            when = Snooze.model_validate({k: v for k, v in sent.items() if v is not None})
            task = await service.snooze_reminder(
                session, user_id, task_id, when.moment(), channel=self.resolve_channel()
            )
            return TaskView.of(task)

        return await self._run("snooze_reminder", snooze)

    async def list_notifications(
        self,
        unread_only: Annotated[bool, Field(description="Only the ones not read yet.")] = False,
        limit: Annotated[int, Field(description="How many, 1-50.", ge=1, le=50)] = 10,
    ) -> NotificationList:
        """The reminders that have fired for the user, unread first, newest first.

        For "did I miss any reminders?". To see reminders still to come, use list_tasks
        with has_reminder=true instead."""

        async def run_list(session: AsyncSession, user_id: str) -> NotificationList:
            page, _total, unread = await notifications.list_notifications(
                session, user_id, unread_only=unread_only, limit=limit, offset=0
            )
            views = [NotificationView.of(row) for row in page]
            return NotificationList(notifications=views, unread=unread)

        return await self._run("list_notifications", run_list)

    def as_tools(self) -> list[Tool]:
        """One tool per row of the table: the method of the same name, the row's hints."""
        return [
            _strict(Tool.from_function(getattr(self, name), annotations=spec.annotations()))
            for name, spec in TOOLS.items()
        ]


def versioned(release: str, tools: list[Tool]) -> str:
    """The release with a digest of the tool list as its local part ("0.1.0+tools.1a2b3c4d").

    The server stamps its version on every result, so a client that keeps the tool list
    (the API does) sees a changed list on its next call, whether or not the release moved.
    """
    described = [
        tool.model_dump(
            mode="json",
            include={"name", "title", "description", "parameters", "annotations", "icons", "meta"},
        )
        | {"output": tool.output_schema}
        for tool in tools
    ]
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return f"{release}+tools.{digest[:12]}"


def _quietly(build: Callable[[], MCPServer]) -> MCPServer:
    """Build the server without letting the SDK reconfigure the root logger."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        return build()
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def build_server(
    settings: Settings,
    database: Database,
    resolve_user: UserResolver,
    metrics: Metrics | None = None,
) -> MCPServer:
    http = resolve_user is http_user
    channel = http_channel if http else stdio_channel
    tools = TaskTools(database, resolve_user, channel, metrics).as_tools()
    return _quietly(
        lambda: MCPServer(
            "todo-assistant",
            instructions=INSTRUCTIONS,
            version=versioned(SERVER_VERSION, tools),
            tools=tools,
            token_verifier=McpTokenVerifier(mcp_token_config(settings)) if http else None,
            auth=AuthSettings(
                issuer_url=settings.mcp_token_issuer,
                resource_server_url=settings.mcp_resource_url,
                required_scopes=[READ_SCOPE],
                validate_token_resource=False,  # the verifier checks `aud` itself
            )
            if http
            else None,
        )
    )


def _advertise_all_scopes(server: MCPServer, app: Starlette) -> None:
    """List tasks:write in the protected-resource metadata too.

    The SDK derives `scopes_supported` from the endpoint-wide required scope (tasks:read), so
    a client that picks its scopes from the metadata would never ask for tasks:write.
    """
    auth = server.settings.auth
    if auth is None or auth.resource_server_url is None:
        return
    ours = create_protected_resource_routes(
        resource_url=auth.resource_server_url,
        authorization_servers=[auth.issuer_url],
        scopes_supported=list(ALL_SCOPES),
    )
    paths = {route.path for route in ours}
    others = [r for r in app.router.routes if getattr(r, "path", None) not in paths]
    app.router.routes[:] = [*ours, *others]


def create_http_app(settings: Settings) -> Starlette:
    """The streamable-HTTP ASGI app: stateless, JSON responses, bearer auth, Host/Origin checks."""
    database = Database.for_server(settings)
    # This app's own registry (see backend.observability): tool calls and the pool.
    metrics = Metrics()
    metrics.watch_pool(lambda: database.engine)
    server = build_server(settings, database, http_user, metrics)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=settings.mcp_allowed_hosts,
        allowed_origins=settings.mcp_allowed_origins,
    )

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    server.custom_route("/healthz", methods=["GET"])(healthz)
    if settings.metrics_enabled:
        server.custom_route("/metrics", methods=["GET"])(metrics.endpoint)
    inner = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        transport_security=security,
    )
    _advertise_all_scopes(server, inner)
    inner_lifespan = inner.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner_lifespan(app):
            try:
                yield
            finally:
                await database.dispose()

    inner.router.lifespan_context = lifespan
    inner.state.metrics = metrics
    # Appended, not added: inside the SDK's authentication middleware, so the gate reads a
    # body only once the SDK has accepted the token.
    inner.user_middleware.append(
        Middleware(
            WriteScopeGate,
            write_tools=WRITE_TOOLS,
            resource_metadata_url=str(build_resource_metadata_url(settings.mcp_resource_url)),  # type: ignore[arg-type]
            max_body_bytes=settings.max_body_bytes,
        )
    )
    return inner
