"""What `serve` prints: a token that lives as long as `token` says, and commands that run here."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import jwt
import pytest

from backend.cli import _welcome
from backend.config import Settings
from tests.cli.support import CLI_TIMEOUT_SECONDS, cli_env


def _banner(tmp_path: Path) -> str:
    settings = Settings(
        _env_file=None,
        app_env="development",
        data_dir=tmp_path,
        auth_jwks_url=None,
        auth_secret=None,
    )
    return _welcome(settings, "127.0.0.1", 8000)


def test_the_banner_token_lives_one_hour_and_says_so(tmp_path: Path) -> None:
    banner = _banner(tmp_path)

    token = re.search(r"export TOKEN=(\S+)", banner)
    assert token is not None, banner
    claims = jwt.decode(token[1], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    assert "valid for 1 hour" in banner


def test_without_uv_the_banner_prints_commands_that_run_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    banner = _banner(tmp_path)

    assert "uv run" not in banner
    prefix = re.search(r"\(token: (.+?) token --mcp --user NAME\)", banner)
    assert prefix is not None, banner
    assert f"  {prefix[1]} chat --user alice" in banner
    finished = subprocess.run(
        [*shlex.split(prefix[1]), "token", "--user", "bob"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert jwt.decode(finished.stdout.strip(), options={"verify_signature": False})["sub"] == "bob"


def test_with_uv_on_the_path_the_banner_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))

    banner = _banner(tmp_path)

    assert "(token: uv run todo-assistant token --mcp --user NAME)" in banner
    assert "`uv run todo-assistant token --user NAME`" in banner


def test_the_banner_says_where_the_console_is_and_gives_an_operator_token(
    tmp_path: Path,
) -> None:
    banner = _banner(tmp_path)

    assert "open http://127.0.0.1:8000/console" in banner
    tokens = re.findall(r"^\s+(ey\S+)$", banner, re.MULTILINE)
    claims = [jwt.decode(token, options={"verify_signature": False}) for token in tokens]
    assert [(c["sub"], c.get("role")) for c in claims] == [("admin", "admin")]
    assert "token --user NAME --admin" in banner
