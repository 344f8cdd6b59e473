"""Run `todo-assistant` as a user would: a real process, a clean environment, no stray .env."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_SECONDS = 60
# Only what a process needs to run; a developer's own settings must not leak in.
KEPT = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT"}


@dataclass
class Finished:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def cli_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key in KEPT}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        DATA_DIR=str(data_dir),
        LOG_LEVEL="WARNING",
        AGENT_MODEL="local",
    )
    env.update(settings)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "backend.cli", *args]


def run_cli(env: dict[str, str], cwd: Path, *args: str, stdin: str = "") -> Finished:
    finished = subprocess.run(
        cli_command(*args),
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    return Finished(finished.returncode, finished.stdout, finished.stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers(url: str, headers: dict[str, str] | None = None) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code
    except httpx.HTTPError:
        return None


@contextmanager
def running(env: dict[str, str], cwd: Path, *args: str, ready_url: str) -> Iterator[Path]:
    """A long-running command, up once `ready_url` answers; SIGTERM and wait on the way out.

    Yields the file that holds its stdout and stderr.
    """
    output = cwd / f"{args[0]}-{free_port()}.log"
    with output.open("w") as log:
        process = subprocess.Popen(cli_command(*args), env=env, cwd=cwd, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
        while answers(ready_url) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`{' '.join(args)}` did not come up:\n{output.read_text()}")
            time.sleep(0.2)
        yield output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
