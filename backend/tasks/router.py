"""REST routes for tasks: parse, call the service, return."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Path, Query, Request, Response, status

from backend.deps import PathUser, ReadSession, WriteSession
from backend.errors import ErrorBody
from backend.tasks import service
from backend.tasks.schemas import (
    CompletionChange,
    TaskCreate,
    TaskPage,
    TaskPublic,
    TaskQuery,
    TaskReplace,
    TaskUpdate,
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


@router.get("", response_model=TaskPage)
async def list_tasks(
    user_id: PathUser, session: ReadSession, query: Annotated[TaskQuery, Query()]
) -> TaskPage:
    """List the user's tasks with filters, sort and paging."""
    result = await service.list_tasks(session, user_id, query)
    return TaskPage(
        items=[TaskPublic.model_validate(task) for task in result.items],
        total=result.total,
        limit=query.limit,
        offset=query.offset,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskPublic)
async def create_task(
    user_id: PathUser, session: WriteSession, data: TaskCreate, request: Request, response: Response
) -> TaskPublic:
    """Create a task."""
    task = await service.create_task(session, user_id, data, channel="rest")
    # url_for inserts values verbatim; a header holds only ASCII-safe text.
    response.headers["Location"] = request.url_for(
        "get_task", user_id=quote(user_id, safe=""), task_id=task.id
    ).path
    return TaskPublic.model_validate(task)


@router.get("/{task_id}", response_model=TaskPublic)
async def get_task(user_id: PathUser, session: ReadSession, task_id: TaskId) -> TaskPublic:
    """Get one task."""
    return TaskPublic.model_validate(await service.get_task(session, user_id, task_id))


@router.put("/{task_id}", response_model=TaskPublic)
async def replace_task(
    user_id: PathUser, session: WriteSession, task_id: TaskId, data: TaskReplace
) -> TaskPublic:
    """Replace every editable field of a task."""
    return TaskPublic.model_validate(
        await service.replace_task(session, user_id, task_id, data, channel="rest")
    )


@router.patch("/{task_id}", response_model=TaskPublic)
async def update_task(
    user_id: PathUser, session: WriteSession, task_id: TaskId, changes: TaskUpdate
) -> TaskPublic:
    """Change only the fields sent."""
    return TaskPublic.model_validate(
        await service.update_task(session, user_id, task_id, changes, channel="rest")
    )


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task(user_id: PathUser, session: WriteSession, task_id: TaskId) -> None:
    """Delete a task (soft: it can be restored)."""
    await service.delete_task(session, user_id, task_id, channel="rest")


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
