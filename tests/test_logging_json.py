"""LOG_FORMAT=json: one JSON object per line, with request and run ids and never a token."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from agents.testing import ScriptedModel

from backend.cli import configure_logging
from backend.observability import QUIET_LOGGERS, JsonFormatter, run_id_var, uvicorn_log_config
from backend.web import request_id_var
from tests.chat import conftest as chat_fixtures
from tests.chat.conftest import AppFactory
from tests.conftest import make_settings, user_token

chat_client = chat_fixtures.chat_client
mcp_url = chat_fixtures.mcp_url


@contextmanager
def bare_root() -> Iterator[None]:
    """The root logger without handlers, as at process start (pytest's own are put back)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = [logging.getLogger(name) for name in (*QUIET_LOGGERS, "uvicorn", "uvicorn.access")]
    saved = [(log, log.level, list(log.handlers), log.propagate) for log in named]
    root.handlers.clear()
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for log, log_level, log_handlers, propagate in saved:
            log.setLevel(log_level)
            log.handlers[:] = log_handlers
            log.propagate = propagate


def lines_of(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_configure_logging_json_writes_one_object_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("backend.test")
    with bare_root():
        configure_logging(make_settings(tmp_path, "sqlite+aiosqlite://", log_format="json"))
        request = request_id_var.set("req-42")
        run = run_id_var.set(7)
        try:
            log.warning("two\nlines")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("it failed")
        finally:
            run_id_var.reset(run)
            request_id_var.reset(request)
        log.warning("outside a request")

    first, failed, outside = lines_of(capsys.readouterr().err)
    assert first["message"] == "two\nlines"
    assert (first["level"], first["logger"]) == ("WARNING", "backend.test")
    assert (first["request_id"], first["run_id"]) == ("req-42", 7)
    stamp = datetime.fromisoformat(str(first["time"]))
    assert stamp.utcoffset() == timedelta(0)
    assert failed["level"] == "ERROR"
    assert "ValueError: boom" in str(failed["exception"])
    assert "request_id" not in outside
    assert "run_id" not in outside


def test_text_format_stays_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with bare_root():
        configure_logging(make_settings(tmp_path, "sqlite+aiosqlite://"))
        logging.getLogger("backend.test").warning("plain")
    err = capsys.readouterr().err
    assert "WARNING backend.test: plain" in err
    assert not err.lstrip().startswith("{")


def test_uvicorn_workers_get_the_same_format(capsys: pytest.CaptureFixture[str]) -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise NotImplementedError

    with bare_root():
        # What uvicorn does with log_config in each worker process.
        uvicorn.Config(app, log_config=uvicorn_log_config("json", "INFO"), log_level="warning")
        logging.getLogger("uvicorn.error").warning("from uvicorn")
        logging.getLogger("backend.test").info("from the app")
        logging.getLogger("mcp.server").info("too chatty")
    entries = lines_of(capsys.readouterr().err)
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("uvicorn.error", "from uvicorn"),
        ("backend.test", "from the app"),
    ]


async def test_a_failed_turn_logs_its_request_and_run_and_no_token(
    chat_client: AppFactory,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    backend = logging.getLogger("backend")
    backend.addHandler(handler)
    token = user_token("dave")
    try:
        async with chat_client(ScriptedModel([RuntimeError("provider down")])) as client:
            response = await client.post(
                "/api/dave/chat",
                json={"message": "hello"},
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-json-1"},
            )
    finally:
        backend.removeHandler(handler)
    assert response.status_code == 502
    text = stream.getvalue()
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature
    entries = lines_of(text)
    failed = [e for e in entries if str(e["message"]).startswith("turn failed")]
    assert failed, text
    assert failed[0]["request_id"] == "req-json-1"
    assert isinstance(failed[0]["run_id"], int)
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
