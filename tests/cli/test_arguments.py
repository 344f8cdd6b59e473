"""Every command explains itself, and a value it cannot use is a usage error, not a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from backend.cli import _parser
from tests.conftest import make_settings


def _every_parser() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    pending = [("todo-assistant", _parser())]
    while pending:
        name, parser = pending.pop()
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", child) for sub, child in action.choices.items()]
    return found


def test_every_command_has_a_description_that_says_more_than_its_name(
    subtests: pytest.Subtests,
) -> None:
    parsers = _every_parser()
    assert {
        "todo-assistant logs export",
        "todo-assistant logs tail",
        "todo-assistant mcp-stdio",
    } <= set(parsers)
    for name, parser in parsers.items():
        with subtests.test(name):
            description = parser.description or ""
            assert len(description.split()) >= 6, (name, description)
            for action in parser._actions:
                if not isinstance(action, argparse._SubParsersAction):
                    assert action.help, (name, action.dest)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["serve", "--port", "70000"], "70000 is not a port"),
        (["serve", "--mcp-port", "0"], "0 is not a port"),
        (["api", "--port", "http"], "'http' is not a port number"),
        (["mcp", "--port", "-1"], "-1 is not a port"),
        (["chat", "--timezone", "Mars/Olympus"], "not an IANA time zone"),
        (["chat", "--conversation", "0"], "0 is not a positive number"),
        (["token", "--user", " "], "a user id cannot be empty"),
        (
            ["token", "--user", "alice", "--mcp", "--mcp-url", "127.0.0.1:8001"],
            "not an http(s) URL",
        ),
        (["logs", "list", "--limit", "-3"], "-3 is not a positive number"),
        (["logs", "tail", "--interval", "0"], "not a positive number of seconds"),
        (["logs", "tail", "--interval", "nan"], "not a positive number of seconds"),
        (["logs", "show", "x"], "'x' is not a whole number"),
    ],
)
def test_a_value_the_command_cannot_use_is_a_usage_error(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(argv)

    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert complaint in error
    assert "Traceback" not in error


@pytest.mark.parametrize(("variable", "value"), [("PORT", "80800"), ("MCP_PORT", "eight")])
def test_a_port_from_the_environment_is_checked_like_a_flag(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(["serve"])

    assert stopped.value.code == 2
    assert value in capsys.readouterr().err


def test_ports_come_from_the_environment_when_no_flag_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "8010")
    monkeypatch.setenv("MCP_PORT", "8011")

    serve = _parser().parse_args(["serve"])
    flagged = _parser().parse_args(["serve", "--port", "9000"])
    mcp = _parser().parse_args(["mcp"])

    assert (serve.port, serve.mcp_port) == (8010, 8011)
    assert (flagged.port, flagged.mcp_port) == (9000, 8011)
    assert mcp.port == 8011


@pytest.mark.parametrize("zone", ["localtime", "posix/Europe/Paris", "Not/AZone"])
def test_the_terminal_chat_takes_the_zones_the_api_takes(zone: str) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["chat", "--timezone", zone])
    assert (
        _parser().parse_args(["chat", "--timezone", "Europe/Paris"]).timezone.key == "Europe/Paris"
    )


@pytest.mark.parametrize("user", ["a\x00b", "tab\tbed", "x" * 129])
def test_the_cli_takes_the_user_ids_the_api_takes(user: str) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["token", "--user", user])
    assert _parser().parse_args(["token", "--user", "пользователь-😀"]).user == "пользователь-😀"


def test_mcp_tokens_name_mcp_url_unless_a_resource_url_is_given(tmp_path: Path) -> None:
    """One rule for the API, `token --mcp` and the server: MCP_RESOURCE_URL defaults to MCP_URL."""
    only_url = make_settings(tmp_path, "sqlite+aiosqlite://", mcp_url="http://mcp:9001/mcp")
    both = make_settings(
        tmp_path,
        "sqlite+aiosqlite://",
        mcp_url="http://10.0.0.5:8001/mcp",
        mcp_resource_url="https://tools.example.com/mcp",
    )
    assert only_url.mcp_resource_url == "http://mcp:9001/mcp"
    assert both.mcp_resource_url == "https://tools.example.com/mcp"


def test_log_level_warn_is_warning(tmp_path: Path) -> None:
    assert make_settings(tmp_path, "sqlite+aiosqlite://", log_level="warn").log_level == "WARNING"
