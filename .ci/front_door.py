"""The README as a newcomer meets it, on a fresh copy of the repository.

The copy holds what a clone would (tracked and new files, nothing ignored: no .venv, no
.tools, no data). On a Python that refuses `pip install` (PEP 668) and a PATH without uv:

1. `make run PORT=… MCP_PORT=…` on free ports, in the background, until /healthz answers;
2. every command of the README's bash blocks, in order, in one shell (ports rewritten),
   each checked: exit 0, no traceback, no error body in a JSON or event-stream answer;
3. SIGTERM to make; then `make run` again and Ctrl-C to its process group: each time make,
   the API and the MCP server must all exit;
4. the last bootstrap route on a Python without pip: uv straight from its PyPI wheel.

Commands that need what CI lacks are skipped with the reason printed (SKIPS). Standard
library only; run with any Python 3.11+: `python3 .ci/front_door.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 240  # a cold uv cache downloads every dependency
STOP_TIMEOUT_SECONDS = 30
FOLLOW_SECONDS = 4
SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
# Settings and tool state of the calling shell that a newcomer would not have.
DROPPED_ENV = re.compile(
    r"(VIRTUAL_ENV|CONDA_.*|PYTHON.*|UV|UV_(?!CACHE_DIR).*|MAKE.*|MFLAGS|PORT|MCP_PORT"
    r"|APP_ENV|DATA_DIR|DATABASE_URL|TEST_DATABASE_URL|LOG_LEVEL|CORS_ORIGINS|MAX_BODY_BYTES"
    r"|(AUTH|JWKS|MCP|OPENAI|AGENT|CHAT|TODO)_.*)"
)
SKIPS = {
    r"make (run|test)\b": "`make run` is what this walk-through runs; `make test` is .ci/run's",
    r"npx\b": "the MCP Inspector line needs Node; tests/mcp_server/test_inspector.py runs it",
    r"docker\b": "needs Docker",
    r"(make bench|\S*python -m bench)\b": "benchmarks run for minutes; tests/test_bench.py "
    "checks each one's options",
    r"\S*todo-assistant serve --workers\b": "needs PostgreSQL; tests/cli/test_workers.py runs it",
}
ENV_PREFIX = r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
# Commands that follow forever: run for a while, then stopped like Ctrl-C.
FOLLOWS = re.compile(r"\blogs tail\b")
CHAT_INPUT = "what's overdue?\n"


@dataclass
class Command:
    text: str
    skip: str | None = None


class Failure(Exception):
    pass


def readme_commands(readme: str) -> list[Command]:
    """The commands of the README's bash blocks, continuation lines joined."""
    commands: list[Command] = []
    for block in re.findall(r"^```bash\n(.*?)^```", readme, flags=re.M | re.S):
        lines = [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
        block_commands = [Command(line) for line in lines if not line.lstrip().startswith("#")]
        if all(re.fullmatch(r"[A-Z_]+=[^$`]*", c.text.strip()) for c in block_commands):
            for command in block_commands:
                command.skip = "settings to put in the environment, not a command"
        for command in block_commands:
            for pattern, reason in SKIPS.items():
                if re.match(ENV_PREFIX + pattern, command.text.strip()):
                    command.skip = reason
        commands += block_commands
    return commands


def with_ports(text: str, api_port: int, mcp_port: int) -> str:
    text = re.sub(r"(127\.0\.0\.1|localhost):8000\b", rf"\g<1>:{api_port}", text)
    return re.sub(r"(127\.0\.0\.1|localhost):8001\b", rf"\g<1>:{mcp_port}", text)


def answer_problem(command: str, stdout: str) -> str | None:
    """Why a command's output is a failure, or None."""
    if "todo-assistant chat" in command and "[error]" in stdout:
        return "the terminal chat printed an error"
    if not command.startswith("curl") or not stdout.strip():
        return None
    if re.search(r"^event: ", stdout, flags=re.M):
        events = re.findall(r"^event: (\S+)", stdout, flags=re.M)
        return None if events[-1:] == ["done"] and "error" not in events else f"events {events}"
    if not stdout.lstrip().startswith(("{", "[")):  # a page such as /docs
        return "a server error" if "Internal Server Error" in stdout else None
    try:
        body = json.loads(stdout)
    except ValueError:
        return "not JSON"
    if isinstance(body, dict) and {"code", "detail"} <= body.keys():
        return f"error answer {body['code']}: {body['detail']}"
    return None


def copy_tree(destination: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, set(listed.split("\0"))):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


PROBE = (
    "import sys, sysconfig; print(sys.version_info >= (3, 11)); print(sysconfig.get_path('stdlib'))"
)


def externally_managed_python() -> Path:
    """A system Python 3.11+ that refuses `pip install` (PEP 668), as on Debian 12."""
    for candidate in map(Path, ("/usr/bin/python3", "/usr/bin/python3.13", "/usr/bin/python3.12")):
        if not candidate.exists():
            continue
        probe = subprocess.run([candidate, "-c", PROBE], capture_output=True, text=True)
        new_enough, stdlib = [*probe.stdout.splitlines(), "", ""][:2]
        if new_enough == "True" and (Path(stdlib) / "EXTERNALLY-MANAGED").is_file():
            return candidate
    raise Failure("no externally managed system Python 3.11+ here (Debian 12 has one)")


def sandbox_env(bin_dir: Path) -> dict[str, str]:
    path = [str(bin_dir)] + [d for d in SYSTEM_PATH if not (Path(d) / "uv").exists()]
    env = {k: v for k, v in os.environ.items() if not DROPPED_ENV.fullmatch(k)}
    env["PATH"] = os.pathsep.join(path)
    if shutil.which("uv", path=env["PATH"]):
        raise Failure("uv is still on the sandbox PATH")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def descendants(pid: int) -> dict[int, str]:
    """The processes below pid, with their command lines (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: dict[int, str] = {}
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        try:
            found[child] = (
                (Path("/proc") / str(child) / "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            continue
        pending += children.get(child, [])
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(
    repo: Path, env: dict[str, str], ports: tuple[int, int], log: Path
) -> subprocess.Popen[bytes]:
    command = ["make", "run", f"PORT={ports[0]}", f"MCP_PORT={ports[1]}"]
    say(f"$ {' '.join(command)}   (log: {log})")
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not (
        answers(f"http://127.0.0.1:{ports[0]}/healthz")
        and answers(f"http://127.0.0.1:{ports[1]}/healthz")
    ):
        if server.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            raise Failure(f"`make run` did not come up:\n{log.read_text(errors='replace')}")
        time.sleep(0.5)
    return server


def run_readme(repo: Path, env: dict[str, str], ports: tuple[int, int], work: Path) -> None:
    commands = readme_commands((repo / "README.md").read_text(encoding="utf-8"))
    (work / "stdin").write_text(CHAT_INPUT)
    script = [f"cd {shlex.quote(str(repo))}"]
    for number, command in enumerate(commands):
        if command.skip:
            continue
        text = with_ports(command.text, *ports)
        if FOLLOWS.search(text):
            text = f"timeout -s INT {FOLLOW_SECONDS} {text}"
        # A group, not a subshell: `export TOKEN=…` must reach the commands after it.
        script.append(
            f"{{ {text}\n}} <{work}/stdin >{work}/{number}.out 2>{work}/{number}.err;"
            f" echo $? >{work}/{number}.rc"
        )
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "\n".join(script)], env=env, timeout=300, check=True
    )
    problems = 0
    for number, command in enumerate(commands):
        if command.skip:
            say(f"  skip  {command.text.strip()[:90]}\n        ({command.skip})")
            continue
        out, err = (work / f"{number}.out").read_text(), (work / f"{number}.err").read_text()
        rc = int((work / f"{number}.rc").read_text())
        expected = {0, 124} if FOLLOWS.search(command.text) else {0}
        problem = (
            f"exit {rc}"
            if rc not in expected
            else "traceback"
            if "Traceback (most recent call last)" in err
            else answer_problem(command.text.strip(), out)
        )
        say(f"  {'FAIL' if problem else 'ok  '}  {command.text.strip()[:90]}")
        if problem:
            problems += 1
            say(
                f"        {problem}\n        stdout: {out[-800:]!r}\n        stderr: {err[-800:]!r}"
            )
    if problems:
        raise Failure(f"{problems} README command(s) failed")


STOPS = {
    "ctrl-c": "Ctrl-C (SIGINT to the terminal's process group)",
    "sigterm": "SIGTERM to make alone (as a supervisor stops it)",
}


def stop(server: subprocess.Popen[bytes], ports: tuple[int, int], how: str) -> None:
    """Stop `make run`; make, the API and the MCP server must all exit."""
    processes = descendants(server.pid)
    api = [pid for pid, cmd in processes.items() if "todo-assistant serve" in cmd]
    mcp = [pid for pid, cmd in processes.items() if "-m mcp_server" in cmd]
    if how == "ctrl-c":
        os.killpg(server.pid, signal.SIGINT)
    else:
        server.terminate()
    try:
        server.wait(timeout=STOP_TIMEOUT_SECONDS)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.2)
    except subprocess.TimeoutExpired:
        pass
    finally:
        make_left = server.poll() is None
        left = {pid: cmd for pid, cmd in processes.items() if alive(pid)}
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if make_left:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    if make_left:
        raise Failure(f"make still running {STOP_TIMEOUT_SECONDS}s after {STOPS[how]}")
    if not api or not mcp:
        raise Failure(f"API or MCP server process not found under make: {processes}")
    if left:
        raise Failure(f"still running after {STOPS[how]}: {left}")
    if any(answers(f"http://127.0.0.1:{port}/healthz") for port in ports):
        raise Failure(f"a port still answers after {STOPS[how]}")
    say(f"  ok    {STOPS[how]} stopped make (exit {server.returncode}), the API and the MCP server")


def bootstrap_without_pip(tmp: Path, python: Path, env: dict[str, str]) -> None:
    """The last route: no uv, no pip (Debian without python3-pip): uv's wheel from PyPI."""
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(tmp / "nopip")], check=True)
    bare = tmp / "bare"
    shutil.copytree(ROOT / "scripts", bare / "scripts")
    result = subprocess.run(
        [str(bare / "scripts" / "uv"), "--version"],
        env={**env, "PYTHON": str(tmp / "nopip" / "bin" / "python")},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0 or not result.stdout.startswith("uv ") or "PyPI" not in result.stderr:
        raise Failure(f"bootstrap without pip: {result}")
    say(f"  ok    no pip: {result.stderr.strip().splitlines()[-1]}; {result.stdout.strip()}")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def walk_through(repo: Path, env: dict[str, str], tmp: Path, started: float) -> None:
    ports = (free_port(), free_port())
    server = start(repo, env, ports, tmp / "make-run.log")
    say(f"  ok    answers on :{ports[0]} and :{ports[1]} after {time.monotonic() - started:.0f}s")
    try:
        (tmp / "out").mkdir()
        run_readme(repo, env, ports, tmp / "out")
    except BaseException:
        with contextlib.suppress(Failure):
            stop(server, ports, "sigterm")
        raise
    stop(server, ports, "sigterm")
    # Again, now installed and migrated, stopped the way a person at the terminal does.
    ports = (free_port(), free_port())
    stop(start(repo, env, ports, tmp / "make-run-again.log"), ports, "ctrl-c")


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="front-door-") as name:
        tmp = Path(name)
        repo = copy_tree(tmp / "todo-assistant")
        python = externally_managed_python()
        (tmp / "bin").mkdir()
        (tmp / "bin" / "python3").symlink_to(python)
        env = sandbox_env(tmp / "bin")
        say(f"front door: {python} (externally managed), no uv on PATH, copy in {repo}")
        walk_through(repo, env, tmp, started)
        bootstrap_without_pip(tmp, python, env)
    say(f"front door: all good in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as failure:
        sys.exit(f"front door: FAILED: {failure}")
