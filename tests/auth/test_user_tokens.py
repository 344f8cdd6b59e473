"""User tokens in shared-secret (HS256) mode: every forgery is a 401 that writes nothing."""

from __future__ import annotations

import base64
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from tests.auth.support import (
    AUDIENCE,
    ISSUER,
    MCP_AUDIENCE,
    Forge,
    api,
    assert_error_body,
    assert_unauthorized,
    attempt_create,
    b64json,
    b64url,
    bearer,
    claims_for,
    escaped_rejection,
    hs256,
    mac_segments,
    new_user,
    task_count,
    unsigned,
    with_payload,
    with_signature_changed_in_the_middle,
)
from tests.conftest import TEST_SECRET, make_settings

ATTACKER_SECRET = "an-attacker-secret-that-is-also-long-enough-0123"
SECRET = TEST_SECRET.encode()


@pytest.fixture
async def client(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, database_url, auth_issuer=ISSUER, auth_audience=AUDIENCE)
    async with api(settings) as http:
        yield http


def valid(user_id: str, **overrides: Any) -> str:
    return jwt.encode(claims_for(user_id, **overrides), TEST_SECRET, algorithm="HS256")


def _segments(user_id: str) -> list[str]:
    return valid(user_id).split(".")


def _hs512_with_our_secret(user_id: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # 52 bytes is fine for HS256
        return jwt.encode(claims_for(user_id), TEST_SECRET, algorithm="HS512")


def _now() -> int:
    return int(time.time())


MCP_CLAIMS: dict[str, Any] = {"iss": "http://127.0.0.1:8000", "aud": MCP_AUDIENCE}

# Every variant of each case in shared/design/security.md, "Tokens".
CASES: dict[str, dict[str, Forge]] = {
    "2 malformed": {
        "one segment": lambda u: _segments(u)[0],
        "two segments": lambda u: ".".join(_segments(u)[:2]),
        "four segments": lambda u: ".".join([*_segments(u), _segments(u)[2]]),
        "bad base64url": lambda u: "!!!." + ".".join(_segments(u)[1:]),
        "non-JSON header": lambda u: mac_segments(b64url(b"not json"), _segments(u)[1], SECRET),
        "header is a JSON list": lambda u: mac_segments(
            b64json(["HS256"]), _segments(u)[1], SECRET
        ),
        "properly MACed non-JSON payload": lambda u: mac_segments(
            b64json({"alg": "HS256"}), b64url(b"sub=" + u.encode()), SECRET
        ),
        "properly MACed JSON list payload": lambda u: mac_segments(
            b64json({"alg": "HS256"}), b64json([u]), SECRET
        ),
        "64 KB token": lambda u: valid(u, padding="x" * 64 * 1024),
        "validly signed token just over 8 KB": lambda u: valid(u, padding="x" * 8 * 1024),
    },
    "3 alg none": {
        "alg none": lambda u: unsigned(claims_for(u), "none"),
        "alg None": lambda u: unsigned(claims_for(u), "None"),
        "alg NONE": lambda u: unsigned(claims_for(u), "NONE"),
        "alg none carrying a valid MAC": lambda u: (
            unsigned(claims_for(u), "none") + _segments(u)[2]
        ),
        "alg missing": lambda u: mac_segments(b64json({"typ": "JWT"}), _segments(u)[1], SECRET),
    },
    "5 someone else's key or algorithm": {
        "attacker's secret": lambda u: jwt.encode(
            claims_for(u), ATTACKER_SECRET, algorithm="HS256"
        ),
        "HS512 with the right secret": _hs512_with_our_secret,
        "empty secret": lambda u: hs256(claims_for(u), b""),
    },
    "6 signature tampered": {
        "signature changed in the middle": lambda u: with_signature_changed_in_the_middle(valid(u)),
        "signature stripped": lambda u: ".".join(_segments(u)[:2]) + ".",
    },
    "8 time": {
        "expired beyond leeway": lambda u: valid(u, exp=_now() - 120),
        "not valid before the future (nbf)": lambda u: valid(u, nbf=_now() + 600),
        "issued in the future (iat)": lambda u: valid(u, iat=_now() + 600),
        "exp not a number": lambda u: valid(u, exp="tomorrow"),
    },
    "9 missing or bad claims": {
        "missing exp": lambda u: valid(u, exp=None),
        "missing sub": lambda u: valid(u, sub=None),
        "missing iss": lambda u: valid(u, iss=None),
        "missing aud": lambda u: valid(u, aud=None),
        "empty sub": lambda u: valid(u, sub=""),
        "numeric sub": lambda u: valid(u, sub=12345),
        "sub over 128 characters": lambda u: valid(u, sub="x" * 129),
    },
    "10 wrong issuer or audience": {
        "wrong iss": lambda u: valid(u, iss="https://evil.example"),
        "look-alike iss prefix": lambda u: valid(u, iss="http://localhost:3000.evil.com"),
        "iss with an extra path": lambda u: valid(u, iss="http://localhost:3000/evil"),
        "wrong aud": lambda u: valid(u, aud="https://evil.example"),
        "aud list without ours": lambda u: valid(u, aud=["https://evil.example"]),
    },
    "11 MCP access token": {
        "signed with another secret": lambda u: jwt.encode(
            claims_for(u, scope="tasks:read tasks:write", **MCP_CLAIMS),
            ATTACKER_SECRET,
            algorithm="HS256",
        ),
        "signed with the API's own secret": lambda u: valid(
            u, scope="tasks:read tasks:write", **MCP_CLAIMS
        ),
    },
}


@pytest.mark.parametrize("forgeries", CASES.values(), ids=CASES.keys())
async def test_invalid_token_is_rejected_and_writes_nothing(
    client: httpx.AsyncClient, forgeries: dict[str, Forge]
) -> None:
    assert await escaped_rejection(client, forgeries, valid) == []


# 1. Missing, wrongly-schemed or misplaced credentials: (headers, query params).
MISPLACED: dict[str, Callable[[str], tuple[dict[str, str], dict[str, str]]]] = {
    "no header": lambda t: ({}, {}),
    "empty Bearer": lambda t: ({"Authorization": "Bearer "}, {}),
    "Bearer without a token": lambda t: ({"Authorization": "Bearer"}, {}),
    "Basic credentials": lambda t: (
        {"Authorization": "Basic " + base64.b64encode(b"alice:password").decode()},
        {},
    ),
    "token under the Basic scheme": lambda t: ({"Authorization": f"Basic {t}"}, {}),
    "token under the Token scheme": lambda t: ({"Authorization": f"Token {t}"}, {}),
    "token without a scheme": lambda t: ({"Authorization": t}, {}),
    "token only in the access_token query parameter": lambda t: ({}, {"access_token": t}),
    "token only in the token query parameter": lambda t: ({}, {"token": t}),
    "token only in a cookie": lambda t: ({"Cookie": f"token={t}; access_token={t}"}, {}),
}


async def test_valid_token_outside_the_bearer_header_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    escaped: list[str] = []
    for name, place in MISPLACED.items():
        user = new_user()
        token = valid(user)
        headers, params = place(token)
        response = await client.post(
            f"/api/{user}/tasks",
            json={"title": "written by an attacker"},
            headers=headers,
            params=params,
        )
        try:
            assert_unauthorized(response, token)
            assert await task_count(client, user, token) == 0, "a task was written"
        except AssertionError as exc:
            escaped.append(f"{name}: {response.status_code} {exc}")

    assert escaped == []


async def test_valid_token_for_the_path_user_is_accepted(client: httpx.AsyncClient) -> None:
    user = new_user()

    response = await attempt_create(client, user, bearer(valid(user)))

    assert response.status_code == 201, response.text
    assert await task_count(client, user, valid(user)) == 1


async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    user = new_user()

    response = await client.get(
        f"/api/{user}/tasks", headers={"Authorization": f"bearer {valid(user)}"}
    )

    assert response.status_code == 200, response.text


async def test_payload_swapped_to_another_user_under_the_old_signature_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    attacker, victim = new_user(), new_user()
    token = with_payload(valid(attacker), claims_for(victim))

    response = await attempt_create(client, victim, bearer(token))

    assert_unauthorized(response, token)
    assert await task_count(client, victim, valid(victim)) == 0


async def test_token_expired_within_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    user = new_user()
    token = valid(user, iat=_now() - 600, exp=_now() - 5)  # default leeway is 30 s

    response = await client.get(f"/api/{user}/tasks", headers=bearer(token))

    assert response.status_code == 200, response.text


async def test_token_expired_beyond_leeway_is_rejected(client: httpx.AsyncClient) -> None:
    user = new_user()
    token = valid(user, iat=_now() - 600, exp=_now() - 45)

    assert_unauthorized(await client.get(f"/api/{user}/tasks", headers=bearer(token)), token)


async def test_token_for_another_user_gets_403_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    alice, bob = new_user(), new_user()

    response = await attempt_create(client, bob, bearer(valid(alice)))

    assert_error_body(response, 403, "user_mismatch")
    assert await task_count(client, bob, valid(bob)) == 0
    assert await task_count(client, alice, valid(alice)) == 0


async def test_token_signed_with_attackers_key_is_rejected(client: httpx.AsyncClient) -> None:
    user = new_user()
    token = jwt.encode(claims_for(user), ATTACKER_SECRET, algorithm="HS256")

    assert_unauthorized(await client.get(f"/api/{user}/tasks", headers=bearer(token)), token)


async def test_without_configured_issuer_and_audience_only_exp_and_sub_are_required(
    tmp_path: Path, database_url: str
) -> None:
    user = new_user()
    async with api(make_settings(tmp_path, database_url)) as client:
        bare = valid(user, iss=None, aud=None)
        assert (await client.get(f"/api/{user}/tasks", headers=bearer(bare))).status_code == 200
        no_exp = valid(user, iss=None, aud=None, exp=None)
        assert_unauthorized(await client.get(f"/api/{user}/tasks", headers=bearer(no_exp)))
