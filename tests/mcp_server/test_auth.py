"""Who may call what: access tokens (401/403), protected-resource metadata, and the BOLA matrix."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
import pytest
from asgi_lifespan import LifespanManager

from backend.auth.mcp_tokens import (
    READ_SCOPE,
    WRITE_SCOPE,
    McpTokenConfig,
    mcp_token_config,
    mint_mcp_token,
)
from backend.config import Settings
from backend.db import Database
from mcp_server.server import create_http_app
from tests.conftest import TEST_SECRET, user_token
from tests.mcp_server.conftest import (
    ID_TOOLS,
    MCP_PATH,
    RPC_HEADERS,
    WRITE_TOOLS,
    Connector,
    Minter,
    asgi_client,
    id_tool_arguments,
    rpc_call,
    task_rows,
)

METADATA_URL = "http://127.0.0.1:8001/.well-known/oauth-protected-resource/mcp"
OTHER_SECRET = "another-secret-that-is-also-long-enough-0123456789"


def _claims(config: McpTokenConfig, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": "alice",
        "client_id": "tests",
        "scope": f"{READ_SCOPE} {WRITE_SCOPE}",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _signed(config: McpTokenConfig, secret: str | None = None, **overrides: Any) -> str:
    return jwt.encode(_claims(config, **overrides), secret or config.secret, algorithm="HS256")


BadToken = Callable[[McpTokenConfig], dict[str, str]]

BAD_CREDENTIALS: dict[str, BadToken] = {
    "no-token": lambda config: {},
    "malformed": lambda config: {"Authorization": "Bearer not.a.jwt"},
    "garbage": lambda config: {"Authorization": "Bearer %%%"},
    "empty-bearer": lambda config: {"Authorization": "Bearer "},
    "basic-scheme": lambda config: {"Authorization": f"Basic {_signed(config)}"},
    "wrong-aud": lambda config: {
        "Authorization": f"Bearer {_signed(config, aud='http://127.0.0.1:8000')}"
    },
    "no-aud": lambda config: {"Authorization": f"Bearer {_signed(config, aud=None)}"},
    "wrong-iss": lambda config: {
        "Authorization": f"Bearer {_signed(config, iss='https://evil.example')}"
    },
    "expired": lambda config: {
        "Authorization": f"Bearer {_signed(config, exp=int(time.time()) - 60)}"
    },
    "other-secret": lambda config: {
        "Authorization": f"Bearer {_signed(config, secret=OTHER_SECRET)}"
    },
    "alg-none": lambda config: {
        "Authorization": "Bearer " + jwt.encode(_claims(config), None, algorithm="none")  # type: ignore[arg-type]
    },
    "no-subject": lambda config: {"Authorization": f"Bearer {_signed(config, sub=None)}"},
    "exp-beyond-10-minutes": lambda config: {
        "Authorization": f"Bearer {_signed(config, exp=int(time.time()) + 11 * 60)}"
    },
    "no-iat": lambda config: {"Authorization": f"Bearer {_signed(config, iat=None)}"},
    "not-yet-valid": lambda config: {
        "Authorization": f"Bearer {_signed(config, nbf=int(time.time()) + 120)}"
    },
    "api-user-jwt": lambda config: {"Authorization": f"Bearer {user_token('alice')}"},
    "api-secret-with-mcp-claims": lambda config: {
        "Authorization": f"Bearer {_signed(config, secret=TEST_SECRET)}"
    },
}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "tests", "version": "1"},
    },
}


async def test_requests_without_a_valid_access_token_get_401_with_resource_metadata(
    rpc: httpx2.AsyncClient,
    token_config: McpTokenConfig,
    database: Database,
    subtests: pytest.Subtests,
) -> None:
    # A read tool, a write tool (which passes the write-scope gate first) and the handshake.
    bodies = (rpc_call("list_tasks", {}), rpc_call("add_task", {"title": "sneaky"}), INITIALIZE)
    for case, credentials in BAD_CREDENTIALS.items():
        for body in bodies:
            with subtests.test(case, method=body["method"]):
                response = await rpc.post(MCP_PATH, json=body, headers=credentials(token_config))

                assert response.status_code == 401, response.text
                challenge = response.headers["WWW-Authenticate"]
                assert challenge.startswith("Bearer ")
                assert 'error="invalid_token"' in challenge
                assert f'resource_metadata="{METADATA_URL}"' in challenge
                assert response.json()["error"] == "invalid_token"
    assert await task_rows(database) == []


async def test_a_token_in_the_query_string_is_never_accepted(
    rpc: httpx2.AsyncClient, mint: Minter, database: Database
) -> None:
    token = mint("alice")
    for parameter in ("access_token", "token"):
        response = await rpc.post(
            f"{MCP_PATH}?{parameter}={token}", json=rpc_call("add_task", {"title": "x"})
        )
        assert response.status_code == 401, parameter
        assert "resource_metadata=" in response.headers["WWW-Authenticate"]
    assert await task_rows(database) == []


async def test_a_valid_token_reaches_the_tools(
    rpc: httpx2.AsyncClient, mint: Minter, database: Database
) -> None:
    headers = {"Authorization": f"Bearer {mint('alice')}"}
    response = await rpc.post(MCP_PATH, json=rpc_call("add_task", {"title": "x"}), headers=headers)

    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["status"] == "created"
    assert [row["user_id"] for row in await task_rows(database)] == ["alice"]


async def test_a_token_at_the_ten_minute_limit_is_accepted(
    rpc: httpx2.AsyncClient, token_config: McpTokenConfig
) -> None:
    token = _signed(token_config, exp=int(time.time()) + 600)
    response = await rpc.post(
        MCP_PATH, json=rpc_call("list_tasks", {}), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text


async def test_a_read_only_token_gets_403_insufficient_scope_on_write_tools(
    rpc: httpx2.AsyncClient,
    connect: Connector,
    mint: Minter,
    database: Database,
    subtests: pytest.Subtests,
) -> None:
    async with connect("alice") as alice:
        task_id = (await alice.ok("add_task", title="Mine"))["task_id"]
    before = await task_rows(database)
    headers = {"Authorization": f"Bearer {mint('alice', scopes=(READ_SCOPE,))}"}

    for tool in WRITE_TOOLS:
        arguments = {"title": "x"} if tool == "add_task" else id_tool_arguments(tool, task_id)
        with subtests.test(tool):
            response = await rpc.post(MCP_PATH, json=rpc_call(tool, arguments), headers=headers)

            assert response.status_code == 403, response.text
            challenge = response.headers["WWW-Authenticate"]
            assert 'error="insufficient_scope"' in challenge
            assert f'scope="{WRITE_SCOPE}"' in challenge
            assert f'resource_metadata="{METADATA_URL}"' in challenge
            assert response.json()["error"] == "insufficient_scope"
            assert await task_rows(database) == before


async def test_a_read_only_token_can_still_list_and_get(
    connect: Connector, mint: Minter, rpc: httpx2.AsyncClient
) -> None:
    async with connect("alice") as alice:
        task_id = (await alice.ok("add_task", title="Mine"))["task_id"]
    async with connect("alice", scopes=(READ_SCOPE,)) as reader:
        listed = await reader.ok("list_tasks")
        assert [task["id"] for task in listed["tasks"]] == [task_id]
        assert (await reader.ok("get_task", task_id=task_id))["title"] == "Mine"

    headers = {"Authorization": f"Bearer {mint('alice', scopes=(READ_SCOPE,))}"}
    response = await rpc.post(MCP_PATH, json=rpc_call("list_tasks", {}), headers=headers)
    assert response.status_code == 200
    assert response.json()["result"]["structuredContent"]["total"] == 1


async def test_a_token_without_the_read_scope_is_refused_everywhere(
    rpc: httpx2.AsyncClient, mint: Minter, subtests: pytest.Subtests
) -> None:
    for scopes in [(), (WRITE_SCOPE,), ("tasks:admin",)]:
        headers = {"Authorization": f"Bearer {mint('alice', scopes=scopes)}"}
        for body in (rpc_call("list_tasks", {}), rpc_call("add_task", {"title": "x"})):
            with subtests.test(scopes=scopes, tool=body["params"]["name"]):
                response = await rpc.post(MCP_PATH, json=body, headers=headers)

                assert response.status_code == 403, response.text
                assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_the_protected_resource_metadata_names_the_resource_and_its_scopes(
    rpc: httpx2.AsyncClient, settings: Settings
) -> None:
    response = await rpc.get("/.well-known/oauth-protected-resource/mcp")

    assert response.status_code == 200, response.text
    metadata = response.json()
    assert metadata["resource"] == settings.mcp_resource_url
    assert [url.rstrip("/") for url in metadata["authorization_servers"]] == [
        settings.mcp_token_issuer.rstrip("/")
    ]
    assert metadata["bearer_methods_supported"] == ["header"]
    assert set(metadata["scopes_supported"]) == {READ_SCOPE, WRITE_SCOPE}


# --- BOLA: user B with user A's task ids --------------------------------------------------------


async def test_bola_matrix_another_users_ids_are_not_found_and_never_touched(
    connect: Connector, database: Database
) -> None:
    async with connect("alice") as alice:
        live = (await alice.ok("add_task", title="Alice secret", tags=["private"]))["task_id"]
        done = (await alice.ok("add_task", title="Alice done"))["task_id"]
        await alice.ok("complete_task", task_id=done)
        gone = (await alice.ok("add_task", title="Alice deleted"))["task_id"]
        await alice.ok("delete_task", task_id=gone)
    before = await task_rows(database)
    alice_ids = (live, done, gone)

    leaks: list[str] = []
    async with connect("bob") as bob:
        for tool in ID_TOOLS:
            for task_id in alice_ids:
                result = await bob.call(tool, **id_tool_arguments(tool, task_id))
                text = " ".join(getattr(block, "text", "") for block in result.content)
                expected = f"Error executing tool {tool}: Task {task_id} not found"
                if not result.is_error or text != expected or result.structured_content:
                    leaks.append(f"{tool}({task_id}) -> {result.is_error} {text!r}")
            # The same answer as for an id that never existed: no existence oracle.
            missing = await bob.fail(tool, **id_tool_arguments(tool, 999_999))
            assert missing == f"Error executing tool {tool}: Task 999999 not found"
        for query in ({}, {"search": "Alice"}, {"tags": ["private"]}, {"status": "completed"}):
            listed = await bob.ok("list_tasks", **query)
            if listed["total"] or listed["tasks"]:
                leaks.append(f"list_tasks({query}) -> {listed}")
        own = (await bob.ok("add_task", title="Bob's own"))["task_id"]

    assert leaks == []
    after = await task_rows(database)
    assert [row for row in after if row["id"] != own] == before
    assert next(row for row in after if row["id"] == own)["user_id"] == "bob"

    async with connect("alice") as alice:
        listed = await alice.ok("list_tasks")
        assert {task["id"] for task in listed["tasks"]} == {live, done}
        assert (await alice.fail("get_task", task_id=own)).endswith(f"Task {own} not found")


async def test_a_rotation_accepts_tokens_of_the_previous_secret_until_it_is_removed(
    settings: Settings, database: Database
) -> None:
    old, new = "the-secret-being-replaced-0123456789abcdef", OTHER_SECRET
    rotating = settings.model_copy(
        update={"mcp_token_secret": new, "mcp_token_previous_secret": old}
    )
    rotated = settings.model_copy(update={"mcp_token_secret": new})
    config = mcp_token_config(rotating)
    statuses: dict[tuple[str, str], int] = {}
    for name, server_settings in (("rotating", rotating), ("rotated", rotated)):
        app = create_http_app(server_settings)
        async with LifespanManager(app), asgi_client(app, headers=RPC_HEADERS) as rpc:
            for signer in ("old", "new", "unknown"):
                secret = {"old": old, "new": new, "unknown": "x" * 48}[signer]
                response = await rpc.post(
                    MCP_PATH,
                    json=rpc_call("list_tasks", {}),
                    headers={"Authorization": f"Bearer {_signed(config, secret)}"},
                )
                statuses[name, signer] = response.status_code

    assert statuses == {
        ("rotating", "old"): 200,
        ("rotating", "new"): 200,
        ("rotating", "unknown"): 401,
        ("rotated", "old"): 401,
        ("rotated", "new"): 200,
        ("rotated", "unknown"): 401,
    }
    # The previous secret is accepted, never used to sign.
    minted = mint_mcp_token(config, "alice")
    assert jwt.decode(minted, new, algorithms=["HS256"], options={"verify_aud": False})


@pytest.mark.parametrize(
    ("previous", "complaint"),
    [("short", "at least 32 bytes"), (TEST_SECRET, "must differ from AUTH_SECRET")],
)
def test_a_weak_previous_secret_is_refused(previous: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Settings(_env_file=None, auth_secret=TEST_SECRET, mcp_token_previous_secret=previous)
