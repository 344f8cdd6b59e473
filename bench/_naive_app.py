"""The baseline for bench.rest_list: the task list as a typical FastAPI + SQLModel tutorial app
writes it (ORM entities, tags loaded by the relationship, the response validated by FastAPI),
over the same tables, with the same token check.

Configured by NAIVE_DATABASE_URL and NAIVE_AUTH_SECRET; run with
`python -m bench._naive_app --port P`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import jwt
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from sqlalchemy import func
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models import Task

engine = create_async_engine(os.environ["NAIVE_DATABASE_URL"])
SECRET = os.environ["NAIVE_AUTH_SECRET"]

app = FastAPI(title="naive tasks")


class TaskRead(SQLModel):
    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    completed_at: datetime | None
    priority: str
    tags: list[str]
    due_at: datetime | None
    remind_at: datetime | None
    remind_before_minutes: int | None
    reminded_at: datetime | None
    recurrence: str | None
    time_zone: str | None
    series_id: str | None
    occurrence: int
    created_at: datetime
    updated_at: datetime


class TaskPageRead(SQLModel):
    items: list[TaskRead]
    total: int
    limit: int
    offset: int


async def get_session() -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine) as session:
        yield session


def current_user(authorization: Annotated[str, Header()]) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise HTTPException(status_code=401, detail="Missing bearer token")
    try:
        claims = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise HTTPException(status_code=401, detail="Invalid token") from exc
    return str(claims["sub"])


Session = Annotated[AsyncSession, Depends(get_session)]
Caller = Annotated[str, Depends(current_user)]


def _read(task: Task) -> TaskRead:
    return TaskRead.model_validate(task, from_attributes=True)


@app.get("/api/{user_id}/tasks", response_model=TaskPageRead)
async def list_tasks(
    user_id: str,
    session: Session,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TaskPageRead:
    if caller != user_id:
        raise HTTPException(status_code=403, detail="Forbidden")
    mine = select(Task).where(Task.user_id == user_id, col(Task.deleted_at).is_(None))
    total = (await session.exec(select(func.count()).select_from(mine.subquery()))).one()
    page = mine.order_by(col(Task.created_at).desc(), col(Task.id).desc())
    tasks = (await session.exec(page.offset(offset).limit(limit))).all()
    return TaskPageRead(
        items=[_read(task) for task in tasks], total=total, limit=limit, offset=offset
    )


@app.get("/api/{user_id}/tasks/{task_id}", response_model=TaskRead)
async def get_task(user_id: str, task_id: int, session: Session, caller: Caller) -> TaskRead:
    if caller != user_id:
        raise HTTPException(status_code=403, detail="Forbidden")
    task = await session.get(Task, task_id)
    if task is None or task.user_id != user_id or task.deleted_at is not None:
        raise HTTPException(status_code=404, detail="Task not found")
    return _read(task)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # As `todo-assistant serve` runs the API: one process, no access log.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
