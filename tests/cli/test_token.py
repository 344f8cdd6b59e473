"""`todo-assistant token`: only tokens the servers will accept, and it says what they are for."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from tests.cli.support import cli_env, run_cli
from tests.conftest import TEST_SECRET

JWKS_URL = "https://auth.example/api/auth/jwks"


@pytest.mark.parametrize(
    "auth",
    [
        {"AUTH_JWKS_URL": JWKS_URL},
        # The API then verifies with the JWKS alone: a token signed with the secret is refused.
        {"AUTH_JWKS_URL": JWKS_URL, "AUTH_SECRET": TEST_SECRET},
    ],
    ids=["jwks", "jwks and a secret"],
)
def test_user_tokens_under_better_auth_are_refused_with_a_reason(
    auth: dict[str, str], tmp_path: Path
) -> None:
    finished = run_cli(cli_env(tmp_path, **auth), tmp_path, "token", "--user", "alice")

    assert finished.code == 2, finished
    assert finished.out == ""
    [line] = finished.err.strip().splitlines()
    assert "user tokens come from Better Auth" in line


def test_mcp_tokens_still_work_under_better_auth(tmp_path: Path) -> None:
    env = cli_env(tmp_path, AUTH_JWKS_URL=JWKS_URL)

    finished = run_cli(env, tmp_path, "token", "--mcp", "--user", "alice")

    assert finished.code == 0, finished
    claims = jwt.decode(finished.out.strip(), options={"verify_signature": False})
    assert claims["sub"] == "alice"


def test_a_user_token_lives_an_hour_and_an_mcp_token_five_minutes(tmp_path: Path) -> None:
    env = cli_env(tmp_path)

    user = run_cli(env, tmp_path, "token", "--user", "alice")
    mcp = run_cli(env, tmp_path, "token", "--mcp", "--user", "alice")

    lifetimes = [
        (lambda c: c["exp"] - c["iat"])(
            jwt.decode(t.out.strip(), options={"verify_signature": False})
        )
        for t in (user, mcp)
    ]
    assert lifetimes == [3600, 300]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--mcp", "--ttl", "601"], "at most 600 seconds"),
        (["--ttl", "0"], "0 is not a positive number"),
        (["--ttl", "soon"], "'soon' is not a whole number"),
    ],
)
def test_a_lifetime_the_token_cannot_have_is_refused(
    args: list[str], complaint: str, tmp_path: Path
) -> None:
    finished = run_cli(cli_env(tmp_path), tmp_path, "token", "--user", "alice", *args)

    assert finished.code == 2, finished
    assert finished.out == ""
    assert complaint in finished.err


def test_an_admin_token_carries_the_role_the_console_reads_and_others_do_not(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path)

    admin = run_cli(env, tmp_path, "token", "--user", "ops", "--admin")
    plain = run_cli(env, tmp_path, "token", "--user", "alice")

    claims = [
        jwt.decode(t.out.strip(), options={"verify_signature": False}) for t in (admin, plain)
    ]
    assert claims[0]["role"] == "admin"
    assert "role" not in claims[1]


def test_an_mcp_token_cannot_be_an_admin_token(tmp_path: Path) -> None:
    finished = run_cli(cli_env(tmp_path), tmp_path, "token", "--mcp", "--admin", "--user", "ops")

    assert finished.code != 0
    assert finished.out == ""
    assert "--admin is for user tokens" in finished.err
