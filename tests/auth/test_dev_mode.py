"""Dev mode (a local secret, zero setup) and the settings that refuse unsafe auth."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from backend.auth.tokens import DEV_SECRET_FILE, mint_user_token, shared_secret_config
from backend.cli import main as cli_main
from backend.config import MIN_SECRET_BYTES, Settings, get_settings
from tests.auth.support import api, assert_unauthorized, bearer, claims_for, new_user
from tests.conftest import make_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def dev_settings(data_dir: Path, database_url: str) -> Settings:
    return make_settings(data_dir, database_url, app_env="development", auth_secret=None)


def strict_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


async def test_dev_mode_creates_a_private_secret_and_accepts_minted_tokens(
    tmp_path: Path, database_url: str
) -> None:
    settings = dev_settings(tmp_path, database_url)
    secret_file = tmp_path / DEV_SECRET_FILE
    assert settings.dev_auth
    assert not secret_file.exists()

    async with api(settings) as client:
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        config = shared_secret_config(settings)
        assert config is not None
        token = mint_user_token(config, "alice")
        response = await client.get("/api/alice/tasks", headers=bearer(token))

    assert response.status_code == 200, response.text
    assert len(secret_file.read_bytes()) >= MIN_SECRET_BYTES


async def test_dev_secret_survives_a_restart(tmp_path: Path, database_url: str) -> None:
    settings = dev_settings(tmp_path, database_url)
    config = shared_secret_config(settings)
    assert config is not None
    token = mint_user_token(config, "alice")

    for _ in range(2):
        async with api(settings) as client:
            response = await client.get("/api/alice/tasks", headers=bearer(token))
            assert response.status_code == 200, response.text


async def test_dev_secret_token_without_dev_issuer_and_audience_is_rejected(
    tmp_path: Path, database_url: str
) -> None:
    settings = dev_settings(tmp_path, database_url)
    config = shared_secret_config(settings)
    assert config is not None
    user = new_user()
    token = jwt.encode(claims_for(user, iss=None, aud=None), config.secret, algorithm="HS256")

    async with api(settings) as client:
        assert_unauthorized(await client.get(f"/api/{user}/tasks", headers=bearer(token)), token)


@pytest.mark.parametrize("content", ["", "\n", "short-secret"])
def test_truncated_dev_secret_file_is_refused_not_used(tmp_path: Path, content: str) -> None:
    (tmp_path / DEV_SECRET_FILE).write_text(content)

    with pytest.raises(ValueError, match="delete it"):
        shared_secret_config(strict_settings(data_dir=tmp_path))


def test_production_without_jwks_or_secret_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match="AUTH_JWKS_URL or AUTH_SECRET"):
        strict_settings(app_env="production")


def test_production_jwks_without_issuer_and_audience_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match="AUTH_ISSUER and AUTH_AUDIENCE"):
        strict_settings(
            app_env="production",
            auth_jwks_url="https://auth.example/api/auth/jwks",
            mcp_token_secret="m" * MIN_SECRET_BYTES,
        )


@pytest.mark.parametrize("app_env", ["development", "test", "production"])
def test_auth_secret_shorter_than_32_bytes_is_refused(app_env: str) -> None:
    with pytest.raises(ValidationError, match="AUTH_SECRET must be at least 32 bytes"):
        strict_settings(app_env=app_env, auth_secret="s" * (MIN_SECRET_BYTES - 1))


@pytest.mark.parametrize("algorithms", ["none", "EdDSA,none", "EdDSA, NONE", "None"])
def test_auth_algorithms_containing_none_are_refused(
    monkeypatch: pytest.MonkeyPatch, algorithms: str
) -> None:
    monkeypatch.setenv("AUTH_ALGORITHMS", algorithms)

    with pytest.raises(ValidationError, match="must not contain 'none'"):
        strict_settings()


def test_env_example_copied_verbatim_starts_in_dev_mode(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)

    settings = Settings(_env_file=env_file)

    assert settings.dev_auth
    assert settings.auth_secret is None
    assert settings.auth_issuer is None
    assert settings.auth_audience is None


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI reads the process environment (and a cached Settings): point it at tmp_path."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


async def test_cli_token_command_prints_a_token_the_app_accepts(
    cli_env: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_main(["token", "--user", "alice"])
    token = capsys.readouterr().out.strip()

    async with api(dev_settings(cli_env, database_url)) as client:
        response = await client.get("/api/alice/tasks", headers=bearer(token))
        other = await client.get("/api/bob/tasks", headers=bearer(token))

    assert response.status_code == 200, response.text
    assert other.status_code == 403
    assert stat.S_IMODE((cli_env / DEV_SECRET_FILE).stat().st_mode) == 0o600
