"""Routes of the event consumers (Dapr subscriptions) and the task history they build."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
