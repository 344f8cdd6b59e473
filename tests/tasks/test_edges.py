"""The REST front door's edges: odd user ids and text, the documented contract, 405, logs, docs."""

from __future__ import annotations

import logging
import re
import sys
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pydantic
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.db import Database
from backend.main import create_app
from backend.tasks.schemas import SPACE_CLASS, TaskCreate
from tests.conftest import auth, make_settings
from tests.tasks.test_bola import table_dump
from tests.tasks.test_input import assert_rejected

ALICE = "alice"
BASE = f"/api/{ALICE}/tasks"
JSON = {"Content-Type": "application/json"}


def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def request_schema(app: FastAPI, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document(app)["components"]["schemas"][name]
    return schema


def branch(field: dict[str, Any], kind: str) -> dict[str, Any]:
    """The `kind` branch of an optional field's schema (or the schema itself)."""
    for option in field.get("anyOf", [field]):
        if option.get("type") == kind:
            found: dict[str, Any] = option
            return found
    raise AssertionError(f"no {kind} branch in {field}")


# --- user ids that are not ASCII -----------------------------------------------------------

ODD_USER_IDS = {
    "cyrillic": "пользователь",
    "zero-width space": "a\u200bb",
    "emoji": "user-😀",
    "url syntax": "a?b#c%d e",
}


@pytest.mark.parametrize("user_id", ODD_USER_IDS.values(), ids=ODD_USER_IDS)
async def test_a_user_id_that_is_not_ascii_creates_a_task_with_a_usable_location(
    client: httpx.AsyncClient, user_id: str
) -> None:
    path = f"/api/{quote(user_id, safe='')}/tasks"

    created = await client.post(path, json={"title": "hello"}, headers=auth(user_id))

    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location == f"{path}/{created.json()['id']}"
    assert location.isascii()
    fetched = await client.get(location, headers=auth(user_id))
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["user_id"] == user_id


# --- text that is not Unicode --------------------------------------------------------------

LONE_SURROGATE_TAG = '{"title": "t", "tags": ["x\\ud800"]}'


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_a_lone_surrogate_in_a_tag_is_a_422_like_in_a_title(
    client: httpx.AsyncClient, database: Database, method: str
) -> None:
    created = await client.post(BASE, json={"title": "keep", "tags": ["keep"]}, headers=auth(ALICE))
    url = BASE if method == "POST" else f"{BASE}/{created.json()['id']}"
    before = await table_dump(database)

    response = await client.request(
        method, url, content=LONE_SURROGATE_TAG, headers={**auth(ALICE), **JSON}
    )

    assert_rejected(response, 422, "validation_error")
    assert response.json()["errors"][0]["loc"][:2] == ["body", "tags"]
    assert await table_dump(database) == before


# --- the OpenAPI document says what the server accepts -------------------------------------

TAG_SAMPLES = [
    "work",
    "#Work",
    "##urgent",
    "  padded\t",
    "x" * 32,
    "İ" * 32,
    "naïve-ünïcode",
    "a#b",
    "",
    " ",
    "#",
    "# work",
    "two words",
    "a,b",
    "x" * 33,
    "nul\x00",
    "no\u3000break",
    "file\x1csep",
]


async def test_every_sample_tag_is_accepted_exactly_when_the_documented_pattern_matches(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    items = branch(request_schema(app, "TaskCreate")["properties"]["tags"], "array")["items"]
    pattern = re.compile(items["pattern"])

    for tag in TAG_SAMPLES:
        response = await client.post(BASE, json={"title": "t", "tags": [tag]}, headers=auth(ALICE))
        documented = pattern.search(tag) is not None
        assert response.status_code == (201 if documented else 422), (tag, response.text)


async def test_the_list_filter_documents_the_same_tag_pattern(app: FastAPI) -> None:
    create_items = branch(request_schema(app, "TaskCreate")["properties"]["tags"], "array")
    parameters = document(app)["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    (tag,) = [parameter for parameter in parameters if parameter["name"] == "tag"]

    assert branch(tag["schema"], "array")["items"]["pattern"] == create_items["items"]["pattern"]


def test_the_spelled_out_whitespace_is_exactly_what_python_strips() -> None:
    everything = "".join(map(chr, range(sys.maxunicode + 1)))

    matched = re.findall(f"[{SPACE_CLASS}]", everything)

    assert matched == [character for character in everything if character.isspace()]


@cache
def _documented_pattern(name: str, field: str) -> str:
    app = create_app(make_settings(Path("unused"), "sqlite+aiosqlite://"))
    pattern: str = branch(request_schema(app, name)["properties"][field], "string")["pattern"]
    return pattern


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_every_recurrence_the_documented_pattern_matches_is_accepted(data: st.DataObject) -> None:
    value = data.draw(
        st.from_regex(_documented_pattern("TaskCreate", "recurrence"), fullmatch=True)
    )
    if len(value) <= 500:
        TaskCreate(title="t", recurrence=value)


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_title_the_documented_pattern_matches_is_accepted(data: st.DataObject) -> None:
    value = data.draw(st.from_regex(_documented_pattern("TaskCreate", "title"), fullmatch=True))
    assert 1 <= len(TaskCreate(title=value).title) <= 200


@pytest.mark.parametrize("field", ["title", "priority", "completed"])
async def test_patch_null_for_a_required_field_is_refused_and_not_documented(
    app: FastAPI, client: httpx.AsyncClient, field: str
) -> None:
    created = await client.post(BASE, json={"title": "keep"}, headers=auth(ALICE))
    schema = request_schema(app, "TaskUpdate")["properties"][field]

    response = await client.patch(
        f"{BASE}/{created.json()['id']}", json={field: None}, headers=auth(ALICE)
    )

    assert_rejected(response, 422, "validation_error")
    assert "null" not in str(schema)
    assert "default" not in schema


@pytest.mark.parametrize(
    "due_at",
    [0, 1700000000, "1700000000", "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"],
)
async def test_a_date_that_is_not_an_iso_date_in_range_is_a_422(
    client: httpx.AsyncClient, due_at: Any
) -> None:
    response = await client.post(BASE, json={"title": "t", "due_at": due_at}, headers=auth(ALICE))

    assert_rejected(response, 422, "validation_error")


async def test_every_task_route_documents_its_error_answers_with_the_error_body(
    app: FastAPI,
) -> None:
    paths = document(app)["paths"]
    for path, operations in paths.items():
        if not path.startswith("/api/{user_id}/tasks"):
            continue
        for method, operation in operations.items():
            expected = {"401", "403", "404", "422", "413"}
            if "requestBody" in operation:
                expected.add("400")
            for status in expected:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (
                    method,
                    path,
                    status,
                )


async def test_an_undecodable_body_is_a_documented_400(client: httpx.AsyncClient) -> None:
    # Not UTF-8 at all; text that is merely not JSON is a 422 naming where it broke.
    response = await client.post(BASE, content=b"\xff{", headers={**auth(ALICE), **JSON})

    assert_rejected(response, 400, "bad_request")


# --- 405 answers name every method of the path ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        (BASE, {"GET", "POST"}),
        (f"{BASE}/1", {"GET", "PUT", "PATCH", "DELETE"}),
        (f"{BASE}/1/complete", {"PATCH"}),
        ("/healthz", {"GET"}),
    ],
)
async def test_options_is_a_405_whose_allow_lists_every_documented_method(
    app: FastAPI, client: httpx.AsyncClient, path: str, methods: set[str]
) -> None:
    response = await client.options(path, headers=auth(ALICE))

    assert_rejected(response, 405, "method_not_allowed")
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert allowed == methods
    template = path.replace(ALICE, "{user_id}").replace("/1", "/{task_id}")
    assert {method.upper() for method in document(app)["paths"][template]} == methods


# --- logs ----------------------------------------------------------------------------------


async def test_a_path_with_control_characters_is_logged_escaped_and_capped(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backend.http")

    forged = await client.get("/api/x%00%0A2030-01-01 INFO forged/tasks", headers=auth(ALICE))
    long = await client.get("/" + "y" * 5000)

    assert (forged.status_code, long.status_code) == (422, 404)
    forged_line, long_line = [record.getMessage() for record in caplog.records]
    assert "\x00" not in forged_line
    assert "\n" not in forged_line
    assert "/api/x\\x00\\n2030-01-01 INFO forged/tasks" in forged_line
    assert len(long_line) < 300


# --- /docs works offline -------------------------------------------------------------------


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_every_asset_from_this_server(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    references = _References()
    references.feed(html)

    assert references.urls
    assert not re.search(r"https?://|//[a-z]", html, re.IGNORECASE), html
    for url in references.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=WEEKLY;UNTIL=20301231",
        "FREQ=MONTHLY;UNTIL=20300630T090000",
        "INTERVAL=2;FREQ=WEEKLY",
        "BYDAY=MO,WE;FREQ=WEEKLY;COUNT=10",
        "FREQ=HOURLY;INTERVAL=4",
    ],
)
def test_rrules_valid_under_rfc_5545_are_accepted_and_documented(rule: str) -> None:
    """Parts in any order, every real day in UNTIL, hourly repeats: the pattern is not narrower."""
    assert TaskCreate(title="t", recurrence=rule).recurrence == rule
    assert re.fullmatch(_documented_pattern("TaskCreate", "recurrence"), rule)


@pytest.mark.parametrize(
    "rule", ["FREQ=HOURLY;BYHOUR=3", "FREQ=MINUTELY", "FREQ=WEEKLY;UNTIL=20300231"]
)
def test_rrules_dateutil_refuses_or_that_are_not_tasks_are_refused(rule: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        TaskCreate(title="t", recurrence=rule)
    assert not re.fullmatch(_documented_pattern("TaskCreate", "recurrence"), rule)
