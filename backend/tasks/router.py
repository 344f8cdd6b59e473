"""REST routes for tasks: parse, call the service, return."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from pydantic_core import to_json

from backend.deps import PathUser, ReadSession, WriteSession
from backend.errors import ErrorBody, InvalidInput
from backend.tasks import service
from backend.tasks.schemas import (
    CompletionChange,
    Snooze,
    TaskCreate,
    TaskPage,
    TaskPublic,
    TaskQuery,
    TaskReplace,
    TaskUpdate,
    zone_enum,
    zone_names,
)
from backend.web import ERROR_RESPONSES

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorBody, "description": "No such task for this user"},
    },
)

TaskId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The task's id.")]
ZoneHeader = Annotated[
    str | None,
    Header(
        description="The user's IANA zone, used when the body names no time_zone: a repeating "
        "task keeps its local time in it across DST.",
        json_schema_extra=zone_enum,
    ),
]


class SkipOutcome(BaseModel):
    skipped: TaskPublic = Field(description="The occurrence passed over (deleted, restorable).")
    next: TaskPublic | None = Field(description="The next occurrence; null when the series ended.")


def _zone(x_timezone: str | None) -> str | None:
    if x_timezone is None:
        return None
    if x_timezone not in zone_names():
        raise InvalidInput(
            f"X-Timezone must be an IANA zone name such as Europe/Paris, not {x_timezone!r}",
            code="invalid_timezone",
        )
    return x_timezone


def _json(content: Any) -> Response:
    """Records already shaped as the response model, written straight to JSON: validating
    them again would cost more than the query. Pydantic's serialiser, as the model's own
    dump would use, so the bytes (dates included) are the same."""
    return Response(content=to_json(content), media_type="application/json")


@router.get("", response_model=TaskPage)
async def list_tasks(
    user_id: PathUser, session: ReadSession, query: Annotated[TaskQuery, Query()]
) -> Response:
    """List the user's tasks with filters, sort and paging."""
    page = await service.list_task_records(session, user_id, query)
    return _json(
        {"items": page.items, "total": page.total, "limit": query.limit, "offset": query.offset}
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskPublic)
async def create_task(
    user_id: PathUser,
    session: WriteSession,
    data: TaskCreate,
    request: Request,
    response: Response,
    x_timezone: ZoneHeader = None,
) -> TaskPublic:
    """Create a task."""
    task = await service.create_task(session, user_id, data, channel="rest", zone=_zone(x_timezone))
    # url_for inserts values verbatim; a header holds only ASCII-safe text.
    response.headers["Location"] = request.url_for(
        "get_task", user_id=quote(user_id, safe=""), task_id=task.id
    ).path
    return TaskPublic.model_validate(task)


@router.get("/{task_id}", response_model=TaskPublic)
async def get_task(user_id: PathUser, session: ReadSession, task_id: TaskId) -> Response:
    """Get one task."""
    return _json(await service.get_task_record(session, user_id, task_id))


@router.put("/{task_id}", response_model=TaskPublic)
async def replace_task(
    user_id: PathUser,
    session: WriteSession,
    task_id: TaskId,
    data: TaskReplace,
    x_timezone: ZoneHeader = None,
) -> TaskPublic:
    """Replace every editable field of a task."""
    return TaskPublic.model_validate(
        await service.replace_task(
            session, user_id, task_id, data, channel="rest", zone=_zone(x_timezone)
        )
    )


@router.patch("/{task_id}", response_model=TaskPublic)
async def update_task(
    user_id: PathUser,
    session: WriteSession,
    task_id: TaskId,
    changes: TaskUpdate,
    x_timezone: ZoneHeader = None,
) -> TaskPublic:
    """Change only the fields sent."""
    return TaskPublic.model_validate(
        await service.update_task(
            session, user_id, task_id, changes, channel="rest", zone=_zone(x_timezone)
        )
    )


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task(
    user_id: PathUser,
    session: WriteSession,
    task_id: TaskId,
    scope: Annotated[
        Literal["occurrence", "series"],
        Query(
            description="For a repeating task: `occurrence` deletes this one and the series "
            "goes on with the next; `series` deletes every occurrence, done ones too."
        ),
    ] = "occurrence",
) -> None:
    """Delete a task (soft: it can be restored)."""
    await service.delete_task(session, user_id, task_id, channel="rest", scope=scope)


@router.post(
    "/{task_id}/skip",
    response_model=SkipOutcome,
    responses={409: {"model": ErrorBody, "description": "not_repeating or task_completed"}},
)
async def skip_occurrence(user_id: PathUser, session: WriteSession, task_id: TaskId) -> SkipOutcome:
    """Skip this occurrence of a repeating task: the next one is created now."""
    result = await service.skip_occurrence(session, user_id, task_id, channel="rest")
    return SkipOutcome(
        skipped=TaskPublic.model_validate(result.skipped),
        next=None if result.next is None else TaskPublic.model_validate(result.next),
    )


@router.post(
    "/{task_id}/snooze",
    response_model=TaskPublic,
    responses={409: {"model": ErrorBody, "description": "task_completed"}},
)
async def snooze_reminder(
    user_id: PathUser, session: WriteSession, task_id: TaskId, snooze: Snooze
) -> TaskPublic:
    """Remind again in `minutes`, or at `until`."""
    return TaskPublic.model_validate(
        await service.snooze_reminder(session, user_id, task_id, snooze.moment(), channel="rest")
    )


@router.patch("/{task_id}/complete", response_model=TaskPublic)
async def complete_task(
    user_id: PathUser,
    session: WriteSession,
    task_id: TaskId,
    change: Annotated[CompletionChange | None, Body()] = None,
) -> TaskPublic:
    """Toggle completion, or set it with `{"completed": true|false}`."""
    completed = change.completed if change is not None else None
    return TaskPublic.model_validate(
        await service.set_completion(session, user_id, task_id, completed, channel="rest")
    )


@router.post("/{task_id}/restore", response_model=TaskPublic)
async def restore_task(user_id: PathUser, session: WriteSession, task_id: TaskId) -> TaskPublic:
    """Undo a delete."""
    return TaskPublic.model_validate(
        await service.restore_task(session, user_id, task_id, channel="rest")
    )
