"""The README's commands work as written for a newcomer (`.ci/front_door.py` runs them)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]


front_door = load_script(REPO_ROOT / ".ci" / "front_door.py")
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    return [command.text.strip() for command in front_door.readme_commands(README)]


def test_readme_commands_work_without_uv_on_path() -> None:
    commands = _commands()

    assert commands
    assert [c for c in commands if re.search(r"(^|[\s$(])uv\s", c)] == []


def test_readme_curl_commands_are_silent() -> None:
    curls = [c for c in _commands() if c.startswith("curl")]

    assert curls
    for curl in curls:
        short_flags = re.findall(r"\s-([a-zA-Z]+)", curl)
        assert any("s" in flags for flags in short_flags), curl


def test_readme_commands_hold_no_date_that_can_pass() -> None:
    assert [c for c in _commands() if re.search(r"\d{4}-\d{2}-\d{2}", c)] == []


def test_readme_due_date_is_tomorrow_at_five_pm_in_the_shell() -> None:
    line = next(c for c in _commands() if c.startswith("DUE="))
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")

    before = datetime.now(UTC)
    printed = subprocess.run(
        ["bash", "-c", f'{line}\nprintf %s "$DUE"'],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout

    # `date` and this process read the same (possibly shifted) system clock.
    due = datetime.fromisoformat(printed)
    assert (due.hour, due.minute, due.second) == (17, 0, 0)
    assert due.utcoffset() is not None
    assert before < due < before + timedelta(days=2)


def test_walkthrough_splits_blocks_into_commands_and_names_each_skip() -> None:
    readme = (
        "text\n```bash\nmake run   # start\nexport A=$(echo x)\ncurl -s http://x \\\n"
        "     -d '{}'\n# a comment\nnpx inspector --cli http://127.0.0.1:8001/mcp\n"
        "TODO_USER_ID=alice npx inspector x\n```\n"
        '```json\n{"not": "run"}\n```\n```bash\nAUTH_ISSUER=https://a\nAUTH_AUDIENCE=https://a\n```\n'
    )

    commands = front_door.readme_commands(readme)

    assert [(c.text.strip(), c.skip is not None) for c in commands] == [
        ("make run   # start", True),
        ("export A=$(echo x)", False),
        ("curl -s http://x       -d '{}'", False),
        ("npx inspector --cli http://127.0.0.1:8001/mcp", True),
        ("TODO_USER_ID=alice npx inspector x", True),
        ("AUTH_ISSUER=https://a", True),
        ("AUTH_AUDIENCE=https://a", True),
    ]
    assert front_door.with_ports("curl http://127.0.0.1:8000/a localhost:8001/mcp", 9, 10) == (
        "curl http://127.0.0.1:9/a localhost:10/mcp"
    )


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ('{"id": 1, "title": "Call mom"}', None),
        ("", None),
        ('{"detail": "no", "code": "not_found", "request_id": "r"}', "error answer not_found"),
        ("<!doctype html><title>Docs</title>", None),
        ("Internal Server Error", "a server error"),
        ('{"id": 1', "not JSON"),
        ("event: conversation\ndata: {}\n\nevent: done\ndata: {}\n\n", None),
        ("event: conversation\ndata: {}\n\nevent: error\ndata: {}\n\n", "events"),
        ("event: conversation\ndata: {}\n\n", "events"),
    ],
)
def test_walkthrough_reads_error_answers_as_failures(output: str, problem: str | None) -> None:
    found = front_door.answer_problem("curl -s http://127.0.0.1:8000/api/alice/tasks", output)

    assert found is None if problem is None else problem in found
